"""The weak-to-strong report: OUT/report.md (and report.html) and OUT/w2s.csv, from a `harness w2s` store alone (no
model)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.claims import points
from harness.markdown import fmt, params_text, table
from harness.metrics import Estimate, difference
from harness.report_answer import about
from harness.report_html import write_report
from harness.report_screen import HEADING
from harness.store import Store
from harness.w2s_analysis import KIND, W2S, GapRecovered, TaskW2S, load, verdict


@dataclass
class W2SContext:
    """What every section of a w2s report reads, from its store (closed by then) and output folder."""

    out: Path
    results: list[TaskW2S]
    settings: dict  # meta[KIND]
    commands: list[str]
    params: dict[str, int]  # model -> parameters


def _title(ctx: W2SContext) -> list[str]:
    return ["# harness weak-to-strong report", "", *about(ctx.out)]


def _screen(ctx: W2SContext) -> list[str]:
    """The first screen: per supervision (plain, with the confidence loss), on which tasks PGR is defined (the
    ceiling clears the best constant and the weak model) and where weak-to-strong beats the weak model."""
    variants = list(dict.fromkeys(v for r in ctx.results for v in r.gaps))
    rows = []
    for v in variants:
        found = [(r, r.gaps[v]) for r in ctx.results if v in r.gaps]
        defined = [(r.task, gap) for r, gap in found if gap.pgr is not None]
        undefined = [r.task for r, gap in found if gap.pgr is None]
        above, not_told, below = [], [], []
        for task, gap in defined:
            d = difference(gap.w2s, gap.weak)
            lo, hi = d.ci
            (above if lo > 0 else below if hi < 0 else not_told).append(f"{task} {points(d)}")
        ns = "/".join(str(n) for n in sorted({gap.n for _, gap in found}))
        rows.append(
            [
                _label(found[0][0], v),
                f"{len(found)} (n = {ns})",
                _counted([("yes", [t for t, _ in defined]), ("no", undefined)]),
                _counted([("yes", above), ("no", below), ("cannot be told yet", not_told)]) if defined else "–",
                ", ".join(f"{t} {_pgr(gap)}" for t, gap in defined) or "–",
            ]
        )
    if not rows:
        return []
    header = [
        "supervision",
        "tasks (val n)",
        "PGR defined: the ceiling beats the best constant and the weak model",
        "weak-to-strong above the weak model (points)",
        "PGR, % [95%]",
    ]
    return [
        HEADING,
        "",
        *table(header, rows),
        "",
        "Counts of tasks. PGR is defined only where the strong model's gold-trained ceiling is significantly above "
        "both the best constant answer and the weak model (paired bootstrap, p < 0.05); elsewhere there is no gap "
        "to recover and the task says nothing about weak-to-strong. `yes` for weak-to-strong where its difference "
        "from the weak model has its 95% interval (bootstrap over val examples, paired) above 0. Each task's "
        "reason and the confidence loss's convergence: the verdicts below.",
        "",
    ]


def _counted(groups: list[tuple[str, list[str]]]) -> str:
    return "; ".join(f"{answer} on {len(items)} ({', '.join(items)})" for answer, items in groups if items) or "–"


def _produced_by(ctx: W2SContext) -> list[str]:
    if not ctx.commands:
        return []
    first = "Produced by:" if len(ctx.commands) == 1 else "Produced by these commands, in order, into one store:"
    return [first, "", "```", *ctx.commands, "```", ""]


def _model(ctx: W2SContext, role: str) -> str:
    name = ctx.settings.get(role, "?")
    return f"{name} ({params_text(ctx.params[name])})" if name in ctx.params else name


def _settings(ctx: W2SContext) -> list[str]:
    s = ctx.settings
    if not s:
        return []
    preset = s.get("preset", {})
    return [
        f"Weak model: **{_model(ctx, 'weak')}**; strong model: **{_model(ctx, 'strong')}**. Both train the "
        f"{s['method']} (logistic regression on one layer's hidden states of template '{preset.get('template')}', "
        f"{preset.get('pooling')} token(s), C={preset.get('C')}, the layer chosen by {preset.get('cv_folds')}-fold "
        f"cross-validation on the probe's own train labels). Per task and seed, the train split (--train-set {s['train_set']}) "
        f"gives two disjoint, label-stratified samples: the weak model trains on {s['weak_n']} gold-labelled "
        f"examples (A) and labels {s['strong_n']} others (B) it never saw; the strong model trains on B once with "
        f"those weak labels (**w2s**) and once with B's gold labels (**ceiling**). Eval: "
        f"{s['limit'] or 'all'} val examples (seeded, label-stratified; seed {s['limit_seed']}); data: {s['data']}.",
        "",
        "Scores: accuracy in percent, averaged over seeds per example, with 95% bootstrap intervals over val "
        "examples. **PGR** (performance gap recovered, Burns et al. 2023) = (w2s - weak) / (ceiling - weak), in "
        "percent, with a paired bootstrap interval (the same resamples for every side); it is undefined unless the "
        "ceiling is significantly above both the best constant answer and the weak model (paired bootstrap, "
        "p < 0.05). `w2s-conf<alpha>` rows add the auxiliary confidence loss of weight alpha. Weak labels: their "
        "accuracy on B (mean over seeds).",
        "",
    ]


def _pgr(gap: GapRecovered) -> str:
    if gap.pgr is None:
        return "undefined"
    e = gap.pgr.estimate
    lo, hi = e.ci
    return f"{e.value * 100:.0f} [{lo * 100:.0f}, {hi * 100:.0f}]" if gap.pgr.interval else f"{e.value * 100:.0f}"


def _label(result: TaskW2S, variant: str) -> str:
    alpha = result.alphas.get(variant)
    return "w2s" if variant == W2S else f"w2s, confidence loss alpha={alpha}" if alpha is not None else variant


def _table(ctx: W2SContext) -> list[str]:
    rows = [
        [
            r.task,
            _label(r, variant),
            str(gap.n),
            str(len(r.gap_seeds[variant])),
            fmt(gap.constant, ci=False),
            fmt(gap.weak),
            fmt(gap.w2s),
            fmt(gap.ceiling),
            _pgr(gap),
            _weak_labels(r),
        ]
        for r in ctx.results
        for variant, gap in r.gaps.items()
    ]
    if not rows:
        return ["No task has its weak, weak-to-strong and ceiling units stored for a common seed yet.", ""]
    header = [
        "task",
        "supervision",
        "n",
        "seeds",
        "best constant",
        "weak",
        "w2s",
        "ceiling",
        "PGR [95%]",
        "weak labels",
    ]
    return ["## Performance gap recovered", "", *table(header, rows), ""]


def _weak_labels(r: TaskW2S) -> str:
    if not r.weak_label_acc:
        return "–"
    return f"{sum(r.weak_label_acc) / len(r.weak_label_acc) * 100:.1f} (n={r.n_labelled})"


def _verdicts(ctx: W2SContext) -> list[str]:
    lines = [
        f"- {r.task}, {_label(r, v)}: {verdict(gap)}{_unsettled(r.unsettled.get(v))}"
        for r in ctx.results
        for v, gap in r.gaps.items()
    ]
    return ["## Verdicts", "", *lines, ""] if lines else []


def _unsettled(seeds: list[int] | None) -> str:
    if not seeds:
        return ""
    return f" (the confidence loss's hardened labels did not settle, cycling or out of rounds, in seed(s) {', '.join(map(str, sorted(seeds)))})"


# A w2s report's report.md: these sections in this order, each a function (W2SContext) -> lines.
SECTIONS: list[Callable[[W2SContext], list[str]]] = [_title, _screen, _produced_by, _settings, _table, _verdicts]


def render(out_dir: str | Path) -> Path:
    """Regenerate w2s.csv, report.md (SECTIONS in order) and report.html from <out_dir>/results.db."""
    out = Path(out_dir)
    store = Store(out, create=False)
    try:
        ctx = W2SContext(
            out,
            load(store),
            store.get_meta(KIND) or {},
            store.get_meta("commands") or [],
            {m: p for m, p, _ in store.models()},
        )
    finally:
        store.close()
    frame(ctx.results).to_csv(out / "w2s.csv", index=False, float_format="%.6g")
    return write_report(out, [line for section in SECTIONS for line in section(ctx)])


def frame(results: list[TaskW2S]) -> pd.DataFrame:
    """One row per (task, supervision, quantity): weak, w2s, ceiling, constant, pgr (absent where undefined)."""

    def row(task: str, variant: str, quantity: str, e: Estimate) -> dict:
        lo, hi = e.ci
        return {"task": task, "supervision": variant, "quantity": quantity, "value": e.value, "ci_low": lo,
                "ci_high": hi, "n": e.n}  # fmt: skip

    rows = []
    for r in results:
        for variant, gap in r.gaps.items():
            for quantity in ("constant", "weak", "w2s", "ceiling"):
                rows.append(row(r.task, variant, quantity, getattr(gap, quantity)))
            if gap.pgr is not None:
                rows.append(row(r.task, variant, "pgr", gap.pgr.estimate))
    return pd.DataFrame(rows, columns=["task", "supervision", "quantity", "value", "ci_low", "ci_high", "n"])
