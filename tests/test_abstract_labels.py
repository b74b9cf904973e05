"""Abstract-label demos (task learning, after Pan et al. 2023): gold demo labels shown as neutral symbols and the
query scored on the same symbols; skipped with a note where the choices are per-example texts; the task recognition
and task learning gains on hand-made stores, per model and across sizes."""

from __future__ import annotations

import json
import sqlite3

import pytest
from rich.console import Console

from harness.analysis import analyse
from harness.catalog import get_task
from harness.config import DEFAULT_VARIANTS, EvalConfig
from harness.decompose import decompose
from harness.engine import Engine
from harness.evaluate import plan_tasks
from harness.loaders import DataSource, load_train, resolve_train_source
from harness.methods.prompt import (
    ABSTRACT_SYMBOLS,
    PromptUnit,
    abstract_labels_unavailable,
    abstract_symbols,
    build_prefix,
    draw_demos,
    plan_units,
    run_unit,
)
from harness.metrics import p_value
from harness.prompts import load_prompts
from harness.report import render
from harness.store import Store
from harness.tasks import stratified_subset
from tests.test_cli import harness
from tests.test_decompose import MODEL, N, _prompt


def _task(superglue_dir, name: str):
    data = DataSource(superglue_dir)
    spec = get_task(name)
    train = load_train(spec, resolve_train_source("auto", data), data)
    return spec, load_prompts(spec), stratified_subset(data.load(spec, "val"), 6, 0), train


@pytest.mark.parametrize("name", ["cb", "rte"])
def test_abstract_label_prompt_shows_and_scores_symbols(name, superglue_dir, tiny_lm):
    spec, prompts, examples, train = _task(superglue_dir, name)
    symbols = abstract_symbols(prompts, spec, 4, 0)
    # one distinct symbol per label, none of them an answer any template of the task gives
    real = {c.strip().lower() for t in prompts.templates + prompts.controls for c in t.choices}
    assert len(symbols) == len(spec.labels) == len(set(symbols))
    assert set(symbols) <= set(ABSTRACT_SYMBOLS) and not set(symbols) & real
    # seeded by the demo set: the same mapping again, another for other demo seeds
    assert abstract_symbols(prompts, spec, 4, 0) == symbols
    assert len({tuple(abstract_symbols(prompts, spec, 4, s)) for s in range(6)}) > 1

    template = prompts.get("lm-eval")
    demos = draw_demos(train, 4, 0, "random", name)
    prefix = build_prefix(template, prompts, demos, None, spec, symbols)
    # each demo keeps its input and its gold label, shown as that label's symbol
    expected = "".join(
        template.render(d)[0] + template.target_delimiter + symbols[d.label] + prompts.fewshot_delimiter for d in demos
    )
    assert prefix == expected
    answers = [line.removeprefix("Answer: ") for line in prefix.splitlines() if line.startswith("Answer:")]
    assert answers == [symbols[d.label] for d in demos] and len(set(answers)) > 1  # no real answer is shown

    engine = Engine(*tiny_lm)
    sent = []
    score = engine.score
    engine.score = lambda requests, **kw: sent.extend(requests) or score(requests, **kw)
    unit = PromptUnit("lm-eval", 4, 0, kind="abstract_labels")
    assert unit.key == "abstract_labels/lm-eval/k4/s0"
    [out] = run_unit(unit, spec, prompts, engine, examples, train, "random")
    assert out.variant == "abstract_labels"  # no calibrated twin: that belongs to gold units
    # the query is scored on the symbols: choice i as the symbol of label i
    assert all(r.continuations == [template.target_delimiter + s for s in symbols] for r in sent)
    assert all(r.context == prefix + template.render(e)[0] for r, e in zip(sent, examples))
    assert [r.gold for r in out.records] == [[e.label] for e in examples]
    assert all(r.n_chars == [len(s) for s in symbols] and len(r.logprobs) == len(symbols) for r in out.records)
    # the mapping is the demo set's, not the template's
    sent.clear()
    run_unit(PromptUnit("pet", 4, 0, kind="abstract_labels"), spec, prompts, engine, examples[:2], train, "random")
    assert all(r.continuations == [prompts.get("pet").target_delimiter + s for s in symbols] for r in sent)


def test_copa_is_skipped_with_a_note(superglue_dir):
    _, copa, _, _ = _task(superglue_dir, "copa")
    why = abstract_labels_unavailable(get_task("copa"), copa, None)
    assert why.startswith("abstract labels not run on copa: the answer choices of lm-eval, gpt3, pet")
    assert "per-example texts" in why
    # its two templates with fixed choices alone (Option 1/2, A/B) can run
    assert abstract_labels_unavailable(get_task("copa"), copa, ["mc-numbers", "instruction-letters"]) is None
    assert "not a fixed label set" in abstract_labels_unavailable(get_task("record"), load_prompts("record"), None)

    cfg = EvalConfig(
        tasks=["copa", "cb"],
        data_dir=str(superglue_dir),
        limit=4,
        shots=[0, 2],
        seeds=1,
        variants=["gold", "abstract_labels"],
    )
    console = Console(record=True, width=300)
    plans, _, _ = plan_tasks(cfg, console, {})
    by_task = {p.spec.name: p for p in plans}
    assert not [u for u in by_task["copa"].units if u.kind == "abstract_labels"]
    assert by_task["copa"].info["variants_not_run"] == {"abstract_labels": why}
    assert why in by_task["copa"].info["notes"] and why in console.export_text()
    cb = [u.key for u in by_task["cb"].units if u.kind == "abstract_labels"]
    assert len(cb) == len(by_task["cb"].task.prompts.templates)  # every template at k = 2, one seed
    assert "abstract_labels/lm-eval/k2/s0" in cb and "variants_not_run" not in by_task["cb"].info


def test_plan_units_adds_abstract_units_at_their_k(superglue_dir):
    _, prompts, _, train = _task(superglue_dir, "rte")
    units = plan_units(prompts, [0, 1, 4], 2, ["lm-eval"], "random", len(train), [4], False, abstract_label_shots=[4])
    assert [u.key for u in units] == [
        "gold/lm-eval/k0/s0",
        "gold/lm-eval/k1/s0",
        "gold/lm-eval/k1/s1",
        "gold/lm-eval/k4/s0",
        "gold/lm-eval/k4/s1",
        "random_labels/lm-eval/k4/s0",
        "random_labels/lm-eval/k4/s1",
        "abstract_labels/lm-eval/k4/s0",
        "abstract_labels/lm-eval/k4/s1",
    ]


def test_variants_abstract_labels_on_the_command_line(tiny_dir, env, tmp_path):
    assert EvalConfig().variants == list(DEFAULT_VARIANTS) and "abstract_labels" not in DEFAULT_VARIANTS
    out = tmp_path / "run"
    args = ["eval", "--tasks", "rte,copa", "--limit", "4", "--shots", "0,2", "--seeds", "1", "--templates", "lm-eval"]
    run = harness(*args, "--model", str(tiny_dir), "--out", str(out), "--variants", "gold,random_labels,abstract_labels",
                  "--no-train-picks", env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    with sqlite3.connect(out / "results.db") as db:
        units = {(t, u) for t, u in db.execute("select task, unit from units where method = 'prompt'")}
        copa = json.loads(db.execute("select info from tasks where task = 'copa'").fetchone()[0])
    assert ("rte", "abstract_labels/lm-eval/k2/s0") in units
    assert not [u for t, u in units if t == "copa" and u.startswith("abstract_labels/")]
    assert "abstract labels not run on copa" in " ".join(run.stderr.split())
    assert copa["variants_not_run"]["abstract_labels"].endswith("per-example texts, not a fixed list of labels")
    report = (out / "report.md").read_text()
    assert "| task | zero-shot mean | random labels k=2 | task recognition |" in report
    assert "| copa |" in report and "not run: the answer choices of lm-eval are per-example texts" in report


def _store(tmp_path, abstract: bool = True) -> Store:
    """RTE: zero-shot 60, random labels 70, abstract labels 58 (chance 50); COPA: abstract labels skipped."""
    store = Store(tmp_path)
    store.put_model(MODEL, 1_000_000, {"source": "hand-made", "device": "cpu", "dtype": "float32"})
    store.put_task(MODEL, "rte", {"n_eval": N})
    _prompt(store, "rte", "control", "null", 0, 50)
    _prompt(store, "rte", "gold", "A", 0, 60, 0.6)
    _prompt(store, "rte", "gold", "A", 4, 80, 0.8)
    _prompt(store, "rte", "random_labels", "A", 4, 70)
    if abstract:
        _prompt(store, "rte", "abstract_labels", "A", 4, 58)
        why = "abstract labels not run on copa: the answer choices of lm-eval are per-example texts, not a fixed list"
        store.put_task(MODEL, "copa", {"n_eval": N, "variants_not_run": {"abstract_labels": why}})
        _prompt(store, "copa", "gold", "A", 0, 55, 0.5)
        _prompt(store, "copa", "gold", "A", 4, 62, 0.6)
        _prompt(store, "copa", "random_labels", "A", 4, 57)
    return store


def test_recognition_and_learning_on_a_hand_made_store(tmp_path):
    store = _store(tmp_path)
    _, results = analyse(store)
    d = {r.task: decompose(r) for r in results}
    rte, copa = d["rte"], d["copa"]
    assert rte.chance.value == pytest.approx(0.50)
    assert rte.abstract_labels_few.value == pytest.approx(0.58)
    # task recognition = random-label few-shot - zero-shot; task learning = abstract-label few-shot - chance
    assert rte.task_recognition.value == pytest.approx(0.10)
    assert rte.task_learning.value == pytest.approx(0.08)
    # paired over the same examples: the 10 points of recognition are clear of zero (the records are nested) ...
    lo, hi = rte.task_recognition.ci
    assert 0 < lo < 0.10 < hi and rte.task_recognition.n == N and p_value(rte.task_recognition) < 0.01
    # ... while 58 of 100 against a fixed chance of 50 is not: learning's replicates are abstract labels' minus 0.5
    assert rte.task_learning.samples == pytest.approx(rte.abstract_labels_few.samples - 0.5)
    assert rte.task_learning.ci[0] < 0 < rte.task_learning.ci[1] and p_value(rte.task_learning) > 0.05
    assert copa.task_recognition.value == pytest.approx(0.02) and copa.task_learning is None
    assert rte.attempts["abstract labels k=4"][0].value == pytest.approx(0.5)
    store.close()

    report = render(tmp_path).read_text()
    ladder = next(line for line in report.splitlines() if line.startswith("| task | metric | n | chance |"))
    assert ladder.endswith("| random labels k=4 | abstract labels k=4 | best prompt picked on train | ecological |")
    row = next(line for line in report.splitlines() if line.startswith("| rte | 60.0 ["))
    assert "| 70.0 [" in row and "| +10.0 [" in row and "| 58.0 [" in row
    assert "| +8.0 [" in row and "| 50.0 | 50.0 |" in row
    assert "| copa |" in report and "| not run: the answer choices of lm-eval are per-example texts" in report
    assert render(tmp_path).read_text() == report


def test_a_store_without_abstract_labels_reports_as_before(tmp_path):
    _store(tmp_path, abstract=False).close()
    report = render(tmp_path).read_text()
    assert "abstract labels" not in report and "task learning" not in report and "Task recognition" not in report


def test_recognition_and_learning_across_sizes(tmp_path):
    """Three sizes a decade apart: task learning gains 5 points per decade, task recognition none."""
    from harness.scaling import task_scaling

    store = Store(tmp_path)
    for i, (name, params) in enumerate([("fam-1m", 10**6), ("fam-10m", 10**7), ("fam-100m", 10**8)]):
        store.put_model(name, params, {"source": "hand-made"})
        store.put_task(name, "rte", {"n_eval": N})
        _prompt(store, "rte", "gold", "A", 0, 60 + 3 * i, 0.6, model=name)
        _prompt(store, "rte", "gold", "A", 4, 70 + 3 * i, 0.7, model=name)
        _prompt(store, "rte", "random_labels", "A", 4, 66 + 3 * i, model=name)
        _prompt(store, "rte", "abstract_labels", "A", 4, 50 + 5 * i, model=name)
    _, results = analyse(store)
    rows = [(r.model, p, decompose(r)) for r in results for m, p, _ in store.models() if m == r.model]
    s = task_scaling("rte", rows)
    assert s.slopes["task recognition"].value == pytest.approx(0.0, abs=1e-9)
    assert s.slopes["task learning"].value == pytest.approx(0.05)
    lo, hi = s.slopes["task learning"].ci
    assert 0 < lo < 0.05 < hi
    store.close()

    report = render(tmp_path).read_text()
    header = next(line for line in report.splitlines() if line.startswith("| task | control |"))
    assert header.endswith("| attempt k=0 | task recognition | task learning | prompt - ecological |")
    assert "Across sizes, task recognition +0.0 [" in report and "task learning +5.0 [" in report
    assert "![task recognition and task learning against size](plots/scaling-recognition.png)" in report
    assert (tmp_path / "plots" / "scaling-recognition.png").is_file()
