"""CCS (Contrast-Consistent Search, Burns et al. 2022): the unsupervised probe.

On synthetic states with a known truth direction the fit recovers it (accuracy above 0.95 after the sign fix) and on
pure noise it finds nothing (accuracy near chance); train labels only fix the sign; scores stay finite and pick what
Burns et al.'s averaged confidence picks. As a user runs it: planned, stored and resumed by `harness eval`'s loop on
the tiny model, and in the report beside the supervised probe and its random-init run. A bad preset value is one
line naming the key.
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from rich.console import Console

from harness.config import EvalConfig
from harness.engine import Engine
from harness.errors import HarnessError
from harness.evaluate import TaskPlan, _run_model, plan_trained
from harness.features import FeatureCache
from harness.methods.base import TaskContext, get_method
from harness.methods.ccs import CCSPreset, choice_logprobs, fit_ccs
from harness.methods.presets import check_overrides, load_preset
from harness.prompts import load_prompts
from harness.store import Store
from harness.tasks import Example, TaskSpec

PRESET = load_preset("ccs")


def contrast_states(n: int, width: int, k: int, signal: float, seed: int, direction: np.ndarray):
    """(states (1 layer, n, k, width), labels): each completion is noise, plus a nuisance its example's completions
    share, plus an offset per answer position (which answer was appended), plus +signal along `direction` for the
    true answer's completion and -signal for the others; all scaled up, as hidden states are."""
    rng = np.random.default_rng(seed)
    offsets = np.random.default_rng(99).normal(size=(k, width)) * 3  # the same answers in every sample
    labels = rng.integers(0, k, n)
    truth = np.where(np.arange(k)[None, :] == labels[:, None], 1.0, -1.0)
    states = rng.normal(size=(n, k, width)) + rng.normal(size=(n, 1, width)) + offsets
    states += signal * truth[:, :, None] * direction
    return (30 * states[None]).astype(np.float32), labels


def _direction(width: int) -> np.ndarray:
    d = np.random.default_rng(7).normal(size=width)
    return d / np.linalg.norm(d)


def _accuracy(fit, states, labels) -> float:
    return float((fit.logits(states)[0].argmax(-1) == labels).mean())


@pytest.mark.parametrize("k", [2, 3])
def test_ccs_recovers_a_known_direction_and_finds_nothing_in_noise(k):
    width = 24
    direction = _direction(width)
    x, y = contrast_states(300, width, k, 2.0, 0, direction)
    x_eval, y_eval = contrast_states(1000, width, k, 2.0, 1, direction)
    fit = fit_ccs(x, [0], PRESET, seed=0)  # no labels go in
    fit.sign_fix(x, y)
    assert _accuracy(fit, x_eval, y_eval) > 0.95
    cosine = abs(fit.weight[0] @ direction) / np.linalg.norm(fit.weight[0])
    assert cosine > 0.85  # the direction itself, not some correlate (`scale` normalisation keeps directions)

    noise, y_noise = contrast_states(300, width, k, 0.0, 0, direction)
    noise_eval, y_noise_eval = contrast_states(1000, width, k, 0.0, 1, direction)
    fit = fit_ccs(noise, [0], PRESET, seed=0)
    fit.sign_fix(noise, y_noise)
    assert abs(_accuracy(fit, noise_eval, y_noise_eval) - 1 / k) < 0.06  # chance: 4 standard errors at n=1000


def test_train_labels_only_fix_the_sign():
    """The fit sees no labels; inverting the (two-choice) train labels flips the sign fix and every prediction."""
    direction = _direction(16)
    x, y = contrast_states(200, 16, 2, 2.0, 0, direction)
    x_eval, _ = contrast_states(200, 16, 2, 2.0, 1, direction)
    fit = fit_ccs(x, [0], PRESET, seed=3)
    weight = fit.weight.copy()
    fit.sign_fix(x, y)
    right = fit.logits(x_eval)[0].argmax(-1)
    flipped, train_acc = fit.flipped, fit.train_curve
    fit.sign_fix(x, 1 - y)
    assert np.array_equal(fit.weight, weight)  # the probe is not refit
    assert fit.flipped == [not flipped[0]] and fit.train_curve == train_acc and train_acc[0] > 0.95
    assert np.array_equal(fit.logits(x_eval)[0].argmax(-1), 1 - right)


def test_layers_train_independently():
    """All layers are fit as one batched problem: a layer's probe is the one it gets when fit alone."""
    direction = _direction(8)
    signal, _ = contrast_states(100, 8, 2, 2.0, 0, direction)
    noise, _ = contrast_states(100, 8, 2, 0.0, 1, direction)
    preset = dataclasses.replace(PRESET, epochs=200)
    both = fit_ccs(np.concatenate([noise, signal]), [0, 1], preset, seed=0)
    alone = fit_ccs(signal, [1], preset, seed=0)
    assert np.allclose(both.weight[1], alone.weight[0], rtol=1e-3, atol=1e-5)
    assert both.loss[1] == pytest.approx(alone.loss[0], rel=1e-3)
    assert both.loss[1] < both.loss[0]  # the layer with a truth direction fits the loss better than noise


def test_centred_only_states_at_hidden_state_scale_fit_worse_than_scaled_ones():
    """Why the preset scales each answer position (probes/ccs.yaml): centred only, states of hidden-state magnitude
    saturate the sigmoid and 1000 steps stop at about twice the scaled fit's loss."""
    direction = _direction(32)
    x, _ = contrast_states(200, 32, 2, 1.5, 0, direction)
    centred = fit_ccs(x, [0], dataclasses.replace(PRESET, normalization="mean"), seed=0)
    scaled = fit_ccs(x, [0], PRESET, seed=0)
    assert centred.loss[0] > 1.5 * scaled.loss[0]


def test_scores_are_finite_log_probabilities_that_pick_burns_prediction():
    logits = np.random.default_rng(0).normal(size=(500, 2)) * 5
    logits[:3] = [[1000.0, -1000.0], [-1000.0, -1000.0], [800.0, 900.0]]
    scores = choice_logprobs(logits)
    assert np.isfinite(scores).all()
    assert np.allclose(np.exp(scores).sum(-1), 1.0)
    p = 1 / (1 + np.exp(-np.clip(logits, -500, 500)))
    burns = (0.5 * (p[:, 0] + 1 - p[:, 1]) < 0.5).astype(int)  # the authors' prediction from a contrast pair
    decided = np.abs(p[:, 0] - p[:, 1]) > 1e-9  # (ties: both rules pick a side arbitrarily)
    assert np.array_equal(scores.argmax(-1)[decided], burns[decided])


# ---------------------------------------------------------------- presets
@pytest.mark.parametrize(
    "override,message",
    [
        ("ccs.restarts=0", "--set ccs.restarts=0: ccs.restarts must be positive, not 0"),
        ("ccs.epochs=2.5", "--set ccs.epochs=2.5: ccs.epochs must be an integer, not 2.5"),
        (
            "ccs.normalization=whiten",
            "--set ccs.normalization=whiten: ccs.normalization must be one of mean, scale, standardize, not 'whiten'",
        ),
        ("ccs.learning_rate=0", "--set ccs.learning_rate=0: ccs.learning_rate must be positive, not 0.0"),
        ("ccs.weight_decay=-1", "--set ccs.weight_decay=-1: ccs.weight_decay must be at least 0, not -1.0"),
        ("ccs.layers=[1, x]", "--set ccs.layers=[1, x]: ccs.layers must be 'all' or a list of integers, not [1, 'x']"),
        (
            "ccs.tries=3",
            "--set ccs.tries=3: unknown key 'tries' for ccs (known: template, layers, normalization, restarts, "
            "epochs, learning_rate, weight_decay)",
        ),
    ],
)
def test_a_bad_ccs_preset_value_is_one_line_naming_the_key(override, message):
    with pytest.raises(HarnessError) as bad:
        check_overrides([override])
    assert str(bad.value) == message
    with pytest.raises(HarnessError) as again:
        load_preset("ccs", overrides=[override])
    assert str(again.value) == message


def test_a_bad_ccs_preset_file_or_value_in_code_names_the_key(tmp_path):
    from tests.test_methods import REPO

    path = tmp_path / "ccs.yaml"
    path.write_text((REPO / "probes" / "ccs.yaml").read_text().replace("restarts: 10", "restarts: many"))
    with pytest.raises(HarnessError) as bad:
        load_preset("ccs", tmp_path)
    assert str(bad.value) == f"{path}: ccs.restarts must be an integer, not 'many'"
    with pytest.raises(HarnessError, match=r"^CCSPreset\.weight_decay must be at least 0, not -0\.5$"):
        dataclasses.replace(PRESET, weight_decay=-0.5)
    assert load_preset("ccs", overrides=["ccs.weight_decay=0"]).weight_decay == 0.0  # no decay is allowed
    assert isinstance(PRESET, CCSPreset) and PRESET.normalization == "scale"


# ---------------------------------------------------------------- through harness eval's loop, on the tiny model
TASK = TaskSpec("colour", ("warm", "cool"), ("acc",))
PROMPTS = """task: colour
templates:
  - name: question
    text: "Is {{word}} a warm or a cool colour?\\nAnswer:"
    choices: ["warm", "cool"]
"""
WORDS = "red orange yellow amber gold coral scarlet crimson blue green teal indigo violet navy cyan azure".split()


def _colour_examples(prefix: str) -> list[Example]:
    return [Example(f"{prefix}{i}", {"word": w}, int(i >= 8), f"{prefix}{i}") for i, w in enumerate(WORDS)]


def test_a_ccs_unit_is_planned_stored_and_resumed_by_the_eval_loop(tiny_lm, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_FEATURES_DIR", str(tmp_path / "features"))
    (tmp_path / "colour.yaml").write_text(PROMPTS, encoding="utf-8")
    prompts = load_prompts("colour", tmp_path)
    presets = {"ccs": dataclasses.replace(PRESET, epochs=100, restarts=3)}
    cfg = EvalConfig(models=["tiny"], methods=["ccs"], train_sizes=[8], seeds=1)
    train, evals = _colour_examples("t"), _colour_examples("e")
    units, notes = plan_trained(cfg, TASK, prompts, train, "test", presets)
    # the permuted-label check and the random-init baseline are planned for ccs by default
    assert [u.key for u in units] == [
        "ccs/question/n8/s0",
        "ccs-control/question/n8/s0",
        "ccs-random-init/question/n8/s0",
    ]
    assert notes == []
    task = TaskContext(cfg, TASK, prompts, evals, train, presets)
    assert get_method("ccs").cost(units[0], task) == len(evals)
    engine = Engine(*tiny_lm)
    store, out = Store(tmp_path / "run"), io.StringIO()
    console = Console(file=out, width=200)
    _run_model("tiny", [TaskPlan(task, units[:1], {"n_eval": 16})], engine, store, console)  # then interrupted
    _run_model("tiny", [TaskPlan(task, units, {"n_eval": 16})], engine, store, console)
    assert "resuming, 1 of 3 units already stored" in out.getvalue()
    stored = store.records("tiny", "colour")
    assert sorted(stored) == [
        ("ccs", variant, "question", 8, 0) for variant in ("ccs", "ccs-control", "ccs-random-init")
    ]
    for records in stored.values():
        assert sorted(r.example_id for r in records) == sorted(e.id for e in evals)
        assert all(len(r.logprobs) == 2 and np.isfinite(r.logprobs).all() for r in records)
        assert all(np.exp(r.logprobs).sum() == pytest.approx(1.0) for r in records)
    infos = {key.split("/")[0]: info for (_, key), info in store.unit_infos("tiny", "colour").items()}
    assert infos["ccs"]["layers"] == [0, 1, 2] and infos["ccs"]["layer"] in (0, 1, 2)  # embeddings + 2 layers
    assert len(infos["ccs"]["train_curve"]) == len(infos["ccs"]["eval_curve"]) == len(infos["ccs"]["loss_curve"]) == 3
    assert infos["ccs"]["loss"] == infos["ccs"]["loss_curve"][infos["ccs"]["layer"]]
    assert infos["ccs"]["trained_params"] == 32 + 1 and infos["ccs"]["n_fit"] == 8
    assert isinstance(infos["ccs"]["sign_flipped"], bool)
    assert infos["ccs-random-init"]["random_init"] and not infos["ccs"]["random_init"]
    json.dumps(infos)  # what the store keeps is plain JSON

    _run_model("tiny", [TaskPlan(task, units, {"n_eval": 16})], engine, store, console)
    assert "all 3 units already stored" in out.getvalue()
    store.close()


def test_cli_ccs_sits_beside_the_probe_and_its_random_init_in_the_report(tiny_dir, env, tmp_path):
    """CB (three answers) end to end: the trained table has CCS's row with its random-init score and selectivity,
    next to the supervised probe's, and the report says how to read CCS (Farquhar et al. 2023)."""
    import pandas as pd

    from harness.report import CCS_NOTE
    from tests.test_cli import harness

    out = tmp_path / "run"
    args = ["eval", "--model", str(tiny_dir), "--tasks", "cb", "--limit", "6", "--seeds", "1", "--out", str(out)]
    fast = ["--train-sizes", "8", "--set", "ccs.epochs=100", "--set", "ccs.restarts=2"]
    run = harness(*args, "--methods", "probe,ccs", *fast, env=env)
    assert run.returncode == 0, run.stderr
    summary = pd.read_csv(out / "summary.csv")
    ccs = summary[summary.method == "ccs"]
    assert set(ccs.variant) == {"ccs", "ccs-control", "ccs-random-init"}
    mean = ccs[(ccs.metric == "acc") & (ccs.template == "mean")].set_index("variant")
    selectivity = ccs[ccs.metric == "selectivity_acc"].set_index("variant").value
    assert selectivity["ccs"] == pytest.approx(mean.value["ccs"] - mean.value["ccs-random-init"], abs=1e-5)
    assert set(mean.n) == {6}
    report = (out / "report.md").read_text()
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith(("| cb | probe", "| cb | ccs"))]
    assert [row[1:3] for row in rows] == [["probe", "probe"], ["ccs", "ccs"]]  # one table, the probe then ccs
    score, random_init = (mean.value[v] * 100 for v in ("ccs", "ccs-random-init"))
    assert rows[1][6].startswith(f"{score:.1f} [") and rows[1][7].startswith(f"{random_init:.1f} [")
    assert "no label in the fit" in rows[1][11] and "sign flipped on train labels in" in rows[1][11]
    assert f"- {CCS_NOTE}" in report
    rerun = harness(*args, "--methods", "probe,ccs", *fast, env=env)
    assert rerun.returncode == 0 and "all 6 units already stored" in rerun.stderr


# ---------------------------------------------------------------- behaviour on the real SmolLM2-135M
@pytest.mark.slow
def test_ccs_finds_a_linear_label_in_smollm2_and_nothing_in_its_random_init_copy(smollm2, tmp_path):
    """Animal or fruit (tests/test_trained_methods.py), answered by completing its question with each answer: CCS,
    given no label, separates the eval answers on SmolLM2-135M's middle layers; on the re-initialised copy the same
    fit finds nothing (measured: 1.00 on the model at every layer from 7 up, about 0.50 on the copy)."""
    from harness.methods.base import TrainedUnit
    from harness.methods.ccs import run_ccs_unit
    from harness.metrics import accuracy
    from harness.models import random_init_copy
    from tests.test_trained_methods import CATEGORY, EVAL_FRAMES, PROMPTS, TRAIN_FRAMES, _examples

    (tmp_path / "category.yaml").write_text(PROMPTS, encoding="utf-8")
    prompts, train, evals = (
        load_prompts("category", tmp_path),
        _examples(TRAIN_FRAMES, "t"),
        _examples(EVAL_FRAMES, "e"),
    )
    preset = load_preset("ccs", overrides=["ccs.layers=[8, 16, 24]"])  # three layers: a third of the fit's time
    cache = FeatureCache(tmp_path / "features")
    results = {}
    for name, model in (("model", smollm2.model), ("random-init", random_init_copy(smollm2.model))):
        unit = TrainedUnit("ccs", "ccs", "lm-eval", 64, 0)
        engine = Engine(model, smollm2.tokenizer)
        (out,), info = run_ccs_unit(unit, CATEGORY, prompts, engine, name, evals, train, preset, cache)
        results[name] = accuracy(out.records)
        assert info["layers"] == [8, 16, 24] and len(out.records) == len(evals) == 96
    print(f"\nccs: {results} (eval n={len(evals)})")
    assert results["model"] >= 0.95
    assert abs(results["random-init"] - 0.5) <= 0.15  # chance on a balanced binary task
