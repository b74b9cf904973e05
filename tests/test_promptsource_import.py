"""promptsource templates beside an lm-eval task (harness/promptsource.py): a `<task>.promptsource.yaml` in
promptsource's templates.yaml shape (`!Template` tags included), written here with a tiny lm-eval task and its data,
adds each template with answer_choices as `ps.<name>` (input, choices and gold checked on the real rows), leaves out
with a one-line note those it cannot score, and `use_prompt: promptsource:<name>` makes one the task's own. No model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.catalog import get_task, use_task_dirs
from harness.errors import HarnessError
from harness.lm_eval_tasks import BLANK, TARGET
from harness.loaders import DataSource
from harness.prompts import load_prompts
from tests.conftest import offline_datasets
from tests.test_cli import harness

ROWS = [
    {"premise": "The cat sat on the mat.", "hypothesis": "A cat sat down.", "label": 0},
    {"premise": "It rained all day ||| the streets were wet.", "hypothesis": "It was sunny.", "label": 1},
    {"premise": "Tom bought three apples.", "hypothesis": "Tom bought fruit.", "label": 0},
    {"premise": " ".join(["word"] * 700) + ".", "hypothesis": "The text is short.", "label": 1},
    {"premise": "The shop closes at noon.", "hypothesis": "The shop is open all night.", "label": 1},
]
TRAIN = [
    {"premise": "Ann reads a book.", "hypothesis": "Ann is reading.", "label": 0},
    {"premise": "The glass is empty.", "hypothesis": "The glass is full.", "label": 1},
]

TASK_YAML = """\
task: tiny_nli
dataset_path: json
dataset_kwargs: {data_files: {validation: data/val.jsonl, train: data/train.jsonl}}
training_split: train
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{premise}}\\nQuestion: {{hypothesis}} True or False?\\nAnswer:"
doc_to_target: label
doc_to_choice: ["True", "False"]
"""

# promptsource's templates.yaml shape: id -> !Template {answer_choices, id, jinja, metadata, name, reference}
PROMPTSOURCE_YAML = """\
dataset: tiny_nli
templates:
  0b1f6a4e-0001-4000-8000-000000000001: !Template
    answer_choices: Yes ||| No
    id: 0b1f6a4e-0001-4000-8000-000000000001
    jinja: '{{premise}} Given only that, is "{{hypothesis}}" correct? Yes or no? ||| {% if label != -1 %}{{
      answer_choices[label] }}{% endif %}'
    metadata: !TemplateMetadata
      choices_in_prompt: true
      languages:
      - en
      metrics:
      - Accuracy
      original_task: true
    name: is it correct
    reference: written for this test
  0b1f6a4e-0002-4000-8000-000000000002: !Template
    answer_choices: '{{hypothesis}} ||| Not so: {{hypothesis}}'
    id: 0b1f6a4e-0002-4000-8000-000000000002
    jinja: "{{premise}}\\nWhich follows? ||| {{ answer_choices[label] }}"
    metadata: !TemplateMetadata
      original_task: false
    name: which follows
    reference: ''
  0b1f6a4e-0003-4000-8000-000000000003: !Template
    answer_choices: null
    id: 0b1f6a4e-0003-4000-8000-000000000003
    jinja: '{{premise}} Write a sentence that follows. ||| {{hypothesis}}'
    metadata: !TemplateMetadata
      original_task: false
    name: write one
    reference: ''
  0b1f6a4e-0004-4000-8000-000000000004: !Template
    answer_choices: Yes ||| No
    id: 0b1f6a4e-0004-4000-8000-000000000004
    jinja: '{{premise}} Is "{{hypothesis}}" true? ||| {{ answer_choices[label] | upper }}'
    metadata: !TemplateMetadata
      original_task: true
    name: shouted
    reference: ''
  0b1f6a4e-0005-4000-8000-000000000005: !Template
    answer_choices: Yes ||| No
    id: 0b1f6a4e-0005-4000-8000-000000000005
    jinja: '{{premise}} Is "{{hypothesis}}" false? ||| {{ answer_choices[1 - label] }}'
    metadata: !TemplateMetadata
      original_task: true
    name: is it false
    reference: ''
  0b1f6a4e-0006-4000-8000-000000000006: !Template
    answer_choices: Yes ||| No
    id: 0b1f6a4e-0006-4000-8000-000000000006
    jinja: '{{premise}} ||| {{ [answer_choices[label]] | choice }}'
    metadata: !TemplateMetadata
      original_task: true
    name: random pick
    reference: ''
"""

QUESTION = ' Given only that, is "{}" correct? Yes or no?'


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_task(folder: Path, name: str = "tiny_nli", task_yaml: str = TASK_YAML, templates: str = PROMPTSOURCE_YAML):
    (folder / "data").mkdir(parents=True, exist_ok=True)
    _jsonl(folder / "data" / "val.jsonl", ROWS)
    _jsonl(folder / "data" / "train.jsonl", TRAIN)
    (folder / f"{name}.yaml").write_text(task_yaml.replace("task: tiny_nli", f"task: {name}"))
    (folder / f"{name}.promptsource.yaml").write_text(templates)
    return folder


@pytest.fixture()
def offline(_hermetic_environment, tmp_path_factory, monkeypatch):
    offline_datasets(monkeypatch, tmp_path_factory.getbasetemp() / "promptsource_datasets_cache")


@pytest.fixture()
def folder(tmp_path, offline):
    (tmp_path / "tasks").mkdir()
    use_task_dirs([str(tmp_path / "tasks")])
    yield tmp_path / "tasks"
    use_task_dirs([])


def _load(name: str):
    spec = get_task(name)
    return spec, DataSource(None).load(spec, "val"), load_prompts(spec)


def test_templates_with_answer_choices_are_extra_templates(folder, capsys):
    write_task(folder)
    spec, val, prompts = _load("tiny_nli")
    assert spec.labels == ("True", "False") and [ex.label for ex in val] == [r["label"] for r in ROWS]
    assert [t.name for t in prompts.templates] == ["lm-eval", "ps.is-it-correct", "ps.which-follows"]
    assert [t.name for t in prompts.controls] == ["input-only", "content-free"]

    fixed, per_row = prompts.get("ps.is-it-correct"), prompts.get("ps.which-follows")
    assert fixed.fixed_choices and not per_row.fixed_choices  # the choices read no field / the hypothesis
    for row, ex in zip(ROWS, val):
        text, choices = fixed.render(ex)
        assert choices == ["Yes", "No"] and choices[ex.label] == ("Yes" if row["label"] == 0 else "No")
        if len(row["premise"]) < 2000:
            assert text == row["premise"] + QUESTION.format(row["hypothesis"])
        text, choices = per_row.render(ex)
        assert choices == [row["hypothesis"], "Not so: " + row["hypothesis"]]
        assert choices[ex.label] == (row["hypothesis"] if row["label"] == 0 else "Not so: " + row["hypothesis"])
        if len(row["premise"]) < 2000:
            assert text == row["premise"] + "\nWhich follows?"
    # a `|||` in the document's own text is kept whole, not taken for the separator
    assert fixed.render(val[1])[0].startswith("It rained all day ||| the streets were wet. Given only")
    # every {{ ... }} cut to 2,048 characters, as promptsource cuts it (jinja's truncate: words kept whole, "...")
    long_text = fixed.render(val[3])[0]
    assert long_text.startswith("word word") and len(long_text) < len(ROWS[3]["premise"])
    assert long_text.split(" Given only")[0].endswith("word...") and len(long_text.split(" Given only")[0]) <= 2048
    # the calibration input: the document's texts "N/A", its label kept
    assert prompts.content_free == {BLANK: True}
    blank = fixed.render(val[0], {**val[0].fields, **prompts.content_free})
    assert blank == ("N/A" + QUESTION.format("N/A"), ["Yes", "No"])
    # the templates it cannot score: one line each on stderr, naming the file and the template, and why
    notes = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    path = folder / "tiny_nli.promptsource.yaml"
    expected = {
        "write one": "it has no answer_choices",
        "shouted": "its target 'YES' is not one of its answer choices ['Yes', 'No'] on example 0",
        "is it false": "its target 'No' is choice 1, the task's gold is choice 0 on example 0",
        "random pick": "promptsource's random 'choice' filter",
    }
    assert len(notes) == len(expected), notes
    for name, why in expected.items():
        line = next(n for n in notes if f"'{name}'" in n)
        assert line.startswith(f"harness: {path}: promptsource template '{name}' not added: ") and why in line


def test_use_prompt_makes_a_template_the_tasks_own(folder, capsys):
    task = TASK_YAML.replace('doc_to_choice: ["True", "False"]\n', "") + 'use_prompt: "promptsource:is it correct"\n'
    task = task.replace("doc_to_text:", "# doc_to_text:").replace("doc_to_target:", "# doc_to_target:")
    generate = task.replace("output_type: multiple_choice", "output_type: generate_until")
    write_task(folder, "tiny_ps", task)
    write_task(folder, "tiny_gen", generate.replace("is it correct", "write one"))
    spec, val, prompts = _load("tiny_ps")
    # the template's answer choices are the labels; each document's gold is the choice its target is
    assert spec.labels == ("Yes", "No") and [ex.label for ex in val] == [r["label"] for r in ROWS]
    own = prompts.get("lm-eval")
    assert "promptsource:is it correct" in own.note
    for row, ex in zip(ROWS[:3], val):
        assert own.render(ex) == (row["premise"] + QUESTION.format(row["hypothesis"]), ["Yes", "No"])
    # the controls follow it: its text on the document with its texts "N/A", and the values it shows
    assert prompts.get("content-free").render(val[0])[0] == "N/A" + QUESTION.format("N/A")
    shown = prompts.get("input-only").render(val[0])[0]
    assert shown.startswith(f"{ROWS[0]['premise']} {ROWS[0]['hypothesis']}")
    # the file's other usable templates are extra ones; the task's own is not added twice
    assert [t.name for t in prompts.templates] == ["lm-eval", "ps.which-follows"]

    # a generate_until task takes the target as its gold answer; no extra templates there
    capsys.readouterr()
    spec, val, prompts = _load("tiny_gen")
    assert spec.generates and [ex.fields[TARGET] for ex in val] == [r["hypothesis"] for r in ROWS]
    assert prompts.get("lm-eval").render(val[0]) == (
        ROWS[0]["premise"] + " Write a sentence that follows.",
        [ROWS[0]["hypothesis"]],
    )
    assert [t.name for t in prompts.templates] == ["lm-eval"]
    assert "promptsource templates are added to multiple_choice tasks" in capsys.readouterr().err


BAD_FILES = {
    "yaml": ("jinja: '{{premise}} Given", "jinja: '{{premise}}' Given", "invalid YAML"),
    "shape": ("templates:\n", "templates: []\nother:\n", "expected promptsource's templates.yaml shape"),
    "syntax": ("Which follows? |||", "Which follows? {% if %} |||", "template 'promptsource: which follows' (jinja)"),
    "sandbox": ('is "{{hypothesis}}" correct', 'is "{{hypothesis.__class__}}" correct', "unsafe"),
    "answer_choices": ("answer_choices: null", "answer_choices: {a: 1}", "'answer_choices' must be a string"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_templates_file_is_a_one_line_error_naming_it(case, folder):
    old, new, message = BAD_FILES[case]
    assert old in PROMPTSOURCE_YAML
    write_task(folder, templates=PROMPTSOURCE_YAML.replace(old, new))
    with pytest.raises(HarnessError) as err:
        _load("tiny_nli")
    text = str(err.value)
    assert text.startswith(f"{folder / 'tiny_nli.promptsource.yaml'}:") and message in text and "\n" not in text, text


BAD_USE_PROMPT = {
    "unknown name": ('"promptsource:nope"', "no template named 'nope' in {ps} (its templates: is it correct,"),
    "pattern": ('"promptsource:*"', "a pattern ('*') is not supported: name one template"),
    "other category": ('"qa-basic:q-newline-a"', "'qa-basic' prompts are not supported"),
    "no answer_choices": ('"promptsource:write one"', "has no answer_choices: a multiple_choice task needs them"),
    "no file": ('"promptsource:is it correct"', "promptsource prompts are read from {ps} (promptsource's"),
}


@pytest.mark.parametrize("case", sorted(BAD_USE_PROMPT))
def test_bad_use_prompt_is_a_one_line_error_naming_the_task_file(case, folder):
    value, message = BAD_USE_PROMPT[case]
    write_task(folder, task_yaml=TASK_YAML + f"use_prompt: {value}\n")
    ps = folder / "tiny_nli.promptsource.yaml"
    if case == "no file":
        ps.unlink()
    with pytest.raises(HarnessError) as err:
        _load("tiny_nli")
    text = str(err.value)
    assert text.startswith(f"{folder / 'tiny_nli.yaml'}: field 'use_prompt': "), text
    assert message.format(ps=ps) in text and "\n" not in text, text


def test_harness_tasks_lists_them_and_prompts_renders_them(folder, tmp_path):
    write_task(folder)
    env = {**os.environ, "HARNESS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "400"}
    listed = harness("tasks", "--tasks-dir", str(folder), env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "tiny_nli" in line)
    assert "lm-eval, ps.is-it-correct, ps.which-follows" in row
    assert not any("tiny_nli.promptsource" in line.split("│")[1] for line in listed.stdout.splitlines() if "│" in line)
    shown = harness("prompts", "tiny_nli", "--tasks-dir", str(folder), "--example", "2", env=env)
    assert shown.returncode == 0, shown.stderr
    assert ROWS[2]["premise"] + QUESTION.format(ROWS[2]["hypothesis"]) in shown.stdout
    assert "choices: ' Yes', ' No'; gold: 0" in shown.stdout


def test_harness_eval_runs_them(folder, tiny_dir, tmp_path):
    """The prompt method on a tiny random model: each added template scored, with demos, and calibrated where its
    choices are fixed (its content-free input rendered as above)."""
    write_task(folder)
    out = tmp_path / "run"
    env = {**os.environ, "HARNESS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "HARNESS_CACHE": str(tmp_path / "c")}
    args = ["eval", "--tasks-dir", str(folder), "--tasks", "tiny_nli", "--methods", "prompt", "--shots", "0,1"]
    run = harness(*args, "--model", str(tiny_dir), "--out", str(out), env=env, timeout=900)
    assert run.returncode == 0, run.stderr
    rows = {tuple(line.split(",")[4:7]) for line in (out / "summary.csv").read_text().splitlines()[1:]}
    for shots in ("0", "1"):
        assert {("gold", shots, "ps.is-it-correct"), ("calibrated", shots, "ps.is-it-correct")} <= rows
        assert ("gold", shots, "ps.which-follows") in rows and ("calibrated", shots, "ps.which-follows") not in rows
