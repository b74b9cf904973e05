"""The gold-answer rank figure and the presidents figure on hand-made stores: ranks, their counts and a uniform
guess's shares equal hand-computed ones; the frequency baseline's hits too; each figure is written and linked."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from harness import report_presidents
from harness.analysis import analyse
from harness.metrics import Resampler, choice_ranks, frequency_ranks, frequency_scores
from harness.report import render
from harness.report_ranks import bin_counts, chance_shares, choice_bins, panel
from harness.store import Record, Store, UnitKey, VariantRecords

# cb has three choices. Scores by example: gold ranked 1st; 3rd; 2nd after a tie broken by choice order (as the
# arg-max breaks it); with two golds, the better-ranked one (2nd)
SCORES = [([-1.0, -2.0, -3.0], [0]), ([-1.0, -2.0, -3.0], [2]), ([-2.0, -1.0, -1.0], [2]), ([-3.0, -1.0, -2.0], [0, 2])]


def _records(scores: list[tuple[list[float], list[int]]], start: int = 0) -> list[Record]:
    return [Record(f"{start + i:02d}", f"{start + i:02d}", gold, lp) for i, (lp, gold) in enumerate(scores)]


def test_choice_ranks_bins_and_a_uniform_guess():
    assert choice_ranks(_records(SCORES)).tolist() == [1, 3, 2, 2]
    ranks = np.array([1, 3, 2, 2, 7, 20])
    assert choice_bins(3) == [(1, 1), (2, 2), (3, 3)]
    assert choice_bins(20) == [(1, 1), (2, 2), (3, 4), (5, 8), (9, 16), (17, 20)]
    assert bin_counts(ranks, choice_bins(20)).tolist() == [1, 2, 1, 1, 0, 1]
    assert bin_counts(ranks, [(1, 1), (2, 10), (11, None)]).tolist() == [1, 4, 1]
    # 2, 3 and 3 choices: rank 1 and 2 each (1/2 + 1/3 + 1/3) / 3, rank 3 (0 + 1/3 + 1/3) / 3
    assert chance_shares(np.array([2, 3, 3]), choice_bins(3)) == pytest.approx([7 / 18, 7 / 18, 2 / 9])
    # 20 choices in the bins 3-4 and 17-20: four ranks of twenty each; 5 choices: only ranks 17-20 of none
    assert chance_shares(np.array([20, 5]), [(3, 4), (17, 20)]) == pytest.approx([(2 / 20 + 2 / 5) / 2, 0.1])


def _cb_store(tmp_path) -> Store:
    """cb on eight examples: at k=0 two gold templates without train scores (pooled), at k=4 two with (one picked)."""
    store = Store(tmp_path)
    store.put_model("tiny", 1_000_000, {"source": "hand-made", "device": "cpu", "dtype": "float32"})
    store.put_task("tiny", "cb", {"n_eval": 8})
    units = {
        ("A", 0, None): SCORES + SCORES,  # ranks 1, 3, 2, 2 twice
        ("B", 0, None): [([-1.0, -5.0, -5.0], [0])] * 8,  # all rank 1
        ("A", 4, 0.9): [([-5.0, -1.0, -5.0], [0])] * 8,  # picked on train: all rank 2 (after a tie, 1st of 2)
        ("B", 4, 0.4): [([-1.0, -5.0, -5.0], [0])] * 8,
    }
    for (template, k, train), scores in units.items():
        info = {"variants": ["gold"]} | ({"selection": {"n": 16, "acc": train}} if train else {})
        key = UnitKey("tiny", "cb", "prompt", f"gold/{template}/k{k}/s0")
        store.put_unit(key, [VariantRecords("gold", template, k, 0, _records(scores))], info)
    return store


def test_rank_distribution_of_the_prompt_the_report_reads(tmp_path):
    store = _cb_store(tmp_path)
    [result] = analyse(store)[1]
    found = panel(store, result)
    store.close()
    assert found is not None and found.bins == [(1, 1), (2, 2), (3, 3)]
    zero, few = found.series
    assert zero.label == "k=0, 2 templates pooled" and few.label == "k=4, A (picked on train)"
    assert bin_counts(zero.ranks, found.bins).tolist() == [2 + 8, 4, 2]  # A's 1, 3, 2, 2 twice and B's eight 1s
    assert bin_counts(few.ranks, found.bins).tolist() == [0, 8, 0]
    assert found.chance == pytest.approx([1 / 3] * 3)

    text = render(tmp_path).read_text(encoding="utf-8")
    section = text.split("## Where the gold answer ranks")[1].split("\n## ")[0]
    assert "the template picked on train where the store has train scores, else every gold template pooled" in section
    figure = tmp_path / "plots" / "gold-rank.png"
    assert "(plots/gold-rank.png)" in section and figure.stat().st_size > 1000


def test_frequency_baseline_on_a_hand_made_list():
    # A; B new; A after B (ties: the most recent first), 1 of 2; C new; B behind A (2) and C (1, more recent);
    # B tied with A at 2, more recent
    found = frequency_ranks(["A", "B", "A", "C", "B", "B"])
    assert found == [(0.0, None), (0.0, None), (0.5, 2), (0.0, None), (0.25, 3), (0.4, 1)]
    records = [Record(f"{i}", f"{i}", [0], [-1.0], choice_texts=[t]) for i, t in enumerate("ABACBB")]
    scores = frequency_scores(records, Resampler([r.group for r in records]))
    assert scores["top1"].value == pytest.approx(1 / 6) and scores["top10"].value == pytest.approx(3 / 6)
    assert scores["p_correct"].value == pytest.approx((0.5 + 0.25 + 0.4) / 6)
    assert scores["top1"].n == 6 and scores["top1"].proportion  # a share of lines: a Wilson interval


# Twelve lines, first names repeating: the baseline hits at lines 3 (A), 5 (B) and 6 (B); rank 2 at 3, 3 at 5
LINES = ["Ann", "Bob", "Ann", "Cy", "Bob", "Bob", "Di", "Ed", "Fay", "Gus", "Hal", "Ida"]


def _presidents(store: Store, model: str, params: int, ranks: list[int]) -> None:
    store.put_model(model, params, {"source": "hand-made", "device": "cpu", "dtype": "float32"})
    store.put_task(model, "presidents", {"n_eval": len(LINES)})
    records = [
        Record(f"{i + 1:02d}", f"{i + 1:02d}", [0], [math.log(1 / rank)], gold_rank=rank, choice_texts=[name[:2]],
               gold_texts=[f"{name} Smith"])
        for i, (name, rank) in enumerate(zip(LINES, ranks))
    ]  # fmt: skip
    store.put_unit(
        UnitKey(model, "presidents", "prompt", "gold/list/k0/s0"), [VariantRecords("gold", "list", 0, 0, records)]
    )


def test_presidents_by_model_beside_the_frequency_baseline(tmp_path, monkeypatch):
    store = Store(tmp_path)
    _presidents(store, "big", 10_000_000, [1] * 6 + [50] * 6)  # top-1 on half the lines
    _presidents(store, "small", 1_000_000, [2] * 12)  # top-10 everywhere, top-1 nowhere
    store.close()
    drawn = {}
    monkeypatch.setattr(report_presidents.plots, "save", lambda fig, path: drawn.update(fig=fig, path=path))
    text = render(tmp_path).read_text(encoding="utf-8")
    screen, details = text.split("## Presidents", 1)
    # a report of the list alone opens with it: top-10 against the baseline's, "yes" only where their paired
    # difference clears 0. small: +75 points (12 of 12 vs 3 of 12). big: +25, from the 3 lines (1, 2, 4) where it
    # alone hits; a resample of 12 lines misses all three with probability (9/12)^12 = 3.2% > 2.5%: not told yet
    first = [line for line in screen.splitlines() if re.match(r"\| (small|big) \| 12 \|", line)]
    verdicts = [row.split(" | ")[-1] for row in first]
    assert re.fullmatch(r"yes \(\+75\.0 \[\+[4-7]\d\.\d, \+\d+\.\d\]\) \|", verdicts[0]), verdicts
    assert re.fullmatch(r"cannot be told yet \(\+25\.0 \[\+0\.0, \+\d+\.\d\]: the interval holds 0\) \|", verdicts[1])
    rows = [line for line in details.splitlines() if re.match(r"\| (small|big) \| 12 \|", line)]
    # smallest first; the baseline on each model's tokens: top-1 at 1 line of 12, top-10 at 3 (Wilson intervals)
    assert [row.split(" | ")[0] for row in rows] == ["| small", "| big"]
    assert rows[0].split(" | ")[2:4] == ["0.0 [0.0, 24.2]", "100.0 [75.8, 100.0]"]
    assert rows[1].split(" | ")[2] == "50.0 [25.4, 74.6]"
    assert all(row.split(" | ")[-2:] == ["8.3 [1.5, 35.4]", "25.0 [8.9, 53.2]" + " |"] for row in rows)
    assert "| 5 | `Bo` | 50.0 (2) | 100.0 (1) | 25.0 (3) |" in text
    top, bottom = drawn["fig"].axes
    assert [t.get_text() for t in bottom.get_xticklabels()] == [f"{name} Smith" for name in LINES]
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["small (1.0M)", "big (10.0M)", "frequency baseline"]
    baseline = bottom.get_lines()[2].get_ydata()  # the baseline's ranks, gaps where its token was not seen yet
    assert np.isnan(baseline[[0, 1, 3]]).all() and list(baseline[[2, 4, 5]]) == [2, 3, 1]
    assert "(plots/presidents.png)" in text


def test_error_bars_of_intervals_that_miss_their_estimate(tmp_path):
    """The learning-curve and prompt's-worth plots draw intervals as error-bar lengths: an interval wholly above or
    below its estimate, or with a missing end, gives lengths matplotlib accepts (it refuses negative ones)."""
    import math

    from harness import plots

    values, lows, highs = [50.0, 10.0, 40.0, 30.0], [40.0, 12.0, math.nan, 20.0], [60.0, 30.0, 45.0, 25.0]
    lengths = plots.error_lengths(values, lows, highs)
    assert lengths == [[10.0, 0.0, 0.0, 10.0], [10.0, 20.0, 5.0, 0.0]]
    fig, ax = plots.subplots()
    ax.errorbar([1, 2, 4, 8], values, yerr=lengths, fmt="o-")
    plots.save(fig, tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 1000
    fig, ax = plots.subplots()
    try:  # what the plots did before: the raw differences, refused
        ax.errorbar([1, 2], values[:2], yerr=[[v - lo for v, lo in zip(values[:2], lows[:2])], [0, 0]])
        refused = False
    except ValueError:
        refused = True
    assert refused
