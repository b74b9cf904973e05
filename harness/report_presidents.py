"""The report's section for the presidents probe: hit rates by model beside a frequency baseline, then P(correct) and
rank by position, in a table and a figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from harness import plots
from harness.analysis import TaskResult
from harness.claims import points
from harness.markdown import fmt, params_text, table
from harness.metrics import difference, frequency_ranks
from harness.store import Record, Store

TASK = "presidents"
UNIT = ("prompt", "gold", "list", 0, 0)
MODEL_KIND = ("prompt", "gold", 0, "list", 0)  # estimate keys: (*kind, metric)
BASELINE_KIND = ("baseline", "frequency", 0, "-", "-")
BASELINE = (
    "`frequency baseline`: a control that reads only the list. At each line it ranks the first tokens of the lines "
    "before it by how often they occurred (ties: the most recent first) and gives each the share of those lines "
    "it starts; a token not seen yet is a miss at every rank. It wins wherever a president's first name repeats "
    "(James, John, George, William), so a model beats it only by knowing who came next."
)


def _read(models: list[tuple[str, int, dict]], results: list[TaskResult]) -> list[TaskResult]:
    """The models that read the list, smallest first."""
    size = {m: p for m, p, _ in models}
    return sorted((r for r in results if r.task == TASK and r.estimates), key=lambda r: (size.get(r.model, 0), r.model))


def _beyond(model, baseline) -> str:
    """Does the model's top-10 rate clear the frequency baseline's? Their paired difference (both scored on the same
    bootstrap resamples of the same lines) must have its 95% interval on one side of 0."""
    d = difference(model, baseline)
    if d is None:
        return "–"
    lo, hi = d.ci
    if lo > 0:
        return f"yes ({points(d)})"
    if hi < 0:
        return f"no, the baseline does better ({points(d)})"
    return f"cannot be told yet ({points(d)}: the interval holds 0)"


def screen(heading: str, models: list[tuple[str, int, dict]], results: list[TaskResult]) -> list[str]:
    """The first screen of a report whose only task is the list: per model, whether it knows the list beyond a
    frequency guess; [] when no model read it."""
    read = _read(models, results)
    if not read:
        return []
    rows = []
    for r in read:
        top10, base10 = (r.estimates.get((*kind, "top10")) for kind in (MODEL_KIND, BASELINE_KIND))
        rows.append([r.model, str(top10.n if top10 else "–"), fmt(top10), fmt(base10), _beyond(top10, base10)])
    header = ["model", "lines (n)", "top-10", "frequency baseline top-10", "knows the list beyond a frequency guess"]
    return [
        heading,
        "",
        *table(header, rows),
        "",
        "The presidents list read once: the share of lines whose correct first token the model ranks in its top 10, "
        "against the frequency baseline on the same tokens (95% Wilson intervals); the last column gives the "
        "model's top-10 rate minus the baseline's in points with its 95% interval (bootstrap over lines, paired: "
        "both on the same resamples), `yes` only where that interval is above 0. Details and the figure: the presidents section below.",
        "",
    ]


def section(
    store: Store, models: list[tuple[str, int, dict]], results: list[TaskResult], out: Path, plot: Path
) -> list[str]:
    """Markdown for every model that read the list, smallest first; [] when none did."""
    size = {m: p for m, p, _ in models}
    read = _read(models, results)
    if not read:
        return []
    lines = [
        "## Presidents: knowledge read off the next-token distribution",
        "",
        "The ordered list of US presidents (`Name, start - end` per line) is fed once; at each line start the "
        "probability and full-vocabulary rank of the first token of the correct name are read. Line n sees the n - 1 "
        "lines before it; line 1 sees none, so it is one reading of a name with no list to continue, not a "
        "zero-shot score of the task. Hit rates with 95% intervals over lines (n = lines read).",
        "",
        BASELINE + " It is computed on each model's own first tokens.",
        "",
    ]
    rows = []
    for r in read:
        model, baseline = (
            [r.estimates.get((*kind, m)) for m in ("top1", "top10", "p_correct")]
            for kind in (MODEL_KIND, BASELINE_KIND)
        )
        rank = r.estimates.get(("prompt", "gold", 0, "list", 0, "median_gold_rank"))
        n = model[0].n if model[0] else "–"
        rows.append([r.model, str(n), *map(fmt, model), fmt(rank, scale=1.0, ci=False), *map(fmt, baseline[:2])])
    lines += table(
        [
            "model",
            "n",
            "top-1",
            "top-10",
            "mean P(correct)",
            "median rank",
            "frequency baseline top-1",
            "frequency baseline top-10",
        ],
        rows,
    )
    per_model = {r.model: store.records(r.model, TASK).get(UNIT, []) for r in read}
    first_model, first = next(iter(per_model.items()))
    baseline = frequency_ranks(first_tokens(first))
    lines += [
        "",
        "### By position",
        "",
        f"P(correct) in percent, then the rank of the correct first token; the frequency baseline on {first_model}'s "
        "tokens (`–`: not seen yet).",
        "",
    ]
    position_rows = []
    for i, rec in enumerate(first):
        token = first_tokens([rec])[0].replace("|", "\\|")
        cells = [f"{i + 1} (no list before it)" if i == 0 else str(i + 1), f"`{token}`"]
        for records in per_model.values():
            rec = records[i] if i < len(records) else None
            cells.append(f"{math.exp(rec.logprobs[0]) * 100:.1f} ({rec.gold_rank})" if rec else "–")
        p, rank = baseline[i]
        cells.append(f"{p * 100:.1f} ({rank})" if rank else "–")
        position_rows.append(cells)
    lines += table(["line", f"first token ({first_model})", *per_model, "frequency baseline"], position_rows)
    plot_by_position(per_model, size, out / plot)
    lines += [
        "",
        f"Each president, in order (x), for {len(per_model)} model(s) smallest first, over n = {len(first)} lines: "
        "the probability of the correct first token (top) and its full-vocabulary rank (bottom, log scale; dotted: "
        "rank 10); black: the frequency baseline (a gap: its token not seen yet).",
        "",
        f"![presidents by position]({plot.as_posix()})",
        "",
    ]
    return lines


def first_tokens(records: list[Record]) -> list[str]:
    """Each line's correct first token, as the model split it."""
    return [(r.choice_texts or [""])[0] for r in records]


def names(records: list[Record]) -> list[str]:
    """Each line's president: the name where the store kept it, else its first token (stores from before names
    were kept)."""
    return [r.gold_texts[0] if r.gold_texts else f"{token}…" for r, token in zip(records, first_tokens(records))]


def plot_by_position(per_model: dict[str, list[Record]], size: dict[str, int], path: Path) -> None:
    """Top: P(correct first token) per line, one series per model (in the order given) and the frequency baseline
    of each distinct tokenization; bottom: the rank, log scale. The x axis names the presidents."""
    longest = max(per_model.values(), key=len)
    fig, (top, bottom) = plots.subplots(2, 1, figsize=(max(8.0, 0.24 * len(longest) + 2), 7), sharex=True)
    for j, (model, records) in enumerate(per_model.items()):
        x = np.arange(len(records))
        label = f"{model} ({params_text(size[model])})" if model in size else model
        top.plot(x, [math.exp(r.logprobs[0]) for r in records], marker=".", color=f"C{j}", label=label)
        bottom.plot(x, [r.gold_rank for r in records], marker=".", color=f"C{j}", label=label)
    tokenizations: dict[tuple[str, ...], list[str]] = {}
    for model, records in per_model.items():
        tokenizations.setdefault(tuple(first_tokens(records)), []).append(model)
    for style, (tokens, sharing) in zip(("--", ":", "-."), tokenizations.items()):
        found = frequency_ranks(list(tokens))
        own = f" ({', '.join(sharing)}'s tokens)" if len(tokenizations) > 1 else ""
        x = np.arange(len(found))
        kw = dict(color="black", linestyle=style, marker="x", markersize=4, linewidth=0.9)
        top.plot(x, [p for p, _ in found], label=f"frequency baseline{own}", **kw)
        bottom.plot(x, [np.nan if rank is None else rank for _, rank in found], **kw)
    bottom.axhline(10, color="grey", linestyle=":", linewidth=0.8)
    top.set_ylabel("P(correct first token)")
    top.set_ylim(-0.03, 1.03)
    bottom.set_ylabel("rank of the correct first token (log)")
    bottom.set_yscale("log")
    bottom.set_xticks(range(len(longest)), names(longest), rotation=90, fontsize=7)
    bottom.set_xlabel("president, in order (line n sees the n - 1 lines before it)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(fontsize=7, loc="best")
    top.set_title("US presidents, read line by line")
    plots.save(fig, path)
