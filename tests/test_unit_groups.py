"""Small prompt units scored together (Engine.score_lists through prompt.run_group) store the same results as one
unit at a time ($HARNESS_GROUP_UNITS=0), each unit as soon as it is scored, and a run killed mid-group resumes."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from harness import catalog
from harness import engine as engine_module
from harness.config import EvalConfig
from harness.errors import Interrupted
from harness.evaluate import GROUP_UNITS_ENV, run_eval
from harness.methods import prompt as prompt_method
from harness.store import Store


def _config(model, out, batch_size: int | None = None) -> EvalConfig:
    """CB (calibrated, abstract labels) and COPA (per-example choices): zero- and 2-shot, two demo seeds, every
    variant, train scores of the gold prompts: about 80 units of 8 eval examples, a few groups."""
    return EvalConfig(
        models=[str(model)],
        tasks=["cb", "copa"],
        methods=["prompt"],
        shots=[0, 2],
        seeds=2,
        limit=8,
        variants=["gold", "calibrated", "random_labels", "control", "abstract_labels"],
        batch_size=batch_size,
        out=str(out),
    )


def _run(cfg: EvalConfig) -> None:
    try:
        run_eval(cfg, Console(quiet=True), "harness eval (test)")
    finally:  # the report remembers the stored task specs for the rest of the process: the next run reads the files
        catalog._STORED.clear()


def _stored(out) -> tuple[dict, dict]:
    store = Store(out)
    try:
        model = store.models()[0][0]
        records = {(task, *key): rs for task in store.tasks(model) for key, rs in store.records(model, task).items()}
        infos = {
            (task, *key): info for task in store.tasks(model) for key, info in store.unit_infos(model, task).items()
        }
    finally:
        store.close()
    return records, infos


def _assert_same(reference, grouped, exact: bool = True) -> None:
    """Every per-example score the same (`exact`) or within 1e-5 nats, the same predictions, diagnostics and train
    scores."""
    (ref_records, ref_infos), (records, infos) = reference, grouped
    assert records.keys() == ref_records.keys()
    assert infos == ref_infos  # variants and train-score accuracies (argmax) are exact
    for key, want in ref_records.items():
        have = records[key]
        assert [r.example_id for r in have] == [r.example_id for r in want], key
        for a, b in zip(want, have):
            assert np.abs(np.subtract(a.logprobs, b.logprobs)).max() <= (0 if exact else 1e-5), (key, a.example_id)
            assert np.argmax(a.logprobs) == np.argmax(b.logprobs), (key, a.example_id)
            assert (a.gold, a.n_tokens, a.gold_rank, a.top1_valid) == (b.gold, b.n_tokens, b.gold_rank, b.top1_valid)
            assert a.valid_mass == pytest.approx(b.valid_mass, abs=1e-5)


def _environment(mp: pytest.MonkeyPatch, superglue_dir, cache) -> None:
    mp.setenv("HARNESS_DATA_DIR", str(superglue_dir))
    mp.setenv("HARNESS_CACHE", str(cache))
    mp.setenv("HARNESS_NO_PROGRESS", "1")


@pytest.fixture(scope="module")
def reference(tiny_dir, superglue_dir, tmp_path_factory):
    """The unit-at-a-time run's stored results (records, unit infos)."""
    out = tmp_path_factory.mktemp("alone")
    groups: list[int] = []
    with pytest.MonkeyPatch.context() as mp:
        _environment(mp, superglue_dir, out / "cache")
        mp.setenv(GROUP_UNITS_ENV, "0")
        mp.setattr(prompt_method, "run_group", lambda units, *a, **k: groups.append(len(units)))
        _run(_config(tiny_dir, out))
    assert not groups
    return _stored(out)


@pytest.mark.parametrize(("mode", "batch_size"), [("1", None), ("pack", None), ("pack", 16)])
def test_grouped_units_store_the_scores_of_one_unit_at_a_time(
    tiny_dir, superglue_dir, reference, tmp_path, monkeypatch, mode, batch_size
):
    """Grouped (the default): bit for bit the scores of one unit at a time; packed: within 1e-5 nats."""
    _environment(monkeypatch, superglue_dir, tmp_path / "cache")
    monkeypatch.setenv(GROUP_UNITS_ENV, mode)
    run_group = prompt_method.run_group
    groups: list[list[int]] = []  # per group: the decoder's token count at each unit's storing

    def spy(units, ctx, done, pack=False):
        groups.append([])
        run_group(units, ctx, lambda *unit: (groups[-1].append(ctx.engine.tokens_computed), done(*unit)), pack)

    stacked: list[int] = []
    stack = engine_module._stack_caches
    monkeypatch.setattr(prompt_method, "run_group", spy)
    monkeypatch.setattr(engine_module, "_stack_caches", lambda c, s: stacked.append(len(c)) or stack(c, s))
    _run(_config(tiny_dir, tmp_path / "grouped", batch_size))
    _assert_same(reference, _stored(tmp_path / "grouped"), exact=mode == "1")
    assert sum(map(len, groups)) > 0.9 * len(reference[1])  # nearly all units ran in groups
    assert max(map(len, groups)) > 5
    # units are stored while their group runs, not all at its end
    assert any(len(set(stored)) > 1 for stored in groups)
    if batch_size:  # room for rows of several prefixes in one batch
        assert stacked
    if mode == "1":
        assert not stacked


def test_a_kill_mid_group_loses_only_the_units_not_yet_stored(
    tiny_dir, superglue_dir, reference, tmp_path, monkeypatch
):
    _environment(monkeypatch, superglue_dir, tmp_path / "cache")
    put_unit = Store.put_unit
    calls: list[int] = []

    def interrupted(self, *args, **kwargs):
        if len(calls) == 3:  # Ctrl-C while the 4th unit of the first group would be stored
            raise KeyboardInterrupt
        calls.append(1)
        put_unit(self, *args, **kwargs)

    monkeypatch.setattr(Store, "put_unit", interrupted)
    out = tmp_path / "killed"
    with pytest.raises(Interrupted, match=f"3 of {len(reference[1])} units .* are stored"):
        _run(_config(tiny_dir, out))
    monkeypatch.setattr(Store, "put_unit", put_unit)
    assert len(_stored(out)[1]) == 3
    _run(_config(tiny_dir, out))  # resumes: the 3 stored units are kept, the rest scored
    _assert_same(reference, _stored(out))
