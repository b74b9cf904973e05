"""The report's section for the presidents probe: hit rates by model, then P(correct) and rank by position."""

from __future__ import annotations

import math
from pathlib import Path

from harness import plots
from harness.analysis import TaskResult
from harness.markdown import fmt, table
from harness.store import Store

TASK = "presidents"
UNIT = ("prompt", "gold", "list", 0, 0)


def section(store: Store, results: list[TaskResult], out: Path, plot: Path) -> list[str]:
    """Markdown for every model that read the list; [] when none did."""
    read = [r for r in results if r.task == TASK and r.estimates]
    if not read:
        return []
    lines = [
        "## Presidents: knowledge read off the next-token distribution",
        "",
        "The ordered list of US presidents (`Name, start - end` per line) is fed once; at each line start the "
        "probability and full-vocabulary rank of the first token of the correct name are read. Line n sees the n - 1 "
        "lines before it; line 1 sees none, so it is one reading of a name with no list to continue, not a "
        "zero-shot score of the task. Hit rates with 95% bootstrap intervals over lines.",
        "",
    ]
    rows = []
    for r in read:
        top1, top10, p_correct, rank = (
            r.estimates.get(("prompt", "gold", 0, "list", 0, m))
            for m in ("top1", "top10", "p_correct", "median_gold_rank")
        )
        rows.append([r.model, fmt(top1), fmt(top10), fmt(p_correct), fmt(rank, scale=1.0, ci=False)])
    lines += table(["model", "top-1", "top-10", "mean P(correct)", "median rank"], rows)
    per_model = {r.model: store.records(r.model, TASK).get(UNIT, []) for r in read}
    first = next(iter(per_model.values()))
    lines += ["", "### By position", "", "P(correct) in percent, then the rank of the correct first token.", ""]
    position_rows = []
    for i, rec in enumerate(first):
        token = (rec.choice_texts or [""])[0].replace("|", "\\|")
        cells = [f"{i + 1} (no list before it)" if i == 0 else str(i + 1), f"`{token}`"]
        for records in per_model.values():
            rec = records[i] if i < len(records) else None
            cells.append(f"{math.exp(rec.logprobs[0]) * 100:.1f} ({rec.gold_rank})" if rec else "–")
        position_rows.append(cells)
    lines += table(["line", "first token (first model)", *per_model], position_rows)
    _plot(per_model, out / plot)
    lines += ["", f"![presidents by position]({plot.as_posix()})", ""]
    return lines


def _plot(per_model: dict, path: Path) -> None:
    fig, (top, bottom) = plots.subplots(2, 1, figsize=(8, 6), sharex=True)
    for model, records in per_model.items():
        x = range(1, len(records) + 1)
        top.plot(x, [math.exp(r.logprobs[0]) for r in records], marker=".", label=model)
        bottom.plot(x, [r.gold_rank for r in records], marker=".", label=model)
    top.set_ylabel("P(correct first token)")
    bottom.set_ylabel("rank (log)")
    bottom.set_yscale("log")
    bottom.set_xlabel("line (n-th line sees n - 1 lines before it)")
    top.legend(fontsize=8)
    top.set_title("US presidents, read line by line")
    plots.save(fig, path)
