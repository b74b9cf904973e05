"""A task is one file: a new classification task and a new generated-answer task written as data + YAML in a temp
folder (no Python) run every method end to end with --tasks-dir, the report included; the catalog's precedence,
listing and one-line errors for bad task files."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

import pytest

from harness.catalog import get_task, use_task_dirs
from harness.errors import HarnessError
from harness.loaders import DataSource
from harness.prompts import load_prompts
from tests.test_cli import harness

POSITIVE = ["great", "wonderful", "lovely", "excellent", "superb", "delightful", "charming", "brilliant"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "dull", "horrible", "clumsy", "tedious"]
FRAMES = ["The film was {}.", "What a {} meal.", "Honestly, a {} book.", "The trip felt {}.", "Such a {} song."]

SENTIMENT_YAML = """\
# A user's sentiment task: labels by name in the data, csv train and jsonl val beside this file.
task: sentiment
description: is a one-line review positive or negative?
labels: [negative, positive]
metrics: [acc, macro_f1]
data:
  val: sentiment/val.jsonl
  train: sentiment/train.csv
  label: polarity
  id: rid
templates:
  - name: question
    text: "Review: {{review}}\\nIs this review positive or negative?\\nAnswer:"
    choices: ["negative", "positive"]
  - name: stars
    text: "{{review}} Stars (1 or 5):"
    choices: ["1", "5"]
controls:
  - name: input-only
    text: "{{review}}\\nAnswer:"
    choices: ["negative", "positive"]
  - name: content-free
    text: "N/A\\nAnswer:"
    choices: ["negative", "positive"]
content_free: {review: "N/A"}
"""

DOUBLE_YAML = """\
task: double
answer: generate
max_new_tokens: 6
answer_pattern: "-?\\\\d+"
data: {val: double.jsonl, train: double-train.jsonl}
templates:
  - name: question
    text: "Q: What is twice {{n}}?\\nA:"
    choices: ["{{answer}}"]
controls:
  - name: input-only
    text: "{{n}}"
    choices: ["{{answer}}"]
"""


def _write_tasks(folder: Path) -> Path:
    rng = random.Random(0)
    (folder / "sentiment").mkdir(parents=True)
    rows = [
        {"rid": f"r{i}", "review": rng.choice(FRAMES).format(word), "polarity": label}
        for i, (word, label) in enumerate(
            [(w, "positive") for w in POSITIVE] * 3 + [(w, "negative") for w in NEGATIVE] * 3
        )
    ]
    rng.shuffle(rows)
    val, train = rows[:16], rows[16:]
    (folder / "sentiment" / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in val), encoding="utf-8")
    csv = "rid,review,polarity\n" + "".join(f'{r["rid"]},"{r["review"]}",{r["polarity"]}\n' for r in train)
    (folder / "sentiment" / "train.csv").write_text(csv, encoding="utf-8")
    (folder / "sentiment.yaml").write_text(SENTIMENT_YAML, encoding="utf-8")
    numbers = list(range(1, 60))
    rng.shuffle(numbers)
    for name, part in (("double.jsonl", numbers[:12]), ("double-train.jsonl", numbers[12:])):
        (folder / name).write_text("".join(json.dumps({"n": n, "answer": str(2 * n)}) + "\n" for n in part))
    (folder / "double.yaml").write_text(DOUBLE_YAML, encoding="utf-8")
    return folder


@pytest.fixture()
def user_tasks(tmp_path):
    folder = _write_tasks(tmp_path / "my-tasks")
    yield folder
    use_task_dirs([])


def test_task_files_load_as_declared(user_tasks):
    use_task_dirs([str(user_tasks)])
    spec = get_task("sentiment")
    assert spec.labels == ("negative", "positive") and spec.metrics == ("acc", "macro_f1")
    assert spec.origin == str(user_tasks) and spec.path == user_tasks / "sentiment.yaml"
    data = DataSource(None)
    val, train = data.load(spec, "val"), data.load(spec, "train")
    assert len(val) == 16 and len(train) == 32
    assert {e.label for e in val + train} == {0, 1}
    first = json.loads((user_tasks / "sentiment" / "val.jsonl").read_text().splitlines()[0])
    assert val[0].id == first["rid"] and val[0].label == ["negative", "positive"].index(first["polarity"])
    assert val[0].source == f"{user_tasks / 'sentiment' / 'val.jsonl'}:1"
    assert train[0].source.endswith("train.csv:2")
    prompts = load_prompts(spec)
    assert [t.name for t in prompts.templates] == ["question", "stars"]
    text, choices = prompts.get("question").render(val[0])
    assert text == f"Review: {val[0].fields['review']}\nIs this review positive or negative?\nAnswer:"
    assert choices == ["negative", "positive"]

    double = get_task("double")
    assert double.generates and double.max_new_tokens == 6 and double.metrics == ("em",)
    rows = data.load(double, "val")
    assert len(rows) == 12 and all(e.label == 0 for e in rows)
    assert load_prompts(double).get("question").render(rows[0])[1] == [str(2 * rows[0].fields["n"])]


def test_a_users_file_takes_precedence_and_tasks_lists_where_each_came_from(user_tasks, env):
    own_rte = (Path(__file__).parents[1] / "tasks" / "rte.yaml").read_text().replace("name: lm-eval", "name: mine")
    (user_tasks / "rte.yaml").write_text(own_rte, encoding="utf-8")
    use_task_dirs([str(user_tasks)])
    assert get_task("rte").path == user_tasks / "rte.yaml"
    assert load_prompts(get_task("rte")).templates[0].name == "mine"
    use_task_dirs([])
    assert get_task("rte").path.parent.name == "tasks"

    listed = harness("tasks", "--tasks-dir", str(user_tasks), env={**env, "COLUMNS": "400"})
    assert listed.returncode == 0, listed.stderr
    lines = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if line.count("│") > 3}
    assert str(user_tasks / "sentiment.yaml") in lines["sentiment"]
    assert str(user_tasks / "rte.yaml") in lines["rte"]
    assert "cb.yaml" in lines["cb"] and str(user_tasks) not in lines["cb"]
    # the environment variable adds the same folder
    by_env = harness("tasks", env={**env, "COLUMNS": "400", "HARNESS_TASKS_DIR": str(user_tasks)})
    assert by_env.returncode == 0 and "sentiment" in by_env.stdout


def test_every_method_runs_on_task_files_end_to_end(user_tasks, tiny_dir, env, tmp_path):
    out = tmp_path / "run"
    args = ["eval", "--tasks-dir", str(user_tasks), "--tasks", "sentiment,double", "--model", str(tiny_dir)]
    args += ["--methods", "prompt,ptune,bitfit,probe", "--shots", "0,1", "--seeds", "1", "--train-sizes", "8"]
    args += ["--set", "ptune.max_steps=4", "--set", "bitfit.max_steps=4", "--set", "ptune.variants=prompt-tuning"]
    args += ["--set", "ptune.eval_every=2", "--set", "bitfit.eval_every=2", "--out", str(out)]
    run = harness(*args, env=env, timeout=900)
    assert run.returncode == 0, run.stderr
    with sqlite3.connect(out / "results.db") as db:
        methods = {(t, m) for t, m in db.execute("SELECT DISTINCT task, method FROM units")}
    assert methods == {
        ("sentiment", "prompt"),
        ("sentiment", "ptune"),
        ("sentiment", "bitfit"),
        ("sentiment", "probe"),
        ("double", "prompt"),
        ("double", "ptune"),
        ("double", "bitfit"),
    }  # a generated answer has no class label for the probe: noted in the report, not run
    report = (out / "report.md").read_text()
    assert "sentiment" in report and "double" in report and "probe not applicable: double" in report
    # the store keeps each task's spec: the report re-renders byte-identically without the task files
    before = report
    rerun = harness("report", str(out), env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "report.md").read_text() == before


@pytest.mark.parametrize(
    "change, message",
    [
        (("metrics: [acc, macro_f1]", "metrics: [acc, f2]"), "sentiment.yaml: unknown metric 'f2' (metrics): known"),
        (("labels: [negative, positive]\n", ""), "sentiment.yaml: field 'labels' is needed for answer: choice"),
        (("  label: polarity\n", "  label: stars\n"), "val.jsonl:1: no field 'stars' (data.label) in this row"),
        (("val: sentiment/val.jsonl", "val: sentiment/nope.jsonl"), "no val split: "),
        (("description:", "descripton:"), "sentiment.yaml: unknown field(s) descripton"),
        (("task: sentiment", "task: Sent/iment"), "sentiment.yaml: field 'task' must be a name"),
        (("- name: stars", "- name: st/ars"), "sentiment.yaml: template name 'st/ars'"),
        (("data:\n", "data:\n  loader: nope\n"), "sentiment.yaml: unknown loader 'nope' (data.loader): known"),
    ],
)
def test_a_bad_task_file_is_one_line_naming_it(user_tasks, env, tmp_path, change, message):
    path = user_tasks / "sentiment.yaml"
    path.write_text(path.read_text().replace(*change), encoding="utf-8")
    name = "sentiment" if "task: Sent" not in change[1] else "rte"
    run = harness("prompts", name, "--tasks-dir", str(user_tasks), env=env)
    assert run.returncode == 2
    assert message in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_a_label_outside_the_set_names_the_row(user_tasks):
    path = user_tasks / "sentiment" / "val.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"rid": "x", "review": "Fine.", "polarity": "neutral"})
    path.write_text("\n".join(lines) + "\n")
    use_task_dirs([str(user_tasks)])
    with pytest.raises(HarnessError, match=r"val.jsonl:3: label 'neutral' is not one of sentiment's labels"):
        DataSource(None).load(get_task("sentiment"), "val")


def test_the_readme_example_task_file_is_the_one_tested_here(user_tasks):
    """README's complete example (a `# my-tasks/sentiment.yaml` block) loads and renders like this file's."""
    import re

    import yaml

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\n# my-tasks/sentiment.yaml\n(.*?)```", readme, re.S).group(1)
    documented, tested = yaml.safe_load(block), yaml.safe_load(SENTIMENT_YAML)
    assert documented == tested
    (user_tasks / "sentiment.yaml").write_text(block, encoding="utf-8")
    use_task_dirs([str(user_tasks)])
    spec = get_task("sentiment")
    example = DataSource(None).load(spec, "val")[0]
    assert load_prompts(spec).get("stars").render(example) == (
        f"{example.fields['review']} Stars (1 or 5):",
        ["1", "5"],
    )
