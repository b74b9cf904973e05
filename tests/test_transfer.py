"""Transfer matrix: gain arithmetic, asymmetries and clustering on hand-made data; resume after an interruption
and byte-identical re-rendering on a tiny random model; one-line errors from the CLI."""

from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from harness.config import TransferConfig
from harness.errors import Interrupted
from harness.metrics import Estimate, mean_estimate
from harness.store import Record, Store, UnitKey, VariantRecords
from harness.tasks import Example, TaskSpec
from harness.transfer import Runner, TransferTask, run_transfer
from harness.transfer_matrix import KIND, METHOD, ModelTransfer, asymmetries, cluster, load


def _records(hits: list[int]) -> list[Record]:
    """Two-choice records, gold 0: a hit scores choice 0 higher."""
    return [Record(f"e{i}", f"e{i}", [0], [0.0, -1.0] if hit else [-1.0, 0.0]) for i, hit in enumerate(hits)]


def _put(store: Store, task: str, variant: str, seed: int, hits: list[int], info: dict | None = None) -> None:
    key = UnitKey("m", task, METHOD, f"{variant}/s{seed}")
    store.put_unit(key, [VariantRecords(variant, "t", 10, seed, _records(hits))], info)


def test_gains_average_seeds_per_example_and_pair_the_same_seeds(tmp_path):
    store = Store(tmp_path)
    store.set_meta("kind", KIND)
    store.set_meta("tasks", ["rte", "copa"])
    store.put_model("m", 1000, {})
    for task in ("rte", "copa"):
        store.put_task("m", task, {})
    _put(store, "rte", "only", 0, [1, 0, 0, 0])
    _put(store, "rte", "only", 1, [1, 1, 0, 0])  # per example over seeds: [1, .5, 0, 0]
    _put(store, "rte", "from:copa", 0, [1, 1, 1, 0])
    _put(store, "rte", "from:copa", 1, [1, 1, 0, 0])  # [1, 1, .5, 0]
    _put(store, "rte", "from:rte", 0, [1, 1, 1, 1])  # seed 0 only: paired with `only` seed 0 alone
    _put(store, "rte", "source", 0, [1, 1, 1, 0], {"best_step": 20, "steps_run": 30})
    _put(store, "copa", "source", 0, [1, 0], {"best_step": 0, "steps_run": 20})  # held-out loss never fell
    _put(store, "copa", "only", 0, [0, 0])
    (result,) = load(store)
    store.close()
    assert result.tasks == ["rte", "copa"]
    assert result.only["rte"].value == pytest.approx(0.375)
    assert result.after[("copa", "rte")].value == pytest.approx(0.625)
    assert result.gain[("copa", "rte")].value == pytest.approx(0.25)  # (0 + .5 + .5 + 0) / 4
    assert result.gain[("rte", "rte")].value == pytest.approx(0.75)  # 1 - .25 against seed 0's [1, 0, 0, 0]
    assert result.source["rte"].value == pytest.approx(0.75)
    lo, hi = result.gain[("copa", "rte")].ci
    assert 0 <= lo <= 0.25 <= hi <= 0.5  # differences per example are 0 or .5
    assert ("rte", "copa") not in result.gain  # no pair stored: the cell is missing, not zero
    assert result.kept_steps == {"rte": [(20, 30)], "copa": [(0, 20)]}
    assert result.untrained_sources() == ["copa"]  # its row would repeat B alone: the report says so


def _estimate(value: float, spread: float = 0.0) -> Estimate:
    return Estimate(value, value + np.linspace(-spread, spread, 1000), 50)


def test_asymmetries_order_direction_and_intervals():
    tasks = ["add", "sub", "mul"]
    values = {("add", "sub"): 0.30, ("sub", "add"): 0.05, ("add", "mul"): 0.0, ("mul", "add"): 0.10}
    values |= {("sub", "mul"): 0.02, ("mul", "sub"): 0.0}
    result = ModelTransfer("m", 1, tasks, gain={k: _estimate(v, 0.01) for k, v in values.items()})
    back = result.gain[("sub", "add")]
    back.samples = back.samples[::-1]  # replicates are subtracted one by one: .25 + 2 * linspace(-.01, .01)
    table = asymmetries(result)
    assert [(a, b) for a, b, _ in table] == [("add", "sub"), ("mul", "add"), ("sub", "mul")]
    assert [round(d.value, 6) for _, _, d in table] == [0.25, 0.10, 0.02]
    lo, hi = table[0][2].ci
    assert lo == pytest.approx(0.25 - 0.019, abs=1e-3) and hi == pytest.approx(0.25 + 0.019, abs=1e-3)
    assert mean_estimate(
        [result.gain[("add", "sub")], result.gain[("sub", "add")]], same_examples=False
    ).value == pytest.approx(0.175)


def test_clustering_groups_tasks_that_help_each_other():
    from scipy.cluster.hierarchy import fcluster

    tasks = ["add", "boolq", "sub", "rte"]
    g = np.array(
        [
            [0.40, 0.00, 0.20, -0.02],
            [0.01, 0.10, 0.00, 0.12],
            [0.25, 0.00, 0.30, 0.01],
            [-0.01, 0.15, 0.02, 0.08],
        ]
    )
    link, order = cluster(tasks, g)
    groups = fcluster(link, 2, criterion="maxclust")
    assert groups[0] == groups[2] != groups[1] == groups[3]  # {add, sub} and {boolq, rte}
    assert abs(order.index("add") - order.index("sub")) == 1
    assert link[0][2] == pytest.approx(0.0)  # add-sub has the largest mutual gain (.225): merged first, distance 0
    with pytest.raises(ValueError):
        cluster(tasks, np.where(np.eye(4) > 0, np.nan, g))


def _config(tiny_dir, out, **kw) -> TransferConfig:
    settings = dict(source_n=8, target_n=4, source_steps=2, target_steps=2, source_eval_every=1, seeds=1, limit=4)
    return TransferConfig([str(tiny_dir)], ["add-1d", "sub-1d"], out=str(out), **(settings | kw))


def _stored(out) -> dict:
    store = Store(out, create=False)
    rows = store.conn.execute(
        "SELECT task, variant, shots, seed, example_id, payload FROM records ORDER BY 1, 2, 3, 4, 5"
    )
    out = {r[:5]: r[5] for r in rows}
    store.close()
    return out


def test_interrupted_transfer_resumes_without_redoing_units(tiny_dir, tmp_path, monkeypatch):
    console = Console(quiet=True)
    run_transfer(_config(tiny_dir, tmp_path / "whole"), console, "whole")

    calls, sources = [], []
    real_unit, real_train = Runner.run_unit, Runner._train_and_score

    def flaky(self, unit):
        calls.append(unit)
        if len(calls) == 4:  # the first pair that starts from add-1d's stored state
            raise KeyboardInterrupt
        real_unit(self, unit)

    def counting(self, task, sample, start, seed, brief, score=True):
        if not brief:
            sources.append(task.spec.name)
        return real_train(self, task, sample, start, seed, brief, score)

    monkeypatch.setattr(Runner, "run_unit", flaky)
    monkeypatch.setattr(Runner, "_train_and_score", counting)
    with pytest.raises(Interrupted, match="3 of 8 transfer units"):
        run_transfer(_config(tiny_dir, tmp_path / "resumed"), console, "resumed")
    assert len(_stored(tmp_path / "resumed")) == 3 * 4  # three units of four eval examples, nothing half-written
    run_transfer(_config(tiny_dir, tmp_path / "resumed"), console, "resumed")
    assert len(calls) == 4 + 5  # the rerun ran only the five missing units
    assert sources == ["add-1d", "sub-1d"]  # add-1d's state was read back from its file, not trained again
    assert _stored(tmp_path / "resumed") == _stored(tmp_path / "whole")  # same numbers as an uninterrupted run

    report = (tmp_path / "resumed" / "report.md").read_bytes()
    from harness.report_transfer import render

    render(tmp_path / "resumed")
    assert (tmp_path / "resumed" / "report.md").read_bytes() == report  # re-rendering is byte-identical
    assert (
        "### Transfer matrix" in report.decode() and (tmp_path / "resumed" / "plots" / "transfer_matrix.png").is_file()
    )


def test_ptune_transfers_its_soft_prompt_and_harness_report_renders_the_store(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    from harness.transfer import state_path

    run_transfer(_config(tiny_dir, tmp_path, method="ptune", limit=2), Console(quiet=True), "ptune")
    state = load_file(state_path(tmp_path, str(tiny_dir), "prompt-tuning", "add-1d", 8, 0))
    assert [t.shape for t in state.values()] == [(20, 32)]  # 20 virtual tokens of the tiny model's width
    (result,) = load(Store(tmp_path, create=False))
    assert len(result.gain) == 4
    (tmp_path / "report.md").unlink()
    proc = subprocess.run([sys.executable, "-m", "harness", "report", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0 and "prompt-tuning" in (tmp_path / "report.md").read_text()


def test_other_settings_are_refused_in_the_same_store(tiny_dir, tmp_path):
    console = Console(quiet=True)
    run_transfer(_config(tiny_dir, tmp_path, limit=2), console, "first")
    with pytest.raises(Exception, match="target_n differ"):
        run_transfer(_config(tiny_dir, tmp_path, limit=2, target_n=3), console, "second")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "add-1d"], "--tasks needs at least two tasks"),
        (["--tasks", "add-1d,sub-1d", "--source-n", "60"], "--source-n 60 + --target-n 10 needs that many"),
        (["--tasks", "add-2d,presidents"], "presidents (--tasks)"),
        (["--method", "probe"], "unknown method 'probe' (--method)"),
        (["--tasks", "add-1d,sub-1d", "--target-sizes", "5,5000"], "--target-sizes 5000 is more than the"),
        (["--tasks", "add-1d,sub-1d", "--target-sizes", "0,5"], "--target-sizes must be at least 1, not 0"),
        (["--target-sizes", "5,x"], "--target-sizes expects comma-separated integers"),
    ],
)
def test_cli_errors_are_one_line(args, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "transfer", "--out", str(tmp_path), *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_target_sizes_add_b_alone_runs_that_read_gains_in_examples(tiny_dir, tmp_path):
    run_transfer(_config(tiny_dir, tmp_path, limit=2), Console(quiet=True), "first")
    before = _stored(tmp_path)
    run_transfer(_config(tiny_dir, tmp_path, limit=2, target_sizes=[2, 4, 8]), Console(quiet=True), "more sizes")
    after = _stored(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # the same store: nothing redone or changed
    added = sorted({k[:4] for k in after if k not in before})
    assert added == [(t, "only", n, 0) for t in ("add-1d", "sub-1d") for n in (2, 8)]  # B alone at the new sizes
    store = Store(tmp_path, create=False)
    units = sorted(u for (m, u) in store.unit_infos(str(tiny_dir), "add-1d") if u.startswith("only/"))
    (result,) = load(store)
    store.close()
    assert units == ["only/n2/s0", "only/n4/s0", "only/n8/s0"]  # n4: --target-n's own unit, run once
    assert result.target_n == 4 and sorted(result.curve["add-1d"]) == [2, 4, 8]
    assert sorted(result.rise) == ["add-1d", "sub-1d"] and len(result.gain) == 4
    assert set(result.transferred) == {(a, b) for a, b in result.gain if result.learns(b)}  # D_T where B learns
    assert "## Effective data transferred" in (tmp_path / "report.md").read_text()


def test_target_sizes_is_documented_in_help():
    proc = subprocess.run([sys.executable, "-m", "harness", "transfer", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--target-sizes" in proc.stdout and "effective data" in proc.stdout


@pytest.mark.slow
def test_source_training_on_addition_teaches_addition_on_smollm2(smollm2, tmp_path):
    """Behaviour on a real model: 64 addition problems and 20 bias-only steps lift SmolLM2-135M's exact match on
    unseen additions well above what 8 problems and 4 steps give; the matrix is complete."""
    cfg = TransferConfig(
        ["smollm2-135m"], ["add-2d", "sub-2d"], source_n=64, target_n=8, source_steps=20, target_steps=4,
        source_eval_every=10, seeds=1, limit=20, out=str(tmp_path),
    )  # fmt: skip
    run_transfer(cfg, Console(quiet=True), "test")
    (result,) = load(Store(tmp_path, create=False))
    assert len(result.gain) == 4 and result.kept_steps["add-2d"] == [(20, 20)]
    assert result.source["add-2d"].value >= result.only["add-2d"].value + 0.2


def _labelled_task(n: int) -> TransferTask:
    spec = TaskSpec("hand", labels=("no", "yes"))
    train = [Example(f"t{i}", {"premise": f"p{i}", "hypothesis": f"h{i}"}, i % 2, f"t{i}") for i in range(n)]
    return TransferTask(spec, None, [], train)  # type: ignore[arg-type]


def test_shuffled_sample_permutes_the_gold_answers_of_the_same_inputs(tiny_dir, tmp_path):
    task = _labelled_task(40)
    sample, _ = task.samples(12, 4, seed=3)
    shuffled = task.shuffled_sample(12, 4, seed=3)
    assert [e.fields for e in shuffled] == [e.fields for e in sample]  # the same inputs, in the same order
    assert sorted(e.label for e in shuffled) == sorted(e.label for e in sample)  # the same answer mix
    assert [e.label for e in shuffled] != [e.label for e in sample]  # but not the same mapping
    assert shuffled == task.shuffled_sample(12, 4, seed=3)  # seeded

    from harness.methods.presets import load_preset
    from harness.transfer import plan

    cfg = _config(tiny_dir, tmp_path)
    tasks, _ = plan(cfg, load_preset("bitfit", None, []))
    sample, _ = tasks[0].samples(8, 4, seed=0)
    shuffled = tasks[0].shuffled_sample(8, 4, seed=0)
    answers = [e.fields["answer"] for e in sample]
    moved = [e.fields["answer"] for e in shuffled]
    assert sorted(moved) == sorted(answers) and moved != answers  # generated answers: permuted across examples
    questions = [{k: v for k, v in e.fields.items() if k != "answer"} for e in sample]
    assert [{k: v for k, v in e.fields.items() if k != "answer"} for e in shuffled] == questions


def test_transfer_beyond_format_is_the_paired_difference_of_the_two_gains(tmp_path):
    from harness.metrics import BOOTSTRAP_SEED, N_BOOTSTRAP
    from harness.report_transfer import pair_claims, render

    store = Store(tmp_path)
    store.set_meta("kind", KIND)
    store.set_meta("tasks", ["rte", "copa"])
    store.put_model("m", 1000, {})
    for task in ("rte", "copa"):
        store.put_task("m", task, {})
    _put(store, "rte", "only", 0, [0, 0, 0, 0, 1, 0])
    _put(store, "rte", "from:copa", 0, [1, 1, 1, 0, 1, 0])
    _put(store, "rte", "from:copa~shuffled", 0, [1, 0, 0, 0, 1, 1])
    _put(store, "copa", "only", 0, [0] * 8)
    _put(store, "copa", "from:rte", 0, [1] * 8)
    _put(store, "copa", "from:rte~shuffled", 0, [0] * 8)
    _put(store, "rte", "source-shuffled", 0, [1, 0, 1, 0, 0, 0], {"best_step": 5, "steps_run": 10})
    (result,) = load(store)
    store.close()
    assert result.gain[("copa", "rte")].value == pytest.approx(3 / 6)
    assert result.shuffled_gain[("copa", "rte")].value == pytest.approx(2 / 6)
    beyond = result.beyond_format[("copa", "rte")]
    assert beyond.value == pytest.approx(1 / 6)  # (0 + 1 + 1 + 0 + 0 - 1) / 6
    # by hand: rte's own bootstrap weights (seeded by its name), the weighted mean of the differences per replicate
    rng = np.random.default_rng(BOOTSTRAP_SEED + zlib.crc32(b"rte"))
    weights = rng.multinomial(6, np.full(6, 1 / 6), size=N_BOOTSTRAP)
    replicates = weights @ np.array([0, 1, 1, 0, 0, -1]) / 6
    assert beyond.ci == pytest.approx(tuple(np.percentile(replicates, [2.5, 97.5])))
    assert beyond.ci[0] < 0 < beyond.ci[1]
    assert beyond.samples == pytest.approx(
        result.gain[("copa", "rte")].samples - result.shuffled_gain[("copa", "rte")].samples
    )  # paired: replicate by replicate on the same resamples
    assert list(result.shuffled_source) == ["rte"]
    assert result.shuffled_source["rte"].value == pytest.approx(2 / 6)
    claims = pair_claims(result)
    assert result.gain[("copa", "rte")].ci[0] > 0  # the gain alone would count as transfer ...
    assert claims["copa -> rte"].answer == "format effect"  # ... but shuffled copa gives most of it
    assert claims["rte -> copa"].answer == "helped"  # beyond format: +100, interval above 0

    render(tmp_path)
    report = (tmp_path / "report.md").read_text()
    lo, hi = beyond.ci
    row = f"| copa -> rte | +50.0 [{result.gain[('copa', 'rte')].ci[0] * 100:+.1f}, "
    assert "### Transfer beyond format" in report and row in report
    assert f"+16.7 [{lo * 100:+.1f}, {hi * 100:+.1f}] |" in report
    assert "format effect on 1" in report and "helped on 1" in report
    csv = pd.read_csv(tmp_path / "transfer.csv")
    got = csv[(csv.quantity == "beyond_format") & (csv.source == "copa")].iloc[0]
    assert (got.value, got.ci_low, got.ci_high, got.n) == pytest.approx((1 / 6, lo, hi, 6), rel=1e-5)  # %.6g
    assert set(csv.quantity) >= {"gain_shuffled", "after_source_shuffled"}


def test_shuffled_sources_add_control_units_to_a_store(tiny_dir, tmp_path, monkeypatch):
    from harness.methods.presets import load_preset
    from harness.transfer import plan, state_path

    console = Console(quiet=True)
    run_transfer(_config(tiny_dir, tmp_path, limit=2), console, "first")
    before, plain = _stored(tmp_path), (tmp_path / "report.md").read_text()
    trained = []
    real_train = Runner._train_and_score

    def spy(self, task, sample, start, seed, brief, score=True):
        if not brief:
            trained.append((task.spec.name, sample))
        return real_train(self, task, sample, start, seed, brief, score)

    monkeypatch.setattr(Runner, "_train_and_score", spy)
    run_transfer(_config(tiny_dir, tmp_path, limit=2, shuffled_sources=True), console, "with the control")
    after = _stored(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing redone or changed
    added = sorted({k[:2] for k in after if k not in before})
    expected = [(t, "source-shuffled") for t in ("add-1d", "sub-1d")]
    expected += [(b, f"from:{a}~shuffled") for a in ("add-1d", "sub-1d") for b in ("add-1d", "sub-1d")]
    assert added == sorted(expected)
    assert [name for name, _ in trained] == ["add-1d", "sub-1d"]  # each shuffled source trained once
    cfg = _config(tiny_dir, tmp_path, limit=2)
    tasks, _ = plan(cfg, load_preset("bitfit", None, []))
    assert [sample for _, sample in trained] == [t.shuffled_sample(8, 4, 0) for t in tasks]  # on shuffled answers
    store = Store(tmp_path, create=False)
    (result,) = load(store)
    store.close()
    assert state_path(tmp_path, str(tiny_dir), "bitfit", "add-1d~shuffled", 8, 0).is_file()
    assert set(result.beyond_format) == set(result.shuffled_gain) == set(result.gain)
    assert "beyond format" not in plain and "### Transfer beyond format" in (tmp_path / "report.md").read_text()
