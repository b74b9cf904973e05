"""--device-map: a model that accelerate placed across devices scores, gives probe features and trains as the same
model on one device does. CPU only: the map offloads modules to disk (their weights stay on the meta device and
accelerate's hooks read them from the safetensors file at every pass), so the hooks and the input/output device
handling really run; a map of GPUs is the same code with other devices."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from harness.device_map import offloads, parse_device_map
from harness.engine import Engine, Request, execution_device
from harness.errors import HarnessError
from harness.features import last_token_features, mean_pooled_features
from harness.methods.base import TrainedUnit
from harness.methods.presets import load_preset
from harness.methods.tuning import run_tuning_unit
from harness.models import load_model, offloaded, random_init_copy
from harness.prompts import load_prompts
from tests.conftest import make_tiny_lm
from tests.test_misuse import assert_one_line, run_cli
from tests.test_trained_methods import CATEGORY, EVAL_FRAMES, PROMPTS, TRAIN_FRAMES, _examples

# every module of the tiny 2-layer Llama, two of them (the input embeddings among them) offloaded to disk
SPLIT = {
    "model.embed_tokens": "disk",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.norm": "cpu",
    "model.rotary_emb": "cpu",
    "lm_head": "cpu",
}
CONTEXT = "The cat sat on the mat and looked at the dog for a long time.\nQuestion: what did the cat do"
REQUESTS = [Request(f"{CONTEXT} on day {i}?\nAnswer:", [" sat", " looked at the dog", " no"]) for i in range(6)]


@pytest.fixture(scope="module")
def loaded(tiny_dir, tmp_path_factory):
    """(the model on one device, the same model placed by SPLIT), loaded from the same folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HARNESS_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield (
            load_model(str(tiny_dir), device="cpu"),
            load_model(str(tiny_dir), device_map=parse_device_map(json.dumps(SPLIT))),
        )
    finally:
        mp.undo()


def test_the_map_really_dispatches(loaded):
    plain, placed = loaded
    assert not offloaded(plain.model) and offloaded(placed.model)
    layer = placed.model.model.layers[1]
    assert hasattr(layer, "_hf_hook") and layer.mlp.up_proj.weight.device.type == "meta"
    assert placed.model.get_input_embeddings().weight.device.type == "meta"  # so inputs cannot follow the weights
    assert execution_device(placed.model, placed.model.get_input_embeddings()) == torch.device("cpu")
    assert placed.device == "disk+cpu" and placed.store_info()["device_map"] == SPLIT
    assert placed.params == plain.params


def test_engine_scores_equal_one_device(loaded):
    plain, placed = loaded
    a = Engine(plain.model, plain.tokenizer).score(REQUESTS, hidden_layers=[0, 2])
    engine = Engine(placed.model, placed.tokenizer)
    b = engine.score(REQUESTS, hidden_layers=[0, 2])
    assert engine.tokens_computed > 0
    for x, y in zip(a, b):
        assert len(x.logprobs) == 3 and all(lp < 0 for lp in x.logprobs)
        np.testing.assert_allclose(y.logprobs, x.logprobs, atol=1e-5, rtol=0)
        assert y.valid_mass == pytest.approx(x.valid_mass, abs=1e-6) and y.first_token_ranks == x.first_token_ranks
        for layer in (0, 2):
            torch.testing.assert_close(y.hidden[layer], x.hidden[layer], atol=1e-5, rtol=0)
    contexts = [r.context for r in REQUESTS]
    assert engine.generate(contexts, 4) == Engine(plain.model, plain.tokenizer).generate(contexts, 4)


def test_probe_features_equal_one_device(loaded):
    plain, placed = loaded
    texts = [r.context for r in REQUESTS]
    one, many = Engine(plain.model, plain.tokenizer), Engine(placed.model, placed.tokenizer)
    for extract in (
        lambda engine: last_token_features(engine, texts, [" yes", " no"]),
        lambda engine: mean_pooled_features(engine, texts),
    ):
        a, b = extract(one), extract(many)
        assert a.shape == (len(texts), 3, plain.model.config.hidden_size) and np.abs(a).max() > 0
        np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)


def test_random_init_copy_of_a_placed_model_equals_one_device(loaded):
    plain, placed = loaded
    a, b = random_init_copy(plain.model), random_init_copy(placed.model)
    assert not offloaded(b)  # disk modules of the copy live in CPU memory: fresh weights have no file
    ids = torch.tensor([plain.tokenizer.encode(CONTEXT)])
    with torch.no_grad():
        torch.testing.assert_close(b(ids).logits, a(ids).logits, atol=1e-5, rtol=0)
        assert not torch.allclose(a(ids).logits, plain.model(ids).logits)


@pytest.mark.parametrize("method, variant", [("bitfit", "bitfit"), ("ptune", "prompt-tuning")])
def test_tuned_methods_train_on_hooked_modules_as_on_one_device(method, variant, tmp_path):
    """A map of several GPUs leaves every module's weights in place and hooks move the activations: the same
    hooks, forced onto one CPU here (accelerate adds none for one device), must not change a trained unit."""
    from accelerate import dispatch_model

    (tmp_path / "category.yaml").write_text(PROMPTS, encoding="utf-8")  # test_trained_methods' animal-or-fruit task
    prompts, train_examples, evals = (
        load_prompts("category", tmp_path),
        _examples(TRAIN_FRAMES, "t"),
        _examples(EVAL_FRAMES, "e"),
    )
    preset = dataclasses.replace(load_preset(method), max_steps=3, eval_every=1, patience=10)
    unit = TrainedUnit(method, variant, "lm-eval", 16, 0)
    records = []
    for hooked in (False, True):
        model, tokenizer = make_tiny_lm(seed=2)
        if hooked:
            model = dispatch_model(model, {k: "cpu" for k in SPLIT}, force_hooks=True)
            assert hasattr(model.model.layers[0], "_hf_hook")
        out, info = run_tuning_unit(unit, CATEGORY, prompts, model, tokenizer, evals[:6], train_examples, preset)
        assert info["steps_run"] == 3
        records.append([r.logprobs for r in out[0].records])
    np.testing.assert_allclose(records[1], records[0], atol=1e-5, rtol=0)


def test_parse_device_map_forms(tmp_path):
    assert parse_device_map(None) is None and parse_device_map(" Auto ") == "auto"
    assert parse_device_map('{"a": "cuda:1", "b": "cuda", "c": 2, "d": "CPU", "e": "disk"}') == {
        "a": 1,
        "b": 0,
        "c": 2,
        "d": "cpu",
        "e": "disk",
    }
    (tmp_path / "map.yaml").write_text("model: 0\nlm_head: cpu\n")
    assert parse_device_map(str(tmp_path / "map.yaml")) == {"model": 0, "lm_head": "cpu"}
    (tmp_path / "map.json").write_text('{"": "disk"}')
    assert parse_device_map(str(tmp_path / "map.json")) == {"": "disk"}
    assert offloads({"": "disk"}) and offloads({"model": 0, "lm_head": "cpu"})
    assert not offloads({"model": "cpu"}) and not offloads({"model": 0, "lm_head": 1})
    for bad in ('{"a": -1}', '{"a": true}', '{"a": ["cpu"]}', "[1]"):
        with pytest.raises(HarnessError, match="--device-map"):
            parse_device_map(bad)


@pytest.mark.parametrize(
    "device_map, message",
    [
        ({**SPLIT, "model.decoder": "cpu"}, "no module 'model.decoder' in"),
        ({k: v for k, v in SPLIT.items() if k != "model.norm"}, "no device for model.norm.weight of"),
    ],
)
def test_a_map_that_does_not_fit_the_model_is_one_line_exit_2(
    device_map, message, tiny_dir, superglue_dir, capsys, monkeypatch, tmp_path
):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_NO_PROGRESS", "1")
    args = ["eval", "--model", str(tiny_dir), "--tasks", "cb", "--limit", "2", "--shots", "0"]
    args += ["--data-dir", str(superglue_dir), "--out", str(tmp_path / "out"), "--device-map", json.dumps(device_map)]
    code, _, err = run_cli(args, capsys, monkeypatch)
    line = assert_one_line(code, err, "--device-map", message)
    assert "model.embed_tokens, model.layers.0-1, model.norm, model.rotary_emb, lm_head" in line


def test_tuned_methods_refuse_a_strategy_that_offloads(tiny_dir, monkeypatch, tmp_path):
    """A strategy's placement is known only once loaded: the refusal comes then, naming --device-map."""
    from harness.models import refuse_offloaded_training

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    placed = load_model(str(tiny_dir), device_map={"": "disk"})
    refuse_offloaded_training(placed, [])  # nothing to train: fine
    with pytest.raises(HarnessError, match=r"^--device-map: bitfit cannot train .* offloaded to cpu or disk \(disk\)"):
        refuse_offloaded_training(placed, ["bitfit"])
