"""The transfer report: OUT/report.md (and report.html), OUT/transfer.csv and plots/, from a `harness transfer` store alone."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import plots
from harness import report_effective_data as effective_data
from harness.claims import Claim, effect
from harness.data_equivalent import DataEquivalent
from harness.markdown import fmt, p_text, params_text, table
from harness.metrics import Estimate, difference, mean_estimate, p_value
from harness.report_answer import about
from harness.report_html import write_report
from harness.report_scaling import caveats
from harness.report_screen import HEADING, tally
from harness.store import Store
from harness.transfer_matrix import ModelTransfer, asymmetries, cluster, gain_array, load

TOP_ASYMMETRIES = 10
# Only exact zeros count as ties in this report's p-values, as when its committed reports were rendered; the eval
# report's TIE_TOLERANCE would move two of their p-values (0.394 -> 0.41, 0.96 -> 0.974).
EXACT_TIES = 0.0


@dataclass
class TransferContext:
    """What every section of a transfer report reads, from its store (closed by then) and output folder."""

    out: Path
    results: list[ModelTransfer]
    settings: dict  # the transfer run's settings (meta "transfer")
    commands: list[str]
    models: list[tuple[str, int, dict]]

    @property
    def complete(self) -> list[ModelTransfer]:
        """The models with every source -> target pair of their tasks measured: those a matrix can show."""
        return [r for r in self.results if r.tasks and len(r.gain) == len(r.tasks) ** 2]


def _title(ctx: TransferContext) -> list[str]:
    return ["# harness transfer report", "", *about(ctx.out)]


def format_sources(r: ModelTransfer) -> list[str]:
    """Sources that score 0 on their own task after source training: they have no skill to pass on, so a gain
    from one is a format effect (the shape of the answer, learned from A's examples), not transfer."""
    return [t for t in r.tasks if t in r.source and r.source[t].value == 0]


def pair_claims(r: ModelTransfer) -> dict[str, Claim]:
    """A -> B -> helped / format effect / hurt / no / cannot be told yet, from the gain's interval. Where the
    shuffled-answer source ran (--shuffled-sources), a gain is transfer only where gain(A) - gain(shuffled A)
    is above 0 too; else it is a format effect."""
    zero = format_sources(r)
    out = {}
    for a, b in r.off_diagonal():
        found = effect(r.gain[(a, b)], "gain", "not run")
        beyond = r.beyond_format.get((a, b))
        if found.answer == "yes" and beyond is not None and not beyond.ci[0] > 0:
            found = Claim("format effect", "beyond format holds 0", found.detail, found.value)
        elif found.answer == "yes":
            found = Claim("format effect" if a in zero else "helped", found.reason, found.detail, found.value)
        elif found.reason == "interval below 0":
            found = Claim("hurt", found.reason, found.detail, found.value)
        out[f"{a} -> {b}"] = found
    return out


def data_transferred(r: ModelTransfer) -> str:
    """One screen cell: the off-diagonal pairs by what their effective data transferred says (interval above 0:
    worth examples of B; below 0: costs examples; else cannot be told), and those with no D_T as B alone does not
    learn over its sizes."""
    groups: dict[str, list[str]] = {"worth examples": [], "costs examples": [], "cannot be told yet": []}
    flat = []
    for a, b in r.off_diagonal():
        d = r.transferred.get((a, b))
        if d is None:
            flat += [f"{a} -> {b}"] if b in r.rise else []
            continue
        lo, hi = d.ci
        answer = "worth examples" if lo > 0 else "costs examples" if hi < 0 else "cannot be told yet"
        groups[answer].append(f"{a} -> {b} {d.interval_text()}")
    parts = [
        f"{answer} on {len(pairs)}" + (f" ({', '.join(pairs)})" if len(pairs) <= 3 else "")
        for answer, pairs in groups.items()
        if pairs
    ]
    if flat:
        targets = sorted({pair.split(" -> ")[1] for pair in flat}, key=r.tasks.index)
        parts.append(f"none on {len(flat)} (B alone does not learn: {', '.join(targets)})")
    return "; ".join(parts) or "–"


def _screen(ctx: TransferContext) -> list[str]:
    """The first screen: per model, which sources learned their own task and which pairs transfer, and where B
    alone ran at several sizes, what the gains are worth in examples of B."""
    rows = []
    curves = any(r.rise for r in ctx.results)
    for r in ctx.results:
        if not r.off_diagonal():
            continue
        ns = sorted({e.n for e in r.only.values()})
        diagonal = {t: effect(r.gain.get((t, t)), "diagonal gain", "not run") for t in r.tasks}
        rows.append(
            [
                r.model,
                f"{len(r.tasks)} (n = {'/'.join(map(str, ns)) or '–'})",
                ", ".join(format_sources(r)) or "none",
                tally(diagonal),
                tally(pair_claims(r)),
                *([data_transferred(r)] if curves else []),
            ]
        )
    if not rows:
        return []
    header = ["model", "tasks (eval n)", "sources scoring 0 on their own task", "diagonal gain", "transfer A -> B"]
    return [
        HEADING,
        "",
        *table(header + (["effective data transferred (examples of B)"] if curves else []), rows),
        "",
        "Counts of tasks (diagonal) and of ordered pairs (transfer); gains in points, answered only where the 95% "
        "interval over B's eval examples supports it (`no`: below 0 or within +-2 points). `format effect`: a gain "
        "from a source that scores 0 on its own task after source training, which has no skill to pass on: the "
        "shape of the answer, not transfer. With one training seed the intervals leave out training randomness.",
        "",
        *(
            [
                "Effective data transferred: D_T(A -> B) in examples of B with its 95% interval (section below); "
                "read only for targets whose B-alone curve rises significantly from its smallest size to its "
                "largest.",
                "",
            ]
            if curves
            else []
        ),
        *(
            [
                "Where a shuffled-answer source ran (`--shuffled-sources`), a pair counts as `helped` only where "
                "transfer beyond format, gain(A) - gain(shuffled A), has its interval above 0 as well; a gain that "
                "the shuffled source matches is a `format effect`.",
                "",
            ]
            if any(r.beyond_format for r in ctx.results)
            else []
        ),
    ]


def _produced_by(ctx: TransferContext) -> list[str]:
    if not ctx.commands:
        return []
    first = "Produced by:" if len(ctx.commands) == 1 else "Produced by these commands, in order, into one store:"
    return [first, "", "```", *map(str, ctx.commands), "```", ""]


def _settings(ctx: TransferContext) -> list[str]:
    return _settings_text(ctx.settings, ctx.results)


def _matrices(ctx: TransferContext) -> list[str]:
    """The gain matrices as heat maps, then the tasks clustered by them."""
    if not ctx.complete:
        return []
    return _heatmaps(ctx.complete, ctx.out, Path(plots.PLOTS) / "transfer_matrix.png") + _dendrograms(
        ctx.complete, ctx.out, Path(plots.PLOTS) / "transfer_clusters.png"
    )


def _summary_section(ctx: TransferContext) -> list[str]:
    return _summary(ctx.results)


def _caveats(ctx: TransferContext) -> list[str]:
    notes = caveats(ctx.models) if len(ctx.models) > 1 else []
    return ["Caveats of the comparison across models:", "", *(f"- {n}" for n in notes), ""] if notes else []


def _models(ctx: TransferContext) -> list[str]:
    return [line for r in ctx.results for line in _model_section(r)]


# A transfer report's report.md: these sections in this order, each a function (TransferContext) -> lines.
SECTIONS: list[Callable[[TransferContext], list[str]]] = [
    _title,
    _screen,
    _produced_by,
    _settings,
    _matrices,
    _summary_section,
    _caveats,
    _models,
    effective_data.section,
]


def render(out_dir: str | Path) -> Path:
    """Regenerate transfer.csv, report.md (SECTIONS in order), report.html and plots/ from <out_dir>/results.db (no model is
    loaded)."""
    out = Path(out_dir)
    store = Store(out, create=False)
    try:
        results = load(store)
        ctx = TransferContext(
            out, results, store.get_meta("transfer") or {}, store.get_meta("commands") or [], store.models()
        )
    finally:
        store.close()
    (out / plots.PLOTS).mkdir(exist_ok=True)
    _frame(results).to_csv(out / "transfer.csv", index=False, float_format="%.6g")
    lines = [line for section in SECTIONS for line in section(ctx)]
    return write_report(out, lines)


def _settings_text(s: dict, results: list[ModelTransfer]) -> list[str]:
    if not s:
        return []
    preset = s.get("preset", {})
    method = f"{s['method']} ({s['variant']})" if s.get("method") == "ptune" else s.get("method")
    seeds = sorted({n for r in results for n in r.seeds.values()})
    return [
        f"Method: **{method}**, learning rate {preset.get('learning_rate')}, batch {preset.get('batch_size')}. "
        f"Source phase: {s['source_n']} examples of task A ({preset.get('holdout', 0) * 100:.0f}% held out for "
        f"early stopping and the kept state), at most {s['source_steps']} steps, checked every "
        f"{s['source_eval_every']}. Target phase: {s['target_n']} examples of task B (disjoint from the source "
        f"sample), {s['target_steps']} steps at learning rate {s.get('target_lr')}, last state kept, a fresh "
        f"optimiser. Training seeds per cell: "
        f"{', '.join(map(str, seeds)) or '–'}. Eval: {s['limit'] or 'all'} val examples per task (seeded, "
        f"label-stratified; seed {s['limit_seed']}); data: {s['data']}; train set: {s['train_set']}.",
        "",
        *(
            ["With one training seed the intervals cover eval examples only, not the randomness of training.", ""]
            if seeds == [1]
            else []
        ),
        "**Gain** of A on B = score on B after training on A then briefly on B, minus the score after the same brief "
        "training on B alone (same examples, same seed), in points; scores are accuracy (exact match of greedy "
        "decoding for generated answers), averaged over seeds per example; 95% bootstrap intervals over B's eval "
        "examples (1000 resamples). `*` marks an interval that excludes 0. The diagonal (A -> A) is the task's own "
        "gain from the larger source sample: the specific skill that transfer is compared with.",
        "",
    ]


def _summary(results: list[ModelTransfer]) -> list[str]:
    rows, means = [], {}
    for r in results:
        off = r.off_diagonal()
        if not off:
            continue
        mean_off = mean_estimate([r.gain[p] for p in off], same_examples=False)
        diag = [r.gain[(t, t)] for t in r.tasks if (t, t) in r.gain]
        skill = mean_estimate(diag, same_examples=False) if diag else None
        positive = sum(_clear_of_zero(r.gain[p]) and r.gain[p].value > 0 for p in off)
        negative = sum(_clear_of_zero(r.gain[p]) and r.gain[p].value < 0 for p in off)
        trained = (
            mean_estimate([r.source[t] for t in r.tasks if t in r.source], same_examples=False) if r.source else None
        )
        means[r.model] = (r.params, mean_off, skill, trained)
        rows.append(
            [
                r.model,
                params_text(r.params),
                fmt(mean_estimate([r.only[t] for t in r.tasks if t in r.only], same_examples=False)),
                fmt(trained),
                _cell(skill),
                _cell(mean_off),
                f"{positive} / {negative} of {len(off)}",
            ]
        )
    if not rows:
        return []
    lines = ["## Summary", ""]
    lines += table(
        [
            "model",
            "params",
            "B alone (mean)",
            "A after source training (mean)",
            "diagonal gain (specific skill)",
            "mean off-diagonal gain",
            "pairs helped / hurt (interval clear of 0)",
        ],
        rows,
    )
    lines.append("")
    if len(means) >= 2:
        ordered = sorted(means.items(), key=lambda kv: kv[1][0])  # by parameters: smallest vs largest
        (small, (p0, off0, skill0, trained0)), (large, (p1, off1, skill1, trained1)) = ordered[0], ordered[-1]
        d_off = difference(off1, off0)
        text = (
            f"From {small} ({params_text(p0)}) to {large} ({params_text(p1)}): mean off-diagonal transfer changes by "
            f"{_points(d_off)} ({p_text(p_value(d_off, EXACT_TIES))})"
        )
        if skill0 is not None and skill1 is not None:
            d_skill = difference(skill1, skill0)
            text += f"; the diagonal (specific skill from more data) by {_points(d_skill)} ({p_text(p_value(d_skill, EXACT_TIES))})"
        if trained0 is not None and trained1 is not None:
            d_trained = difference(trained1, trained0)
            text += f"; the trained skill itself (A after source training) by {_points(d_trained)}"
        lines += [text + ". Both models are scored on the same examples with the same resamples (paired).", ""]
    return lines


def _points(e: Estimate) -> str:
    lo, hi = e.ci
    return f"{e.value * 100:+.1f} points [{lo * 100:+.1f}, {hi * 100:+.1f}]"


def _model_section(r: ModelTransfer) -> list[str]:
    lines = [f"## {r.model}", "", f"{params_text(r.params)} parameters.", ""]
    rows = [
        [t, fmt(r.only.get(t)), fmt(r.source.get(t)), _kept(r.kept_steps.get(t)), _cell(r.gain.get((t, t)))]
        for t in r.tasks
    ]
    lines += ["### Skills", ""]
    header = ["task", "B alone (brief training)", "after source training", "source: kept step / run", "diagonal gain"]
    lines += table(header, rows)
    untrained = r.untrained_sources()
    if untrained:
        lines += [
            "",
            f"Source training did not lower the held-out loss below the untrained state's for {', '.join(untrained)} "
            "(kept step 0 in every seed): the row of such a source repeats training on B alone by construction, "
            "so its gains are 0 and say nothing about transfer.",
        ]
    zero = format_sources(r)
    if zero:
        lines += [
            "",
            f"{', '.join(zero)} scored 0 on its own task after source training (`A (0)` in the matrices): a gain from "
            "such a source is a format effect (the shape of the answer), not transfer of a skill it does not have.",
        ]
    lines += ["", "### Transfer matrix", "", "Rows: source task A; columns: target task B; gain in points.", ""]

    def source(a: str) -> str:
        return f"{a} (0)" if a in zero else a

    lines += table(
        ["A \\ B", *r.tasks], [[source(a), *(_cell(r.gain.get((a, b)), ci=False) for b in r.tasks)] for a in r.tasks]
    )
    lines += ["", "With 95% intervals:", ""]
    lines += table(["A \\ B", *r.tasks], [[source(a), *(_cell(r.gain.get((a, b))) for b in r.tasks)] for a in r.tasks])
    lines += _format_control(r)
    asym = asymmetries(r)
    if asym:
        lines += ["", "### Largest asymmetries", ""]
        lines.append("gain(A -> B) - gain(B -> A), in points; A -> B is the direction that gains more.")
        lines.append("")
        rows = [
            [f"{a} -> {b}", _cell(r.gain[(a, b)]), _cell(r.gain[(b, a)]), _cell(d), p_text(p_value(d, EXACT_TIES))]
            for a, b, d in asym[:TOP_ASYMMETRIES]
        ]
        lines += table(["pair", "gain A -> B", "gain B -> A", "asymmetry", "p"], rows)
    if len(r.gain) == len(r.tasks) ** 2 and len(r.tasks) >= 2:
        _, order = cluster(r.tasks, gain_array(r))
        lines += ["", f"Tasks in clustering order (average linkage on the symmetric part): {', '.join(order)}."]
    lines.append("")
    return lines


def _format_control(r: ModelTransfer) -> list[str]:
    """Per (A, B): the gain from A beside the gain from A with its answers shuffled, and their difference."""
    if not r.beyond_format:
        return []
    order = {t: i for i, t in enumerate(r.tasks)}
    pairs = sorted(r.beyond_format, key=lambda p: (order[p[0]], order[p[1]]))
    rows = [
        [f"{a} -> {b}", _cell(r.gain[(a, b)]), _cell(r.shuffled_gain[(a, b)]), _cell(r.beyond_format[(a, b)])]
        for a, b in pairs
    ]
    scores = ", ".join(f"{t} {fmt(r.shuffled_source[t])}" for t in r.tasks if t in r.shuffled_source)
    return [
        "",
        "### Transfer beyond format",
        "",
        "The format-only control: each source A also trained on its same sample with the answers shuffled across "
        "the examples (a seeded permutation: the same inputs, answer format and answer mix, no input-answer "
        "mapping), then the same brief training on B. Gains in points against B alone; transfer beyond format = "
        "gain(A) - gain(shuffled A), paired over B's eval examples (95% bootstrap intervals).",
        "",
        *table(["pair", "gain from A", "gain from shuffled A", "transfer beyond format"], rows),
        *(["", f"Shuffled sources on their own task (true answers): {scores}."] if scores else []),
    ]


def _kept(steps: list[tuple[int, int]] | None) -> str:
    return ", ".join(f"{kept} / {run}" for kept, run in steps) if steps else "–"


def _clear_of_zero(e: Estimate) -> bool:
    lo, hi = e.ci
    return lo > 0 or hi < 0


def _cell(e: Estimate | None, ci: bool = True) -> str:
    if e is None or math.isnan(e.value):
        return "–"
    lo, hi = e.ci
    star = "*" if _clear_of_zero(e) else ""
    if not ci:
        return f"{e.value * 100:+.1f}{star}"
    return f"{e.value * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}]{star}"


def _frame(results: list[ModelTransfer]) -> pd.DataFrame:
    def row(r: ModelTransfer, source: str, target: str, quantity: str, e: Estimate | DataEquivalent) -> dict:
        lo, hi = e.ci
        n = e.n if isinstance(e, Estimate) else r.curve[target][r.target_n].n  # type: ignore[index]
        return {"model": r.model, "params": r.params, "source": source, "target": target, "quantity": quantity,
                "value": e.value, "ci_low": lo, "ci_high": hi, "n": n}  # fmt: skip

    rows = []
    for r in results:
        rows += [row(r, a, b, "gain", g) for (a, b), g in r.gain.items()]
        rows += [row(r, "", t, "only", e) for t, e in r.only.items()]
        rows += [row(r, t, t, "after_source", e) for t, e in r.source.items()]
        # B alone at its other sizes, and the effective data transferred (in examples; a censored end is +-inf)
        rows += [row(r, "", t, f"only_n{n}", e) for t, c in r.curve.items() for n, e in c.items() if n != r.target_n]
        rows += [row(r, a, b, "effective_data", d) for (a, b), d in r.transferred.items()]
        # --shuffled-sources: the format-only control and transfer beyond it
        rows += [row(r, t, t, "after_source_shuffled", e) for t, e in r.shuffled_source.items()]
        rows += [row(r, a, b, "gain_shuffled", g) for (a, b), g in r.shuffled_gain.items()]
        rows += [row(r, a, b, "beyond_format", g) for (a, b), g in r.beyond_format.items()]
    columns = ["model", "params", "source", "target", "quantity", "value", "ci_low", "ci_high", "n"]
    return pd.DataFrame(rows, columns=columns)


def _heatmaps(results: list[ModelTransfer], out: Path, plot: Path) -> list[str]:
    bound = max(np.nanmax(np.abs(gain_array(r))) for r in results) * 100 or 1.0
    fig, axes = plots.subplots(1, len(results), figsize=(5.2 * len(results), 4.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        g = gain_array(r) * 100
        image = ax.imshow(g, cmap="RdBu", vmin=-bound, vmax=bound)
        ax.set_xticks(range(len(r.tasks)), r.tasks, rotation=60, ha="right", fontsize=8)
        zero = format_sources(r)  # marked as in the tables: a gain from them is a format effect
        ax.set_yticks(range(len(r.tasks)), [f"{t} (0)" if t in zero else t for t in r.tasks], fontsize=8)
        for i, a in enumerate(r.tasks):
            for j, b in enumerate(r.tasks):
                star = "*" if _clear_of_zero(r.gain[(a, b)]) else ""
                color = "white" if abs(g[i, j]) > 0.6 * bound else "black"  # readable on the darkest cells
                ax.text(j, i, f"{g[i, j]:.0f}{star}", ha="center", va="center", fontsize=7, color=color)
        ax.set_title(f"{r.model} ({params_text(r.params)})", fontsize=10)
        ax.set_xlabel("target B")
    axes[0][0].set_ylabel("source A")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="gain (points)")
    plots.save(fig, out / plot, crop=True)
    return [f"![transfer matrices]({plot.as_posix()})", ""]


def _dendrograms(results: list[ModelTransfer], out: Path, plot: Path) -> list[str]:
    from scipy.cluster.hierarchy import dendrogram

    fig, axes = plots.subplots(1, len(results), figsize=(5.2 * len(results), 3.6), squeeze=False)
    for ax, r in zip(axes[0], results):
        link, _ = cluster(r.tasks, gain_array(r) * 100)
        with warnings.catch_warnings():  # a matrix of equal gains has all distances 0: scipy warns of a flat axis
            warnings.simplefilter("ignore", UserWarning)
            dendrogram(link, labels=r.tasks, ax=ax, leaf_rotation=60, color_threshold=0)
        ax.set_title(f"{r.model}: tasks that help each other merge first", fontsize=9)
        ax.set_ylabel("max mutual gain - mutual gain (points)")
    plots.save(fig, out / plot)
    return [f"![task clustering]({plot.as_posix()})", ""]
