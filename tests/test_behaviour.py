"""Behaviour on the real SmolLM2-135M and real SuperGLUE data: the numbers the report rests on mean something."""

from __future__ import annotations

import numpy as np
import pytest

from harness.catalog import get_task
from harness.engine import Engine
from harness.loaders import DataSource, load_train, resolve_train_source
from harness.methods.prompt import PromptUnit, run_unit
from harness.metrics import Resampler, diagnostics, predictions, task_metrics
from harness.prompts import load_prompts

pytestmark = pytest.mark.slow


def _score(smollm2, superglue_dir, task, unit, n=None):
    data = DataSource(superglue_dir)
    spec = get_task(task)
    examples = data.load(spec, "val")[:n]
    train = load_train(spec, resolve_train_source("auto", data), data)
    engine = Engine(smollm2.model, smollm2.tokenizer)
    records = run_unit(unit, spec, load_prompts(task), engine, examples, train, "random")[0].records
    rs = Resampler([r.group for r in records])
    pred = predictions(records)
    return task_metrics(task, records, pred, rs, len(spec.labels)), diagnostics(records, pred, rs)


def test_copa_zero_shot_is_above_chance(smollm2, superglue_dir):
    metrics, _ = _score(smollm2, superglue_dir, "copa", PromptUnit("lm-eval", 0, 0))
    acc = metrics["acc"]
    assert acc.n == 100
    assert acc.ci[0] > 0.5, acc.value  # the whole 95% interval is above chance


def test_content_free_control_predicts_one_answer_for_all(smollm2, superglue_dir):
    metrics, _ = _score(smollm2, superglue_dir, "rte", PromptUnit("content-free", 0, 0, kind="control"), n=60)
    labels = [e.label for e in DataSource(superglue_dir).load(get_task("rte"), "val")[:60]]
    share = np.bincount(labels, minlength=2) / 60
    # a constant prediction scores exactly one label's share
    assert min(abs(metrics["acc"].value - x) for x in share) < 1e-9


def test_demos_make_the_model_attempt_rte(smollm2, superglue_dir):
    """Zero-shot, SmolLM2 rarely puts its mass on True/False after 'Answer:'; four demos show it the format."""
    _, zero = _score(smollm2, superglue_dir, "rte", PromptUnit("lm-eval", 0, 0), n=40)
    _, four = _score(smollm2, superglue_dir, "rte", PromptUnit("lm-eval", 4, 0), n=40)
    assert four["attempt_rate"].value > zero["attempt_rate"].value + 0.3
    assert four["attempt_rate"].ci[0] > zero["attempt_rate"].ci[1]  # intervals do not overlap
    assert four["median_gold_rank"].value < zero["median_gold_rank"].value
