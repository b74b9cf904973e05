"""The trained methods (ptune, bitfit, probe) and their control tasks.

Behaviour on the real SmolLM2-135M, on a task generated so that the label is linearly decodable (is the noun an
animal or a fruit?): the probe reaches 95% while its control task stays near chance, ptune and bitfit each beat
their control task. Plumbing on the tiny random model: BitFit's added biases leave the logits unchanged at step 0
and are removed afterwards; cached features make a probe rerun skip the model; presets reject bad keys and types.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from harness.errors import HarnessError
from harness.features import FeatureCache
from harness.methods import bitfit
from harness.methods.base import TrainedUnit, control_examples, split_holdout, trained_unit_examples
from harness.methods.presets import check_overrides, load_preset
from harness.methods.probe import run_probe_unit
from harness.methods.training import ChoiceScorer, _evaluate, fit_items, train, unit_converged
from harness.methods.tuning import run_tuning_unit
from harness.metrics import accuracy
from harness.prompts import load_prompts
from harness.tasks import Example, TaskSpec

ANIMALS = "dog cat horse cow lion tiger sheep goat rabbit mouse bear wolf fox deer monkey elephant".split()
FRUITS = (
    "apple banana orange grape pear peach cherry lemon mango plum melon strawberry kiwi apricot lime coconut".split()
)
TRAIN_FRAMES = ["I saw a picture of the {}", "My friend talked about the {}"]
EVAL_FRAMES = ["Yesterday we looked at the {}", "There is a short story about the {}", "She pointed at the {}"]
CATEGORY = TaskSpec("category", ("animal", "fruit"), ("acc",))
PROMPTS = """task: category
templates:
  - name: lm-eval
    text: "{{sentence}}.\\nQuestion: Is it an animal or a fruit?\\nAnswer:"
    choices: ["animal", "fruit"]
controls:
  - name: input-only
    text: "{{sentence}}"
    choices: ["animal", "fruit"]
"""


def _examples(frames: list[str], prefix: str) -> list[Example]:
    out = []
    for f, frame in enumerate(frames):
        for label, words in enumerate((ANIMALS, FRUITS)):
            for word in words:
                ex_id = f"{prefix}{f}-{word}"
                out.append(Example(ex_id, {"sentence": frame.format(word)}, label, ex_id))
    random.Random(prefix).shuffle(out)
    return out


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prompts")
    (folder / "category.yaml").write_text(PROMPTS, encoding="utf-8")
    return load_prompts("category", folder), _examples(TRAIN_FRAMES, "t"), _examples(EVAL_FRAMES, "e")


# ---------------------------------------------------------------- data handling
def test_control_task_permutes_labels_and_keeps_inputs(category):
    _, train, _ = category
    control = control_examples(train, 0, "train")
    assert [e.fields for e in control] == [e.fields for e in train]
    assert sorted(e.label for e in control) == sorted(e.label for e in train)  # same label distribution
    agree = np.mean([a.label == b.label for a, b in zip(control, train)])
    assert 0.2 < agree < 0.8  # permuted: about half the labels change on a balanced binary task
    assert [e.label for e in control_examples(train, 0, "train")] == [e.label for e in control]  # seeded
    assert [e.label for e in control_examples(train, 1, "train")] != [e.label for e in control]


def test_holdout_split_is_disjoint_and_seeded(category):
    _, train, _ = category
    fit, held = split_holdout(train[:32], 0.25, seed=3)
    assert len(held) == 8 and len(fit) == 24
    assert not {e.id for e in fit} & {e.id for e in held}
    assert split_holdout(train[:32], 0.25, seed=3)[1] == held
    with pytest.raises(HarnessError):
        split_holdout(train[:1], 0.25, seed=0)


# ---------------------------------------------------------------- BitFit keeps the function at step 0
def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_bitfit_added_biases_leave_logits_unchanged_then_are_removed(tiny_lm):
    model, tokenizer = tiny_lm
    ids = torch.tensor([tokenizer.encode("The cat sat on the mat because it was tired.")])
    before = _logits(model, ids)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with bitfit.bias_only(model) as (params, info):
        assert info["added_biases"] == info["linear_layers"] == 2 * 7  # q, k, v, o, gate, up, down per layer
        assert all(p.requires_grad and not p.any() for p in params)
        assert sum(p.requires_grad for p in model.parameters()) == len(params)
        assert torch.equal(_logits(model, ids), before)
        with torch.no_grad():
            params[0].add_(1.0)  # a trained bias changes the function...
        assert not torch.equal(_logits(model, ids), before)
    # ...and leaving the context puts the model back exactly as it was
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert torch.equal(_logits(model, ids), before)


def test_bitfit_step0_identical_on_smollm2(smollm2):
    ids = torch.tensor([smollm2.tokenizer.encode("Paris is the capital of France.")])
    before = _logits(smollm2.model, ids)
    with bitfit.bias_only(smollm2.model) as (params, info):
        assert info["added_biases"] == 30 * 7
        assert sum(p.numel() for p in params) == 30 * (576 * 3 + 192 * 2 + 1536 * 2)  # q,o,down + k,v + gate,up
        assert torch.equal(_logits(smollm2.model, ids), before)
    assert torch.equal(_logits(smollm2.model, ids), before)


# ---------------------------------------------------------------- presets
def test_presets_load_and_reject_bad_keys_and_types(tmp_path):
    shipped = load_preset("ptune")
    assert shipped.variants == ["prompt-tuning", "p-tuning"] and shipped.num_virtual_tokens == 20
    assert load_preset("ptune", overrides=["ptune.max_steps=7", "bitfit.max_steps=3"]).max_steps == 7
    assert load_preset("ptune", overrides=["ptune.steps=9"]).max_steps == 9  # the old name still works
    assert load_preset("probe", overrides=["probe.layers=[2, 5]"]).layers == [2, 5]

    (tmp_path / "bitfit.yaml").write_text("learning_rate: 0.01\nsteps: 5\nwarmup: 3\n")
    with pytest.raises(HarnessError, match=r"bitfit.yaml: unknown key 'warmup'"):
        load_preset("bitfit", tmp_path)
    (tmp_path / "bitfit.yaml").write_text("learning_rate: fast\n")
    with pytest.raises(HarnessError, match=r"bitfit.learning_rate must be a number, not 'fast'"):
        load_preset("bitfit", tmp_path)
    with pytest.raises(HarnessError, match=r"--set ptune.max_steps=many: ptune.max_steps must be an integer"):
        load_preset("ptune", overrides=["ptune.max_steps=many"])
    with pytest.raises(HarnessError, match=r"ptune.max_seconds must be positive"):
        load_preset("ptune", overrides=["ptune.max_seconds=0"])
    with pytest.raises(HarnessError, match=r"unknown key 'depth' for probe"):
        check_overrides(["probe.depth=3"])
    with pytest.raises(HarnessError, match=r"expected METHOD.KEY=VALUE"):
        check_overrides(["steps=3"])
    with pytest.raises(HarnessError, match=r"ptune.variants must be a list drawn from"):
        check_overrides(["ptune.variants=[lora]"])


# ---------------------------------------------------------------- probe: cache, then behaviour on a real model
def test_probe_rerun_reads_cached_features_and_runs_no_model(smollm2, category, tmp_path):
    from harness.engine import Engine

    prompts, train, evals = category
    preset = load_preset("probe", overrides=["probe.layers=[4, 8]"])
    cache = FeatureCache(tmp_path / "features")
    unit = TrainedUnit("probe", "probe", "input-only", 16, 0)
    engine = Engine(smollm2.model, smollm2.tokenizer)
    first, info = run_probe_unit(unit, CATEGORY, prompts, engine, "smollm2", evals[:20], train, preset, cache)
    assert info["features_computed"] is True
    assert len(list((tmp_path / "features").rglob("*.safetensors"))) == 2  # train and val
    # No engine at all: only the cache can provide the states; the results are the same.
    again, info2 = run_probe_unit(unit, CATEGORY, prompts, None, "smollm2", evals[:20], train, preset, cache)
    assert info2["features_computed"] is False
    assert [r.logprobs for r in again[0].records] == [r.logprobs for r in first[0].records]
    # A different example set is not served stale features.
    with pytest.raises(RuntimeError, match="not cached"):
        run_probe_unit(unit, CATEGORY, prompts, None, "smollm2", evals[20:30], train, preset, cache)


@pytest.mark.slow
def test_probe_decodes_a_linear_label_and_its_control_stays_near_chance(smollm2, category, tmp_path):
    from harness.engine import Engine

    prompts, train, evals = category
    preset = load_preset("probe")
    cache = FeatureCache(tmp_path / "features")
    engine = Engine(smollm2.model, smollm2.tokenizer)
    task_acc, control_acc = [], []
    for seed in range(3):
        for control, sink in ((False, task_acc), (True, control_acc)):
            unit = TrainedUnit("probe", "probe", "input-only", 32, seed, control)
            (out,), info = run_probe_unit(unit, CATEGORY, prompts, engine, "smollm2", evals, train, preset, cache)
            sink.append(accuracy(out.records))
            assert len(info["cv_curve"]) == len(info["eval_curve"]) == 31  # embeddings + 30 layers
    print(f"\nprobe: task {task_acc}, control {control_acc} (eval n={len(evals)})")
    assert min(task_acc) >= 0.95
    assert max(abs(a - 0.5) for a in control_acc) <= 0.2  # near chance on a balanced binary task


@pytest.mark.slow
@pytest.mark.parametrize(("method", "variant"), [("ptune", "prompt-tuning"), ("bitfit", "bitfit")])
def test_tuned_methods_beat_their_control_task(smollm2, category, method, variant):
    prompts, train, evals = category
    preset = load_preset(method, overrides=[f"{method}.max_steps=16"])
    results = {}
    for control in (False, True):
        unit = TrainedUnit(method, variant, "lm-eval", 32, 0, control)
        (out,), info = run_tuning_unit(unit, CATEGORY, prompts, smollm2.model, smollm2.tokenizer, evals, train, preset)
        results[control] = accuracy(out.records)
        assert info["n_fit"] == 24 and info["n_holdout"] == 8
        assert info["trained_params"] > 0
    print(f"\n{method}/{variant}: task {results[False]:.3f}, control {results[True]:.3f}")
    assert results[False] >= results[True] + 0.15
    assert results[False] >= 0.7


# ---------------------------------------------------------------- as a user runs it
def test_cli_trained_methods_end_to_end_and_bad_input(tiny_dir, env, tmp_path):
    import pandas as pd

    from tests.test_cli import _count, harness

    out = tmp_path / "run"
    args = ["eval", "--model", str(tiny_dir), "--tasks", "rte", "--limit", "4", "--seeds", "1", "--out", str(out)]
    fast = ["--set", "ptune.max_steps=2", "--set", "bitfit.max_steps=2", "--set", "ptune.eval_every=1"]
    run = harness(*args, "--methods", "ptune,bitfit,probe", "--train-sizes", "8", *fast, env=env)
    assert run.returncode == 0, run.stderr
    summary = pd.read_csv(out / "summary.csv")
    trained = summary[summary.method.isin(["ptune", "bitfit", "probe"])]
    assert set(trained.variant) == {
        "prompt-tuning",
        "prompt-tuning-control",
        "p-tuning",
        "p-tuning-control",
        "bitfit",
        "bitfit-control",
        "probe",
        "probe-control",
        "probe-random-init",  # the random-init baseline runs for the probe by default
    }
    assert set(trained.shots) == {8}
    # selectivity = score - random-init score, so only the probe has it by default; permuted labels are no baseline
    selectivity = trained[trained.metric == "selectivity_acc"]
    assert set(selectivity.variant) == {"probe"}
    for variant, row in selectivity.set_index("variant").iterrows():
        task = trained[(trained.variant == variant) & (trained.metric == "acc") & (trained.template == "mean")]
        base = trained[
            (trained.variant == f"{variant}-random-init") & (trained.metric == "acc") & (trained.template == "mean")
        ]
        assert row.value == pytest.approx(task.value.item() - base.value.item(), abs=1e-5)
    report = (out / "report.md").read_text()
    assert "### Trained methods (ecological)" in report and "probe accuracy by layer" in report
    assert "zero-init biases added to all 14 linear layers" in report
    units = _count(out / "results.db", "units")
    records = _count(out / "results.db", "records")
    assert units == 9

    rerun = harness(*args, "--methods", "ptune,bitfit,probe", "--train-sizes", "8", *fast, env=env)
    assert rerun.returncode == 0 and "all 9 units already stored" in rerun.stderr

    bad = [
        (
            ["--methods", "probe", "--train-sizes", "64"],
            "train size 64 (--train-sizes) is larger than rte's train split",
        ),
        (
            ["--methods", "bitfit", "--set", "bitfit.max_steps=3"],
            "holds bitfit results made with another preset (max_steps",
        ),
        (["--methods", "probe", "--train-sizes", "8,lots"], "--train-sizes expects comma-separated integers or 'all'"),
        (["--methods", "ptune", "--set", "ptune.depth=2"], "unknown key 'depth' for ptune"),
        (["--methods", "ptune", "--set", "ptune.learning_rate=high"], "ptune.learning_rate must be a number"),
        (
            ["--methods", "bitfit", "--tasks", "boolq", "--train-set", "superglue"],
            "boolq: --methods bitfit needs a train split",
        ),
    ]
    for extra, message in bad:
        failed = harness(*args, *fast, *extra, env=env)
        assert failed.returncode == 2, (extra, failed.stderr)
        assert message in failed.stderr, failed.stderr
        assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert _count(out / "results.db", "units") == units and _count(out / "results.db", "records") == records


@pytest.mark.parametrize("n_classes", [2, 3])
def test_probe_log_probabilities_match_sklearn_and_stay_finite(n_classes):
    from harness.methods.probe import _pipeline, fit_predict

    preset = dataclasses.replace(load_preset("probe"), C=1.0, max_iter=2000)
    rng = np.random.default_rng(0)
    y = np.arange(60) % n_classes
    x = rng.normal(size=(60, 5)) + y[:, None] * 0.8
    x_eval = rng.normal(size=(20, 5)) + (np.arange(20) % n_classes)[:, None] * 0.8
    got = fit_predict(preset, x, y, x_eval, n_classes)
    want = _pipeline(preset).fit(x, y).predict_log_proba(x_eval)
    assert np.allclose(got, want, atol=1e-8)
    far = fit_predict(preset, x, y, x_eval * 1e4, n_classes)  # probabilities that underflow to 0 in sklearn
    assert np.isfinite(far).all()


# ---------------------------------------------------------------- training until convergence (tiny model)
def _bitfit_run(tiny_lm, category, fit_label=None, **preset):
    """Train BitFit on 24 fit / 8 held-out examples (`fit_label`: every fit example relabelled to it); return
    (result, kept biases, held-out loss recomputed at the kept state, fit loss recomputed at the kept state)."""
    model, tokenizer = tiny_lm
    prompts, train_examples, _ = category
    template = prompts.get("lm-eval")
    fit, held = split_holdout(train_examples[:32], 0.25, seed=0)
    if fit_label is not None:
        fit = [dataclasses.replace(e, label=fit_label) for e in fit]
    full = dataclasses.replace(load_preset("bitfit"), **preset)
    with bitfit.bias_only(model) as (params, _):
        scorer = ChoiceScorer(model, tokenizer)
        fit_items_, held_items = fit_items(scorer, template, fit), fit_items(scorer, template, held)
        result = train(scorer, params, fit_items_, held_items, full, seed=0)
        kept = [p.detach().clone() for p in params]
        recomputed = _evaluate(scorer, held_items, full.objective, full.batch_size)[0]
        train_loss = _evaluate(scorer, fit_items_, full.objective, full.batch_size)[0]
    return result, kept, recomputed, train_loss


def test_patience_stops_the_run_before_max_steps_and_marks_it_converged(tiny_lm, category):
    result, _, recomputed, train_loss = _bitfit_run(
        tiny_lm, category, learning_rate=0.5, max_steps=200, eval_every=1, patience=2, max_seconds=600.0
    )
    assert result.stopped_by == "patience" and result.converged is True
    assert result.steps_run < 200
    assert result.steps_run == result.best_step + 2  # two checks without a better held-out loss, then stop
    losses = [loss for step, loss, _ in result.curve]
    assert result.holdout_loss == min(losses) and recomputed == pytest.approx(result.holdout_loss, abs=1e-6)
    assert train_loss == pytest.approx(result.train_loss, abs=1e-6)
    assert unit_converged({"converged": result.converged}) is True


def test_a_capped_run_is_not_converged(tiny_lm, category):
    by_steps, *_ = _bitfit_run(tiny_lm, category, max_steps=2, eval_every=1, patience=50)
    assert (by_steps.steps_run, by_steps.stopped_by, by_steps.converged) == (2, "max_steps", False)
    by_time, *_ = _bitfit_run(tiny_lm, category, max_steps=200, eval_every=50, patience=50, max_seconds=1e-6)
    assert (by_time.steps_run, by_time.stopped_by, by_time.converged) == (1, "max_seconds", False)
    assert [step for step, _, _ in by_time.curve] == [0, 1]  # the held-out loss is checked at the time cap
    assert unit_converged({"converged": False}) is False
    assert unit_converged({"cv_curve": []}) is None  # a probe unit, or a store from before


def test_the_kept_state_is_the_best_held_out_step_not_the_last(tiny_lm, category):
    # a large learning rate: the held-out loss stops improving and the run ends by patience two checks later, so
    # the last state is not the kept one
    settings = dict(learning_rate=0.5, max_steps=200, eval_every=1, patience=2)
    result, kept, recomputed, _ = _bitfit_run(tiny_lm, category, **settings)
    assert 0 < result.best_step < result.steps_run
    losses = dict((step, loss) for step, loss, _ in result.curve)
    assert losses[result.steps_run] >= result.holdout_loss - 1e-6 and result.holdout_loss == min(losses.values())
    assert recomputed == pytest.approx(result.holdout_loss, abs=1e-6)
    # the same run stopped at best_step (same seed, same batches) ends in exactly the kept parameters
    settings |= {"max_steps": result.best_step, "patience": 1000}
    again, snapshot, _, _ = _bitfit_run(tiny_lm, category, **settings)
    assert again.steps_run == again.best_step == result.best_step
    assert all(torch.equal(a, b) for a, b in zip(kept, snapshot))


def test_tuning_unit_info_records_convergence(tiny_lm, category):
    model, tokenizer = tiny_lm
    prompts, train_examples, evals = category
    preset = dataclasses.replace(load_preset("bitfit"), max_steps=3, eval_every=1, patience=10)
    unit = TrainedUnit("bitfit", "bitfit", "lm-eval", 16, 0)
    _, info = run_tuning_unit(unit, CATEGORY, prompts, model, tokenizer, evals[:4], train_examples, preset)
    assert (info["steps_run"], info["stopped_by"], info["converged"]) == (3, "max_steps", False)
    assert info["train_loss"] > 0 and info["holdout_loss"] > 0 and 0 <= info["best_step"] <= 3
    assert unit_converged(info) is False


@pytest.mark.parametrize(("method", "variant", "virtual"), [("bitfit", "bitfit", 0), ("ptune", "prompt-tuning", 3)])
def test_tuning_unit_info_counts_the_work_of_each_phase(tiny_lm, category, method, variant, virtual):
    """The unit's `work`: one step over all 12 fit items (forward + backward), the held-out checks at steps 0 and 1
    and the fit-loss pass (no grad), then the eval records; each row's tokens and causal attention pairs, counted
    as the passes ran. A soft prompt runs before every row in a training pass, once per pass without gradients."""
    model, tokenizer = tiny_lm
    prompts, train_examples, evals = category
    preset = dataclasses.replace(load_preset(method), max_steps=1, batch_size=12, eval_every=1, patience=10)
    if method == "ptune":
        preset = dataclasses.replace(preset, variants=[variant], num_virtual_tokens=virtual)
    unit = TrainedUnit(method, variant, "lm-eval", 16, 0)
    _, info = run_tuning_unit(unit, CATEGORY, prompts, model, tokenizer, evals[:5], train_examples, preset)
    fit, held = split_holdout(trained_unit_examples(unit, train_examples, [])[0], preset.holdout, unit.seed)
    scorer = ChoiceScorer(model, tokenizer)
    template = prompts.get("lm-eval")

    def counts(examples, grad=False):  # (tokens, pairs) of scoring the examples' items in their batches
        items = scorer.items(template, examples)
        rows = []  # each item's rows: one, or one per choice
        for it in items:
            one = all(len(c) == 1 for c in it.conts)
            rows += [len(it.ctx)] if one else [len(it.ctx) + len(c) for c in it.conts]
        if grad:
            return sum(virtual + n for n in rows), sum((virtual + n) * (virtual + n + 1) // 2 for n in rows)
        passes = len(scorer.batches(items, preset.batch_size))
        shared = virtual * (virtual + 1) // 2  # the prompt's own pairs, once per pass
        return sum(rows) + virtual * passes, sum(n * virtual + n * (n + 1) // 2 for n in rows) + shared * passes

    checks = [counts(held), counts(held), counts(fit)]
    phases = {"train": counts(fit, grad=True), "checks": tuple(map(sum, zip(*checks))), "eval": counts(evals[:5])}
    assert set(info["work"]) == set(phases)
    for phase, (tokens, pairs) in phases.items():
        work = info["work"][phase]
        assert (work["tokens"], work["pairs"]) == (tokens, pairs), phase
        assert work["positions"] >= work["tokens"] and work["seconds"] > 0


@pytest.mark.parametrize("variant", ["prompt-tuning", "p-tuning"])
def test_soft_prompt_cached_in_passes_without_gradients_gives_the_same_unit(tiny_lm, category, variant, monkeypatch):
    """Held-out checks and eval records with the soft prompt's keys and values computed once per pass: the same
    training run (steps, kept step) and the same stored records as with the prompt run before every row, up to
    float rounding (1e-5 nats), for less work."""
    model, tokenizer = tiny_lm
    prompts, train_examples, evals = category
    preset = dataclasses.replace(
        load_preset("ptune"), variants=[variant], num_virtual_tokens=4, max_steps=4, eval_every=1, patience=10
    )
    unit = TrainedUnit("ptune", variant, "lm-eval", 16, 0)
    runs = {}
    for cached in (True, False):
        monkeypatch.setattr(ChoiceScorer, "cache_prompt", cached)
        runs[cached] = run_tuning_unit(unit, CATEGORY, prompts, model, tokenizer, evals[:12], train_examples, preset)
    (new, new_info), (old, old_info) = runs[True], runs[False]
    for key in ("steps_run", "best_step", "stopped_by"):
        assert new_info[key] == old_info[key], key
    assert [s for s, _, _ in new_info["holdout_curve"]] == [s for s, _, _ in old_info["holdout_curve"]]
    for a, b in zip(new_info["holdout_curve"], old_info["holdout_curve"]):
        assert a[1] == pytest.approx(b[1], abs=1e-5) and a[2] == b[2]
    assert new_info["train_loss"] == pytest.approx(old_info["train_loss"], abs=1e-5)
    assert len(new[0].records) == len(old[0].records) == 12
    for a, b in zip(new[0].records, old[0].records):
        assert (a.example_id, a.gold, a.n_tokens, a.gold_rank, a.top1_valid) == (
            b.example_id, b.gold, b.n_tokens, b.gold_rank, b.top1_valid
        )  # fmt: skip
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5) and a.valid_mass == pytest.approx(b.valid_mass)
    assert new_info["work"]["eval"]["tokens"] < old_info["work"]["eval"]["tokens"]
    assert new_info["work"]["train"] == {**old_info["work"]["train"], "seconds": new_info["work"]["train"]["seconds"]}


def test_train_sizes_all_resolves_to_the_whole_train_split(category):
    from harness.cli import _train_sizes
    from harness.config import EvalConfig
    from harness.evaluate import plan_trained, validate

    prompts, train_examples, _ = category
    assert _train_sizes("8,32,ALL") == [8, 32, "all"]
    with pytest.raises(HarnessError, match="--train-sizes"):
        _train_sizes("8,most")
    presets = {"bitfit": load_preset("bitfit")}
    cfg = EvalConfig(models=["tiny"], methods=["bitfit"], train_sizes=[8, "all"], seeds=1)
    validate(cfg)
    units, _ = plan_trained(cfg, CATEGORY, prompts, train_examples, "test", presets)
    assert len(train_examples) == 64 and sorted({u.train_size for u in units}) == [8, 64]
    # a numeric size equal to the split and `all` are one size; a larger numeric size is refused
    units, _ = plan_trained(replace_sizes(cfg, [64, "all"]), CATEGORY, prompts, train_examples, "test", presets)
    assert {u.train_size for u in units} == {64} and len(units) == 2  # task and control, one seed
    with pytest.raises(HarnessError, match=r"train size 128 \(--train-sizes\) is larger"):
        plan_trained(replace_sizes(cfg, [128, "all"]), CATEGORY, prompts, train_examples, "test", presets)
    with pytest.raises(HarnessError, match="--train-sizes must be integers of at least 2 or 'all'"):
        validate(replace_sizes(cfg, ["most"]))
    units, _ = plan_trained(replace_sizes(cfg, None), CATEGORY, prompts, train_examples, "test", presets)
    assert {u.train_size for u in units} == {32}  # the default stays FewGLUE's 32


def test_permuted_label_check_runs_only_for_the_methods_asked(category):
    from dataclasses import replace

    from harness.config import EvalConfig
    from harness.evaluate import plan_trained

    prompts, train_examples, _ = category
    presets = {"bitfit": load_preset("bitfit"), "probe": load_preset("probe")}
    cfg = EvalConfig(models=["tiny"], methods=["bitfit", "probe"], train_sizes=[8, 16], seeds=1)
    everything, _ = plan_trained(cfg, CATEGORY, prompts, train_examples, "test", presets)
    # by default every trained unit has its permuted-label twin (the probe also its random-init baseline)
    assert sorted((u.method, u.control) for u in everything).count(("bitfit", True)) == 2
    only_probe, _ = plan_trained(
        replace(cfg, permuted_label_check=["probe"]), CATEGORY, prompts, train_examples, "t", presets
    )
    assert [(u.method, u.train_size) for u in only_probe if u.control] == [("probe", 8), ("probe", 16)]
    assert {(u.method, u.variant, u.train_size) for u in only_probe if not u.control} == {
        (u.method, u.variant, u.train_size) for u in everything if not u.control
    }
    none, _ = plan_trained(replace(cfg, permuted_label_check=[]), CATEGORY, prompts, train_examples, "t", presets)
    assert not any(u.control for u in none) and len(none) == len(everything) - 4


def replace_sizes(cfg, sizes):
    from dataclasses import replace

    return replace(cfg, train_sizes=sizes)
