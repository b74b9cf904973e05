"""Where the gold answer ranks: per model and prompted task, the distribution of the gold answer's rank among the
answer choices (1 = the model's top choice), zero-shot and with the most demos run, beside a uniform guess's.

The rank lens of the presidents probe, applied to every task. Ranks come from the stored per-example scores over the
choices (`choice_ranks`). Generated answers have no choice set: there the full-vocabulary rank of the answer's first
token, stored with each record, is binned by powers of ten.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import plots
from harness import report_figures as figures
from harness.analysis import TaskResult
from harness.decompose import decompose
from harness.metrics import choice_ranks
from harness.store import Record, Store

MAX_COLUMNS = 8  # a model's tasks in one row up to this many (SuperGLUE's eight), wrapped beyond
MAX_SINGLE_RANKS = 8  # up to this many choices, a bar per rank; more (ReCoRD's entities): bins by powers of two
VOCABULARY_BINS: list[tuple[int, int | None]] = [(1, 1), (2, 10), (11, 100), (101, 1000), (1001, None)]


def choice_bins(most_choices: int) -> list[tuple[int, int | None]]:
    """Rank bins for examples with up to `most_choices` choices: one per rank, or 1, 2, 3-4, 5-8, ... when many."""
    if most_choices <= MAX_SINGLE_RANKS:
        return [(r, r) for r in range(1, most_choices + 1)]
    bins: list[tuple[int, int | None]] = [(1, 1)]
    while (lo := bins[-1][1] + 1) <= most_choices:  # type: ignore[operator]
        bins.append((lo, min(2 * (lo - 1), most_choices)))
    return bins


def bin_counts(ranks: np.ndarray, bins: list[tuple[int, int | None]]) -> np.ndarray:
    """How many ranks fall in each bin (both ends included; an open end takes every rank above)."""
    return np.array([int(((ranks >= lo) & (ranks <= (hi or np.inf))).sum()) for lo, hi in bins])


def chance_shares(n_choices: np.ndarray, bins: list[tuple[int, int | None]]) -> np.ndarray:
    """The share of examples a uniform guess puts in each bin, computed: an example with K choices has each rank
    1..K with probability 1/K; the mean over examples."""
    k = n_choices.astype(np.float64)
    return np.array([np.mean(np.clip(np.minimum(hi or np.inf, k) - lo + 1, 0, None) / k) for lo, hi in bins])


@dataclass
class Series:
    label: str  # which prompt: k, template, how it was chosen
    ranks: np.ndarray


@dataclass
class Panel:
    model: str
    task: str
    bins: list[tuple[int, int | None]]
    series: list[Series]
    chance: np.ndarray | None  # None for full-vocabulary ranks (the vocabulary size is not stored; about 0 anyway)

    @property
    def vocabulary(self) -> bool:
        return self.chance is None


def prompt_records(units: dict, picked: tuple | None, k: int) -> tuple[str, list[Record]]:
    """The records of "the" prompt at k, as the report reads it: the gold template picked on train (`picked`: its
    (variant, k, template)) over its demo seeds, else every gold template at k pooled; with a label saying which."""
    keys = sorted(key for key in units if key[:2] == ("prompt", "gold") and key[3] == k)
    if picked is not None:
        keys = [key for key in keys if key[2] == picked[2]]
        label = f"k={k}, {picked[2]} (picked on train)"
    else:
        label = f"k={k}, {len({key[2] for key in keys})} templates pooled"
    return label, [r for key in keys for r in units[key]]


def panel(store: Store, result: TaskResult) -> Panel | None:
    """One (model, task)'s rank distributions at k=0 and the largest k; None where the prompt did not run."""
    d = decompose(result)
    units = store.records(result.model, result.task)
    series, scored = [], []
    for k, picked in ((0, d.zero_selected), (d.few, d.few_selected)):
        if k is None:
            continue
        label, records = prompt_records(units, picked.key if picked else None, k)
        if not records:
            continue
        if records[0].generated is not None:
            ranks = np.array([r.gold_rank for r in records if r.gold_rank is not None], dtype=np.int64)
        else:
            ranks = choice_ranks(records)
        if len(ranks):
            series.append(Series(label, ranks))
            scored += records
    if not series:
        return None
    if scored[0].generated is not None:
        return Panel(result.model, result.task, VOCABULARY_BINS, series, None)
    n_choices = np.array([len(r.logprobs) for r in scored])
    bins = choice_bins(int(n_choices.max()))
    return Panel(result.model, result.task, bins, series, chance_shares(n_choices, bins))


def section(
    store: Store, models: list[tuple[str, int, dict]], results: list[TaskResult], out: Path, plot: Path
) -> list[str]:
    """The figure and its caption; [] when no prompt ran."""
    order = {m: i for i, (m, _, _) in enumerate(models)}
    found = [p for r in sorted(results, key=lambda r: order.get(r.model, 0)) if r.estimates and (p := panel(store, r))]
    if not found:
        return []
    draw(found, out / plot)
    labels = [s.label for p in found for s in p.series]
    picked = sum("picked on train" in label for label in labels)
    which = (
        "the template picked on train (as in the guess-vs-do table)"
        if picked == len(labels)
        else "every gold template pooled (no train scores to pick one)"
        if not picked
        else "the template picked on train where the store has train scores, else every gold template pooled"
    )
    return [
        "## Where the gold answer ranks",
        "",
        "Per model (rows of panels) and task: the share of scored examples at each rank of the gold answer among the "
        "answer choices (1 = the model's top choice; ties go as the arg-max breaks them, so the share at rank 1 is "
        f"accuracy), zero-shot and with the most demos run on the task, for {which}; each bar's prompt and n "
        "(examples, times demo seeds and templates pooled) in its legend; dashed: a uniform guess, 1/K per rank for "
        "K choices (computed, not sampled). Generated answers: the full-vocabulary rank of the answer's first token, "
        "binned by powers of ten (no uniform line: a guess over the vocabulary puts about 0 in each bin).",
        "",
        f"![gold-answer rank per model and task]({plot.as_posix()})",
        "",
    ]


def draw(found: list[Panel], path: Path) -> None:
    """A row of panels (wrapped at MAX_COLUMNS) per model; bars in percent of each series' n, 0-100 in every panel."""
    by_model: dict[str, list[Panel]] = {}
    for p in found:
        by_model.setdefault(p.model, []).append(p)
    cols = min(MAX_COLUMNS, max(len(ps) for ps in by_model.values()))
    rows = [-(-len(ps) // cols) for ps in by_model.values()]
    fig, axes = plots.subplots(
        sum(rows), cols, figsize=(2.4 * cols + 0.6, 3.0 * sum(rows) + 0.4), squeeze=False, sharey=True
    )
    top = 0
    for (model, ps), n_rows in zip(by_model.items(), rows):
        cells = [axes[top + i // cols][i % cols] for i in range(n_rows * cols)]
        for i, (ax, p) in enumerate(zip(cells, ps)):
            _bars(ax, p)
            figures.finish(ax, p.task, f"{model}\n% of examples" if i % cols == 0 else None)
        for ax in cells[len(ps) :]:
            ax.axis("off")
        top += n_rows
    plots.save(fig, path)


def _bars(ax, p: Panel) -> None:
    x = np.arange(len(p.bins))
    width = 0.8 / len(p.series)
    for j, s in enumerate(p.series):
        shares = bin_counts(s.ranks, p.bins) / len(s.ranks) * 100
        offset = (j - (len(p.series) - 1) / 2) * width
        ax.bar(x + offset, shares, width, color=f"C{j}", label=f"{s.label}, n={len(s.ranks)}")
    if p.chance is not None:
        ax.hlines(p.chance * 100, x - 0.45, x + 0.45, colors="black", linestyles="--", lw=0.9, label="uniform guess")
    names = [str(lo) if lo == hi else f"{lo}-{hi}" if hi else f">{lo - 1}" for lo, hi in p.bins]
    ax.set_xticks(x, names, fontsize=6)
    ax.set_xlabel("first-token rank in the vocabulary" if p.vocabulary else "gold rank among the choices", fontsize=6)
    ax.legend(fontsize=5, loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)  # below: off the bars
