"""Controls that can fail: the random-init baseline (same architecture, seeded re-initialised weights), the
probe's online codelength (MDL, Voita & Titov 2020), and selectivity measured against the random-init baseline."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from harness.analysis import analyse
from harness.methods.presets import load_preset
from harness.methods.probe import mdl_blocks, online_codelength
from harness.models import random_init_copy
from harness.store import Store, UnitKey, VariantRecords
from tests.test_decompose import _records as nested_records

PRESET = replace(load_preset("probe"), C=1.0, max_iter=2000)


# ---------------------------------------------------------------- the re-initialised model
def test_random_init_copy_keeps_architecture_and_tokenizer_and_is_deterministic(tiny_lm):
    model, tokenizer = tiny_lm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = random_init_copy(model)  # the baseline's fixed seed
    b = random_init_copy(model)
    c = random_init_copy(model, seed=1)
    assert type(a) is type(model) and type(a.config) is type(model.config)
    assert a.config.to_dict() == model.config.to_dict()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in a.state_dict().items()} == shapes
    changed = [k for k, v in a.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and "model.layers.0.self_attn.q_proj.weight" in changed
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())  # same seed, same weights
    assert not torch.equal(a.model.layers[0].mlp.up_proj.weight, c.model.layers[0].mlp.up_proj.weight)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original is untouched
    assert not any(p.requires_grad for p in a.parameters()) and not a.training
    tied = bool(model.config.tie_word_embeddings)
    assert (a.get_output_embeddings().weight is a.get_input_embeddings().weight) == tied
    # the tokenizer is shared: the same ids for a string, and the copy scores them
    ids = tokenizer.encode("The man turned on the faucet.")
    assert ids == tokenizer.encode("The man turned on the faucet.")
    with torch.no_grad():
        logits = a(input_ids=torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), model.config.vocab_size) and torch.isfinite(logits).all()


# ---------------------------------------------------------------- MDL
def test_mdl_blocks_double_up_to_n():
    assert mdl_blocks(32) == [2, 4, 8, 16, 32]
    assert mdl_blocks(20) == [2, 4, 8, 16, 20]
    assert mdl_blocks(2) == [2]


def test_online_codelength_compresses_separable_labels_and_not_random_ones():
    rng = np.random.default_rng(0)
    n, width = 64, 8
    y = np.array([i % 2 for i in range(n)])
    x = rng.normal(size=(n, width))
    x[:, 0] += 4.0 * (2 * y - 1)  # one direction separates the classes
    sep = online_codelength(PRESET, x, y, 2, seed=0)
    assert sep["uniform_bits"] == pytest.approx(n * math.log2(2))
    assert sep["compression"] == pytest.approx(sep["uniform_bits"] / sep["mdl_bits"])
    print(f"\nseparable: {sep['mdl_bits']:.1f} of {sep['uniform_bits']:.0f} bits, compression {sep['compression']:.2f}")
    assert sep["compression"] > 1.5
    noise = online_codelength(PRESET, rng.normal(size=(n, width)), rng.permutation(y), 2, seed=0)
    print(f"random labels: {noise['mdl_bits']:.1f} bits, compression {noise['compression']:.2f}")
    assert noise["compression"] < 1.1
    assert sep["mdl_bits"] < noise["mdl_bits"]
    # three classes: the uniform code is n log2 3
    y3 = np.array([i % 3 for i in range(n)])
    x3 = rng.normal(size=(n, width)) + 4.0 * np.eye(3, width)[y3]
    three = online_codelength(PRESET, x3, y3, 3, seed=1)
    assert three["uniform_bits"] == pytest.approx(n * math.log2(3)) and three["compression"] > 1.5
    assert online_codelength(PRESET, x, y, 2, seed=0) == sep  # seeded


# ---------------------------------------------------------------- selectivity against the random-init baseline
N = 40
MODEL = "tiny"


def test_selectivity_is_against_the_random_init_baseline_not_the_control_task(tmp_path):
    store = Store(tmp_path)
    store.put_model(MODEL, 1_000_000, {"source": "hand-made", "device": "cpu", "dtype": "float32"})
    store.put_task(MODEL, "rte", {"n_eval": N})
    for variant, correct in (("probe", 36), ("probe-control", 20), ("probe-random-init", 28), ("bitfit", 30)):
        key = UnitKey(MODEL, "rte", variant.split("-")[0], f"{variant}/input-only/n32/s0")
        store.put_unit(key, [VariantRecords(variant, "input-only", 32, 0, nested_records(correct, N))], {})
    store.close()
    frame, _ = analyse(Store(tmp_path))
    sel = frame[frame.metric == "selectivity_acc"]
    assert set(sel.variant) == {"probe"}  # bitfit has no random-init baseline here: no selectivity
    row = sel.iloc[0]
    assert row.value == pytest.approx(36 / N - 28 / N)
    # paired over examples: the random-init probe is right on a subset of the probe's examples, so every
    # resample's difference is positive and the interval excludes zero
    assert 0 < row.ci_low <= row.value <= row.ci_high
    control = frame[(frame.variant == "probe-control") & (frame.metric == "acc") & (frame.template == "mean")]
    assert control.value.item() == pytest.approx(0.5)  # the control task's rows stay, as a sanity check
    assert not (frame.metric.str.startswith("selectivity") & frame.variant.str.endswith("-control")).any()
    assert not (frame.metric.str.startswith("selectivity") & frame.variant.str.endswith("-random-init")).any()


# ---------------------------------------------------------------- as a user runs it
def test_cli_runs_the_random_init_baseline_for_the_methods_asked(tiny_dir, env, tmp_path):
    import pandas as pd

    from tests.test_cli import harness

    out = tmp_path / "run"
    args = ["eval", "--model", str(tiny_dir), "--tasks", "rte", "--limit", "4", "--seeds", "1", "--out", str(out)]
    fast = ["--set", "bitfit.steps=2", "--train-sizes", "8"]
    run = harness(*args, "--methods", "bitfit,probe", "--random-init-baseline", "probe,bitfit", *fast, env=env)
    assert run.returncode == 0, run.stderr
    summary = pd.read_csv(out / "summary.csv")
    trained = summary[summary.method.isin(["bitfit", "probe"])]
    assert {"probe-random-init", "bitfit-random-init", "probe-control", "bitfit-control"} <= set(trained.variant)
    selectivity = trained[trained.metric == "selectivity_acc"]
    assert set(selectivity.variant) == {"bitfit", "probe"}
    for variant, row in selectivity.set_index("variant").iterrows():
        mean = trained[(trained.metric == "acc") & (trained.template == "mean")].set_index("variant").value
        assert row.value == pytest.approx(mean[variant] - mean[f"{variant}-random-init"], abs=1e-5)
    from harness.store import Store

    infos = Store(out).unit_infos(summary.model.iloc[0], "rte")
    probe = {key.split("/")[0]: info for (method, key), info in infos.items() if method == "probe"}
    for variant in ("probe", "probe-random-init"):
        assert probe[variant]["uniform_bits"] == pytest.approx(8 * math.log2(2))
        assert probe[variant]["mdl_bits"] > 0 and probe[variant]["compression"] > 0
    assert probe["probe-random-init"]["random_init"] and not probe["probe"]["random_init"]
