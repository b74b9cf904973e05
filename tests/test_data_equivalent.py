"""Scores read in labelled examples (harness/data_equivalent.py), on hand-made curves and stores with known answers:
the log-size interpolation and its censored ends, the paired bootstrap interval, a prompt's worth in examples in the
eval report, and the effective data transferred in the transfer report."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.data_equivalent import ABOVE, BELOW, data_equivalent, matching_size
from harness.metrics import Resampler
from harness.report import render
from harness.report_transfer import render as render_transfer
from harness.store import Store, UnitKey, VariantRecords
from harness.transfer_matrix import KIND, METHOD, load
from tests.test_decompose import _prompt, _records
from tests.test_transfer import _records as _hits_records

SIZES = [8, 32, 128]


def test_an_exact_crossing_at_a_size_is_that_size():
    assert matching_size(SIZES, [0.5, 0.6, 0.7], 0.6) == pytest.approx(32)
    assert matching_size(SIZES, [0.5, 0.6, 0.7], 0.7) == pytest.approx(128)


def test_between_two_sizes_log_size_is_interpolated_linearly():
    assert matching_size(SIZES, [0.5, 0.6, 0.7], 0.55) == pytest.approx(16)  # halfway in log between 8 and 32
    assert matching_size(SIZES, [0.5, 0.6, 0.7], 0.625) == pytest.approx(32 * 4**0.25)


def test_a_curve_at_or_above_the_target_from_the_start_is_below_the_smallest_size():
    assert matching_size(SIZES, [0.5, 0.6, 0.7], 0.4) == BELOW
    assert matching_size(SIZES, [0.5, 0.6, 0.7], 0.5) == BELOW  # reached at 8: how many fewer would do is unknown


def test_a_curve_that_never_reaches_the_target_is_above_the_largest_size():
    assert matching_size(SIZES, [0.5, 0.6, 0.7], 0.71) == ABOVE
    assert matching_size([8], [0.5], 0.6) == ABOVE and matching_size([8], [0.5], 0.4) == BELOW


def test_a_curve_that_dips_is_read_at_its_first_crossing():
    curve = [0.5, 0.7, 0.6, 0.8]
    sizes = [8, 32, 128, 512]
    assert matching_size(sizes, curve, 0.65) == pytest.approx(8 * 4**0.75)  # before the dip, not between 128 and 512
    assert matching_size(sizes, curve, 0.75) == pytest.approx(128 * 4**0.75)  # above the peak: after the dip
    assert math.isnan(matching_size(sizes, [0.5, np.nan, 0.6, 0.8], 0.55))


def test_columns_are_read_one_by_one_and_bad_sizes_are_refused():
    curve = np.array([[0.5, 0.6, 0.7], [0.7, 0.8, 0.9], [0.1, 0.2, 0.3]]).T  # three replicates
    got = matching_size(SIZES, curve, np.array([0.55, 0.6, 0.4]))
    assert got[0] == pytest.approx(16) and got[1] == BELOW and got[2] == ABOVE
    with pytest.raises(ValueError, match="strictly increasing"):
        matching_size([32, 8], [0.5, 0.6], 0.55)


def _vectors(n: int) -> tuple[Resampler, list[np.ndarray], np.ndarray]:
    """n examples: curve accuracies 50/70/80% at 8/32/128, prompt 60%, nested (the first k right)."""
    right = lambda share: (np.arange(n) < share * n).astype(float)  # noqa: E731
    return Resampler([str(i) for i in range(n)]), [right(0.5), right(0.7), right(0.8)], right(0.6)


@pytest.mark.parametrize("n", [100, 1000])
def test_the_interval_holds_the_estimate_and_shrinks_with_more_examples(n):
    rs, curve, prompt = _vectors(n)
    d = data_equivalent(SIZES, [rs.mean(c) for c in curve], rs.mean(prompt))
    assert d.value == pytest.approx(8 * 4**0.5)  # (60 - 50) / (70 - 50) of the way from 8 to 32 in log size
    lo, hi = d.ci
    assert lo < d.value < hi
    rs_big, curve_big, prompt_big = _vectors(10 * n)
    big = data_equivalent(SIZES, [rs_big.mean(c) for c in curve_big], rs_big.mean(prompt_big))
    lo_big, hi_big = big.ci
    assert lo_big < big.value < hi_big
    assert math.log(hi_big / lo_big) < 0.6 * math.log(hi / lo)  # ten times the examples: about a third as wide
    assert d.interval_text() == f"16 [{lo:.0f}, {hi:.0f}]"


# ------------------------------------------------------------------------------ a prompt's worth, eval report
N = 100


def _probe(store, task, n, correct, model):
    info = {"cv_curve": [0.5, 0.6], "eval_curve": [0.5, 0.6], "layer": 1, "layers": [0, 1]}
    key = UnitKey(model, task, "probe", f"probe/input-only/n{n}/s0")
    store.put_unit(key, [VariantRecords("probe", "input-only", n, 0, _records(correct))], info)


def _eval_store(tmp_path):
    store = Store(tmp_path)
    # task -> (prompt correct on eval, probe correct at each train size); rte's best prompt is A (picked on train)
    curves = {
        "small": {"rte": (70, {8: 60, 32: 80}), "wic": (55, {8: 60, 32: 70}), "boolq": (90, {8: 50, 128: 70, 250: 80})},
        "big": {"rte": (70, {8: 60, 32: 70})},
    }
    for model, params in (("small", 1_000_000), ("big", 10_000_000)):
        store.put_model(model, params, {"source": "hand-made", "device": "cpu", "dtype": "float32"})
        for task, (prompt, probe) in curves[model].items():
            store.put_task(model, task, {"n_eval": N, "n_train": 250})
            _prompt(store, task, "gold", "A", 0, prompt, 0.7, model=model)
            _prompt(store, task, "gold", "B", 0, 95, 0.6, model=model)  # better on eval, worse on train: not picked
            for n, correct in probe.items():
                _probe(store, task, n, correct, model)
    return store


def test_the_report_states_a_prompts_worth_and_its_censored_ends(tmp_path):
    _eval_store(tmp_path).close()
    text = render(tmp_path).read_text()
    section = text[text.index("## small") : text.index("## big")]
    section = section[section.index("### A prompt's worth in examples") :]
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert "| 70.0 [" in rows["rte"] and "(A, k=0) | probe | 8: 60.0, 32: 80.0 | 16 [" in rows["rte"]
    assert rows["wic"].endswith("| below 8 [below 8, below 8] |")  # the probe beats the prompt with 8 examples
    assert "8: 50.0, 128: 70.0, 250 (all): 80.0 | above 250 (all) [above 250 (all), above 250 (all)] |" in rows["boolq"]
    across = text[text.index("### A prompt's worth in examples, across sizes") : text.index("## small")]
    # small: 16 examples, big: exactly 32 (its curve meets the prompt at 32); boolq and wic ran on small only
    assert "| rte | probe | 16 [" in across and "| 32 [32, 32] | x2.00 [" in across
    assert (tmp_path / "plots" / "worth-in-examples.png").is_file()
    assert render(tmp_path).read_text() == text  # byte-identical re-render


# ------------------------------------------------------------------------------ effective data transferred
def _transfer_store(tmp_path, alone: dict | None = None):
    """Two tasks, D_F = 10; B alone at 2, 10 and 40 examples (of 100 eval examples, the first k right)."""
    store = Store(tmp_path)
    store.set_meta("kind", KIND)
    store.set_meta("tasks", ["rte", "copa"])
    alone = alone or {"rte": {2: 40, 10: 50, 40: 70}, "copa": {2: 40, 10: 60, 40: 80}}
    after = {
        "small": {("copa", "rte"): 60, ("rte", "rte"): 50, ("rte", "copa"): 50, ("copa", "copa"): 30},
        "large": {("copa", "rte"): 70, ("rte", "rte"): 50, ("rte", "copa"): 50, ("copa", "copa"): 30},
    }
    for model, params in (("small", 1000), ("large", 2000)):
        store.put_model(model, params, {})
        for task in ("rte", "copa"):
            store.put_task(model, task, {})
            for n, hits in alone[task].items():
                put = UnitKey(model, task, METHOD, f"only/n{n}/s0")
                store.put_unit(put, [VariantRecords("only", "t", n, 0, _hits_records([1] * hits + [0] * (100 - hits)))])
        for (a, b), hits in after[model].items():
            key = UnitKey(model, b, METHOD, f"from:{a}/n200+10/s0")
            records = _hits_records([1] * hits + [0] * (100 - hits))
            store.put_unit(key, [VariantRecords(f"from:{a}", "t", 10, 0, records)])
    return store


def test_effective_data_transferred_is_positive_zero_or_negative(tmp_path):
    store = _transfer_store(tmp_path)
    small, large = load(store)
    store.close()
    assert small.target_n == 10 and sorted(small.curve["rte"]) == [2, 10, 40]
    positive = small.transferred[("copa", "rte")]  # 60: halfway in log between 10 (50) and 40 (70) = 20, minus 10
    assert positive.value == pytest.approx(10) and small.gain[("copa", "rte")].value == pytest.approx(0.10)
    lo, hi = positive.ci
    assert 0 < lo < 10 < hi
    zero = small.transferred[("rte", "rte")]  # B alone at 10 scores what A then B scores: nothing transferred
    assert zero.value == pytest.approx(0) and zero.ci == pytest.approx((0, 0))
    negative = small.transferred[("rte", "copa")]  # 50 on copa: halfway between 2 (40) and 10 (60)
    assert negative.value == pytest.approx(math.sqrt(20) - 10) and negative.text() == "-6"
    hurt = small.transferred[("copa", "copa")]  # 30, below B alone at 2 examples: only bounded
    assert hurt.value == BELOW and hurt.text() == "below -8"
    assert large.transferred[("copa", "rte")].value == pytest.approx(30)  # 70 = B alone at 40


def test_the_transfer_report_shows_effective_data_beside_the_gains(tmp_path):
    _transfer_store(tmp_path).close()
    text = render_transfer(tmp_path).read_text()
    section = text[text.index("## Effective data transferred") :]
    assert "D_F = 10 examples of B" in section
    assert "| rte | 2: 40.0, 10: 50.0, 40: 70.0 |" in section
    assert "| copa | 10 (+10.0) | below -8 (-30.0) |" in section  # row A = copa: D_T (gain) on rte, then on copa
    assert "| rte | 0 (+0.0) | -6 (-10.0) |" in section
    assert "| copa -> rte | 10 | -6 | +16 [" in section  # asymmetry in examples, the gains' beside it
    large = section[section.index("### From small (0.0M) to large (0.0M)") :]
    assert "| copa -> rte | 10 [" in large and "| 30 [30, 30] | +20 [" in large
    csv = (tmp_path / "transfer.csv").read_text()
    assert "small,1000,copa,rte,effective_data,10," in csv and ",only_n40," in csv
    assert render_transfer(tmp_path).read_text() == text


def test_no_effective_data_is_read_off_a_curve_that_does_not_learn(tmp_path):
    # copa alone scores 60 at 2 examples and 62 at 40: the first 60 right at every size, two more at 40; a rise of
    # 2 points on 2 of 100 examples, its interval holds 0, so every size "matches" 50 or 60: no D_T for copa
    _transfer_store(tmp_path, {"rte": {2: 40, 10: 50, 40: 70}, "copa": {2: 60, 10: 58, 40: 62}}).close()
    store = Store(tmp_path, create=False)
    small, _ = load(store)
    store.close()
    assert small.learns("rte") and not small.learns("copa")
    assert small.rise["copa"].value == pytest.approx(0.02) and small.rise["copa"].ci[0] <= 0
    assert small.rise["rte"].value == pytest.approx(0.30) and small.rise["rte"].ci[0] > 0.15
    assert set(small.transferred) == {("copa", "rte"), ("rte", "rte")}  # B = copa: none
    screen, section = render_transfer(tmp_path).read_text().split("## Effective data transferred")
    # the first screen counts the pairs by their D_T: copa -> rte is worth 10 examples of rte, rte -> copa has none
    row = next(line for line in screen.splitlines() if line.startswith("| small |"))
    assert row.endswith("| worth examples on 1 (copa -> rte 10 [5, 17]); none on 1 (B alone does not learn: copa) |")
    assert "| copa | 2: 60.0, 10: 58.0, 40: 62.0 | +2.0 [" in section and "| no: flat |" in section
    assert "| rte | 2: 40.0, 10: 50.0, 40: 70.0 | +30.0 [" in section and "| yes |" in section
    assert "| copa | 10 (+10.0) | flat |" in section and "| rte | 0 (+0.0) | flat |" in section
    assert "Largest asymmetries" not in section  # copa <-> rte: no D_T towards copa, so no asymmetry in examples
    assert "| copa -> rte | 10 [5, 17] | 30 [30, 30] | +20 [" in section  # across sizes: the pairs with D_T


def test_a_falling_curve_is_named_as_such_and_gives_no_effective_data(tmp_path):
    # copa alone: 70 right at 2 examples, 40 at 40 (the last 30 of the first 70 lost): a fall of 30 points
    _transfer_store(tmp_path, {"rte": {2: 40, 10: 50, 40: 70}, "copa": {2: 70, 10: 60, 40: 40}}).close()
    store = Store(tmp_path, create=False)
    small, _ = load(store)
    store.close()
    assert small.rise["copa"].value == pytest.approx(-0.30) and small.rise["copa"].ci[1] < 0
    assert not small.learns("copa") and ("rte", "copa") not in small.transferred
    section = render_transfer(tmp_path).read_text().split("## Effective data transferred")[1]
    assert "| copa | 2: 70.0, 10: 60.0, 40: 40.0 | -30.0 [" in section and "| no: falls |" in section
