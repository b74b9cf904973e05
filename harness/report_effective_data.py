"""The transfer report's effective data transferred (Hernandez et al. 2021): every gain also in examples of B.

D_T(A -> B) = the size at which training on B alone matches the score after A then B, minus the D_F = target_n
examples of B both saw (harness/transfer_matrix.effective_data; the rule in harness/data_equivalent.py). Shown
where B was trained alone at several sizes (`harness transfer --target-sizes`); nothing otherwise.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from harness.claims import points
from harness.data_equivalent import DataEquivalent, difference
from harness.markdown import params_text, table
from harness.metrics import Estimate
from harness.transfer_matrix import ModelTransfer

if TYPE_CHECKING:
    from harness.report_transfer import TransferContext

TOP_ASYMMETRIES = 10


def section(ctx: TransferContext) -> list[str]:
    """The explanation, then per model its B-alone curves, D_T matrices and asymmetries, then the change across
    sizes."""
    shown = [r for r in ctx.results if r.rise]
    if not shown:
        return []
    lines = [
        "## Effective data transferred",
        "",
        "Each gain also in examples of B (Hernandez et al. 2021): D_T(A -> B) = the number of examples of B that "
        "training on B alone needs to match the score after training on A then on "
        f"D_F = {shown[0].target_n} examples of B, minus those D_F. B alone was trained at each size below with the "
        "same steps and learning rate (its own seeded sample of B's train split per size and seed; the same steps at "
        "every size, so a larger sample is seen fewer times: the curve measures more distinct examples at fixed "
        "compute, not training to convergence at each size); the matching "
        "size is interpolated linearly in log size between the two sizes around the first crossing of B's curve. "
        "D_T > 0: A is worth that many extra examples of B; 0: nothing; < 0: A costs examples. `below X` / `above "
        "X`: B alone already matches at its smallest size / falls short at its largest, so D_T is only bounded. "
        "95% intervals: the same rule on each bootstrap resample of B's eval examples (after A and B alone on the "
        "same resample). A curve of B alone that is not monotone can give a D_T whose sign differs from the gain's. "
        "D_T is read only where B alone learns: its score at the largest size beats its score at the smallest "
        "(paired over B's eval examples, 95% interval above 0); elsewhere (`flat`: the interval holds 0, "
        "or the curve falls) any size would match and the column has no D_T.",
        "",
    ]
    for r in shown:
        lines += _model(r)
    return lines + _across_sizes(shown)


def _points(e: Estimate | None) -> str:
    return "–" if e is None or math.isnan(e.value) else f"{e.value * 100:+.1f}"


def _signed(d: DataEquivalent) -> str:
    """A difference of two D_T in examples, signed, with its interval where it has one."""
    if math.isnan(d.value):
        return "–"
    lo, hi = d.ci
    interval = "" if math.isnan(lo) else f" [{lo:+.0f}, {hi:+.0f}]"
    star = "*" if not math.isnan(lo) and (lo > 0 or hi < 0) else ""
    return f"{d.value:+.0f}{interval}{star}"


def _model(r: ModelTransfer) -> list[str]:
    lines = [f"### {r.model}", "", "B alone at each size (train n: score), and whether it learns over them:", ""]
    lines += table(
        ["task", "B alone", "largest - smallest (points)", "learns"],
        [
            [
                b,
                ", ".join(f"{n}: {e.value * 100:.1f}" for n, e in r.curve[b].items()),
                points(r.rise[b]) if b in r.rise else "–",
                _learns(r, b),
            ]
            for b in r.tasks
            if b in r.curve
        ],
    )
    flat = {b for b in r.rise if not r.learns(b)}
    cells = {pair: f"{d.text()} ({_points(r.gain.get(pair))})" for pair, d in r.transferred.items()}
    cells |= {(a, b): "flat" for (a, b) in r.gain if b in flat}
    lines += ["", "D_T in examples of B (gain in points beside it); rows: source A, columns: target B.", ""]
    lines += table(["A \\ B", *r.tasks], [[a, *(cells.get((a, b), "–") for b in r.tasks)] for a in r.tasks])
    lines += ["", "With 95% intervals:", ""]
    lines += table(
        ["A \\ B", *r.tasks],
        [
            [
                a,
                *(
                    cells[(a, b)] if b in flat and (a, b) in cells else _interval(r.transferred.get((a, b)))
                    for b in r.tasks
                ),
            ]
            for a in r.tasks
        ],
    )
    asym = asymmetries(r)
    if asym:
        lines += [
            "",
            "Largest asymmetries in examples: D_T(A -> B) - D_T(B -> A), where both are inside the sizes run; "
            "`*`: the interval excludes 0. The gains' asymmetry, in points, beside it.",
            "",
        ]
        rows = [
            [
                f"{a} -> {b}",
                r.transferred[(a, b)].text(),
                r.transferred[(b, a)].text(),
                _signed(d),
                _points(_gain_asymmetry(r, a, b)),
            ]
            for a, b, d in asym[:TOP_ASYMMETRIES]
        ]
        lines += table(["pair", "D_T A -> B", "D_T B -> A", "asymmetry (examples)", "gain asymmetry (points)"], rows)
    return lines + [""]


def _learns(r: ModelTransfer, b: str) -> str:
    """yes; no: flat (the rise's interval holds 0); no: falls (it is below 0)."""
    if b not in r.rise:
        return "–"
    if r.learns(b):
        return "yes"
    return "no: falls" if r.rise[b].ci[1] < 0 else "no: flat"


def _interval(d: DataEquivalent | None) -> str:
    return d.interval_text() if d is not None else "–"


def _gain_asymmetry(r: ModelTransfer, a: str, b: str) -> Estimate | None:
    g, back = r.gain.get((a, b)), r.gain.get((b, a))
    return None if g is None or back is None else Estimate(g.value - back.value, g.samples - back.samples, g.n)


def asymmetries(r: ModelTransfer) -> list[tuple[str, str, DataEquivalent]]:
    """(A, B, D_T(A -> B) - D_T(B -> A)) for every pair with both D_T inside the sizes run, largest |difference|
    first; A -> B is the direction worth more examples."""
    out = []
    for i, a in enumerate(r.tasks):
        for b in r.tasks[i + 1 :]:
            there, back = r.transferred.get((a, b)), r.transferred.get((b, a))
            if there is None or back is None:
                continue
            d = difference(there, back)
            if math.isnan(d.value):
                continue
            out.append((a, b, d) if d.value >= 0 else (b, a, difference(back, there)))
    return sorted(out, key=lambda t: (-abs(t[2].value), t[0], t[1]))


def _across_sizes(shown: list[ModelTransfer]) -> list[str]:
    """From the smallest model to the largest: D_T per pair, its change, and the median off-diagonal D_T."""
    if len(shown) < 2:
        return []
    small, large = sorted(shown, key=lambda r: r.params)[0], sorted(shown, key=lambda r: r.params)[-1]
    pairs = [p for p in small.transferred if p in large.transferred]
    if not pairs:
        return []
    rows, rose, fell = [], [], []
    for a, b in sorted(pairs, key=lambda p: (small.tasks.index(p[0]), small.tasks.index(p[1]))):
        change = difference(large.transferred[(a, b)], small.transferred[(a, b)])
        lo, hi = change.ci
        if not math.isnan(lo) and lo > 0:
            rose.append(f"{a} -> {b}")
        if not math.isnan(hi) and hi < 0:
            fell.append(f"{a} -> {b}")
        rows.append(
            [
                f"{a} -> {b}",
                small.transferred[(a, b)].interval_text(),
                large.transferred[(a, b)].interval_text(),
                _signed(change),
            ]
        )
    medians = ", ".join(f"{r.model} {_median_off_diagonal(r)}" for r in (small, large))
    return [
        f"### From {small.model} ({params_text(small.params)}) to {large.model} ({params_text(large.params)})",
        "",
        f"Median D_T over the off-diagonal pairs (censored values count at their bound's side): {medians}. D_T "
        f"rises significantly on {len(rose)} of {len(pairs)} pairs{_listed(rose)} and falls on {len(fell)}"
        f"{_listed(fell)} (the change's interval, paired over B's eval examples, excludes 0; a change needs both "
        "D_T inside the sizes run).",
        "",
        *table(["pair", f"D_T {small.model}", f"D_T {large.model}", "change (examples)"], rows),
        "",
    ]


def _median_off_diagonal(r: ModelTransfer) -> str:
    values = [d for (a, b), d in r.transferred.items() if a != b and not math.isnan(d.value)]
    if not values:
        return "–"
    median = float(np.median([d.value for d in values]))  # infinities sort to their ends: a median may be censored
    return values[0].text(median) if not math.isfinite(median) else f"{median:.0f}"


def _listed(pairs: list[str]) -> str:
    return f" ({', '.join(pairs)})" if pairs else ""
