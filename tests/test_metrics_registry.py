"""Metrics by name: a metric is one registration, computed for every task file that names it, in registration
order; an unknown name, or one that does not score the task's answers, is one line listing the known ones."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from harness.catalog import get_task, use_task_dirs
from harness.errors import HarnessError
from harness.metrics import (
    METRICS,
    Estimate,
    MetricInput,
    Resampler,
    baselines,
    main_metric,
    mean_estimate,
    named_metrics,
    register_metric,
    unit_metrics,
)
from harness.registry import Registry
from harness.store import Record
from harness.tasks import TaskSpec

TASK_YAML = """\
task: reviews
labels: [negative, positive]
metrics: {metrics}
data: {{val: val.jsonl}}
templates:
  - name: plain
    text: "{{{{text}}}}"
    choices: [negative, positive]
"""


def balanced_accuracy(given: MetricInput) -> dict[str, Estimate]:
    """The mean over labels of the accuracy on that label's examples (scikit-learn's balanced_accuracy)."""
    gold = np.array([r.gold[0] for r in given.records])
    hit = (given.pred == gold).astype(np.float64)
    per_label = [given.rs.mean(hit, mask=gold == c) for c in range(given.n_classes)]
    return {"balanced_acc": mean_estimate(per_label)}


@pytest.fixture
def balanced_acc():
    register_metric("balanced_acc", "the mean over labels of each label's recall")(balanced_accuracy)
    yield
    METRICS.unregister("balanced_acc")


@pytest.fixture
def task_folder(tmp_path):
    (tmp_path / "val.jsonl").write_text('{"text": "fine", "label": 1}\n', encoding="utf-8")
    yield tmp_path
    use_task_dirs([])


def _task(folder, metrics: str, extra: str = ""):
    """The spec of a task file written to `folder` (the catalog caches a folder's files: one file per folder)."""
    folder.mkdir(exist_ok=True)
    (folder / "reviews.yaml").write_text(TASK_YAML.format(metrics=metrics) + extra, encoding="utf-8")
    use_task_dirs([str(folder)])
    return get_task("reviews")


def _records(gold, pred):
    out = []
    for i, (g, p) in enumerate(zip(gold, pred)):
        logprobs = [-5.0, -5.0]
        logprobs[p] = -1.0
        out.append(Record(str(i), str(i), [int(g)], logprobs, n_chars=[8, 8]))
    return out


def test_a_registered_metric_is_computed_for_a_task_that_names_it(balanced_acc, task_folder):
    spec = _task(task_folder, "[balanced_acc, acc]")
    assert spec.metrics == ("balanced_acc", "acc") and main_metric("reviews") == "balanced_acc"
    rng = np.random.default_rng(0)
    gold = np.array([0] * 40 + [1] * 10)
    pred = np.where(rng.random(50) < 0.7, gold, 1 - gold)
    records = _records(gold, pred)
    rs = Resampler([r.group for r in records])
    metrics = unit_metrics("reviews", "gold", records, rs, 2)
    assert metrics["balanced_acc"].value == pytest.approx(balanced_accuracy_score(gold, pred))
    assert metrics["acc"].value == pytest.approx((gold == pred).mean())
    # stored in registration order (acc, then the newer metric), whatever order the task file lists them in
    assert list(metrics)[:3] == ["acc", "balanced_acc", "acc_norm"]
    # a constant answer is scored by it too: the majority label is right on one label of two
    majority = baselines("reviews", records, rs, 2)["majority"]
    assert majority["balanced_acc"].value == pytest.approx(0.5)
    assert majority["acc"].value == pytest.approx(0.8)


def test_a_metric_the_task_does_not_name_is_not_computed(balanced_acc, task_folder):
    _task(task_folder, "[acc]")
    records = _records([0, 1, 1], [0, 1, 0])
    metrics = unit_metrics("reviews", "gold", records, Resampler([r.group for r in records]), 2)
    assert "balanced_acc" not in metrics and metrics["acc"].value == pytest.approx(2 / 3)


def test_an_unknown_metric_is_one_line_listing_the_registered_ones(task_folder):
    with pytest.raises(HarnessError) as err:
        _task(task_folder, "[acc, balanced_acc]")
    message = str(err.value)
    assert message == f"{task_folder / 'reviews.yaml'}: " + METRICS.unknown("balanced_acc")
    assert "unknown metric 'balanced_acc' (metrics): known are acc, acc_norm, macro_f1" in message
    assert "\n" not in message and all(name in message for name in METRICS)


def test_a_metric_of_another_answer_kind_is_refused(task_folder):
    with pytest.raises(HarnessError, match=r"metric 'top1' \(metrics\) does not score answer: choice; those that do"):
        _task(task_folder, "[acc, top1]")
    with pytest.raises(HarnessError, match=r"does not score answer: generate; those that do are em$"):
        _task(task_folder / "generated", "[acc]", "answer: generate\n")


def test_a_stored_spec_naming_an_unregistered_metric_is_one_line():
    """A store's spec (read back by `harness report`) naming a metric this installation does not register."""
    records = _records([0, 1], [0, 1])
    given = MetricInput(records, np.array([0, 1]), Resampler(["0", "1"]), 2, TaskSpec(name="old", metrics=("brier",)))
    with pytest.raises(HarnessError, match=r"^task old: unknown metric 'brier' \(metrics\): known are acc, "):
        named_metrics(given, "choice", lambda m: m.compute)


def test_registry_names_in_order_and_refuses_a_second_registration():
    things: Registry[int] = Registry("thing", "--things")
    things.register("b", 2)
    things.register("a", 1)
    assert things.names() == ("b", "a") and list(things) == ["b", "a"] and things["a"] == 1 and "c" not in things
    with pytest.raises(ValueError, match="registered twice"):
        things.register("a", 3)
    with pytest.raises(HarnessError, match=r"^x: unknown thing 'c' \(--things\): known are b, a$"):
        things.get("c", "x")
    things.unregister("b")
    assert things.names() == ("a",)
