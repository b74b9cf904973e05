"""Markdown pieces shared by the report's sections."""

from __future__ import annotations

import math

from harness.metrics import Estimate


def fmt(e: Estimate | None, scale: float = 100.0, ci: bool = True) -> str:
    """A value in percent (by default) with its 95% interval; '–' when there is none."""
    if e is None or math.isnan(e.value):
        return "–"
    lo, hi = e.ci
    if not ci or math.isnan(lo):
        return f"{e.value * scale:.1f}"
    return f"{e.value * scale:.1f} [{lo * scale:.1f}, {hi * scale:.1f}]"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def p_text(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def params_text(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
