"""lm-evaluation-harness task YAMLs run unchanged: a folder holding a multiple_choice task and a generate_until task
(json data files, an `include`, a `!function`, exact_match options), written here, is listed by `harness tasks`,
scored as lm-eval 0.4.13 scores it (its own API on the real SmolLM2-135M, the same files read through `include`),
run end to end by `harness eval`, and bad task files are one-line errors naming the file."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest
import yaml

from harness.catalog import get_task, use_task_dirs
from harness.engine import Engine, cut_at_stop
from harness.errors import HarnessError
from harness.loaders import DataSource
from harness.methods.prompt import PromptUnit, build_prefix, draw_demos, run_unit
from harness.metrics import generated_correct, predictions
from harness.prompts import load_prompts
from harness.store import Record
from harness.tasks import TaskSpec
from tests.conftest import offline_datasets, require
from tests.test_cli import harness

try:
    import lm_eval
except ImportError:  # the test extra installs it; without it the agreement cannot be checked
    lm_eval = None

POSITIVE = ["great", "wonderful", "lovely", "excellent", "superb", "delightful"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "dull", "horrible"]
FRAMES = ["The film was {}.", "What a {} meal.", "Honestly, a {} book.", "The trip felt {}."]
SHOTS = (0, 2)
TOLERANCE = 1e-3  # nats, as tests/test_lm_eval_agreement.py

COMMON_YAML = """\
# settings both tasks include (no `task`: not a task of its own)
dataset_path: json
training_split: train
validation_split: validation
"""

SENTIMENT_YAML = """\
include: _common.yaml
task: lm_sentiment
dataset_kwargs:
  data_files: {validation: data/sentiment_val.jsonl, train: data/sentiment_train.jsonl}
output_type: multiple_choice
process_docs: !function utils.process_docs
doc_to_text: "Review: {{review}}\\nIs this review positive or negative?\\nAnswer:"
doc_to_target: label
doc_to_choice: ["negative", "positive"]
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""

ADD_YAML = """\
include: _common.yaml
task: lm_add
dataset_kwargs:
  data_files: {validation: data/add_val.jsonl, train: data/add_train.jsonl}
output_type: generate_until
doc_to_text: "Question: What is {{a}} plus {{b}}?\\nAnswer:"
doc_to_target: "{{a + b}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 5
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    regexes_to_ignore: ["^\\\\s+"]
"""

UTILS_PY = """\
def process_docs(dataset):
    return dataset.map(_clean)


def _clean(doc):
    return {"review": doc["review"].strip()}
"""

COMPANION_YAML = """\
templates:
  - name: stars
    text: "{{review}} Stars (1 or 5):"
    choices: ["1", "5"]
controls:
  - name: input-only
    text: "{{review}}\\nAnswer:"
    choices: ["negative", "positive"]
content_free: {review: "N/A"}
"""


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_tasks(folder: Path) -> Path:
    """The lm-eval task folder: two tasks, a file they include, their Python helper and data, a companion file."""
    rng = random.Random(18)
    data = folder / "data"
    data.mkdir(parents=True)
    reviews = []
    for frame in FRAMES:
        for words, label in ((POSITIVE, 1), (NEGATIVE, 0)):
            for word in words:
                reviews.append({"review": "  " + frame.format(word) + " ", "label": label})
    rng.shuffle(reviews)
    _jsonl(data / "sentiment_val.jsonl", reviews[:24])
    _jsonl(data / "sentiment_train.jsonl", reviews[24:32])
    sums = [{"a": a, "b": b} for a in range(1, 10) for b in range(1, 10)]
    rng.shuffle(sums)
    _jsonl(data / "add_val.jsonl", sums[:24])
    _jsonl(data / "add_train.jsonl", sums[24:32])
    (folder / "_common.yaml").write_text(COMMON_YAML)
    (folder / "sentiment.yaml").write_text(SENTIMENT_YAML)
    (folder / "add.yaml").write_text(ADD_YAML)
    (folder / "utils.py").write_text(UTILS_PY)
    (folder / "lm_sentiment.harness.yaml").write_text(COMPANION_YAML)
    return folder


@pytest.fixture()
def offline(_hermetic_environment, tmp_path_factory, monkeypatch) -> dict:
    """datasets reads the local files offline and caches under a temp folder (here and in subprocesses)."""
    import datasets.config

    cache = tmp_path_factory.getbasetemp() / "lm_eval_import_datasets_cache"
    values = {"HF_DATASETS_CACHE": str(cache), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    return values


@pytest.fixture()
def tasks_dir(tmp_path, offline) -> Path:
    folder = write_tasks(tmp_path / "lm-eval-tasks")
    use_task_dirs([str(folder)])
    yield folder
    use_task_dirs([])


def cli_env(offline: dict) -> dict:
    return {**os.environ, **offline, "HARNESS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "400"}


# ---------------------------------------------------------------- reading (no model)
def test_harness_tasks_lists_lm_eval_tasks_with_their_file(tasks_dir, offline):
    listed = harness("tasks", "--tasks-dir", str(tasks_dir), env=cli_env(offline))
    assert listed.returncode == 0, listed.stderr
    rows = {line.split("│")[1].strip(): line for line in listed.stdout.splitlines() if line.count("│") > 5}
    assert str(tasks_dir / "sentiment.yaml") in rows["lm_sentiment"]
    assert "negative, positive" in rows["lm_sentiment"] and "acc, acc_norm" in rows["lm_sentiment"]
    assert "lm-eval, stars" in rows["lm_sentiment"]  # the companion file's template after the task's own
    assert str(tasks_dir / "add.yaml") in rows["lm_add"] and "(generated answer)" in rows["lm_add"]
    assert "input-only, content-free" in rows["lm_add"]
    assert not any(name.startswith(("_common", "lm_sentiment.harness")) for name in rows)


def test_documents_templates_and_controls_are_lm_evals(tasks_dir):
    sentiment, add = get_task("lm_sentiment"), get_task("lm_add")
    assert (sentiment.loader, sentiment.answer, sentiment.labels) == ("lm-eval", "choice", ("negative", "positive"))
    assert sentiment.metrics == ("acc", "acc_norm") and sentiment.path == tasks_dir / "sentiment.yaml"
    assert (add.answer, add.metrics, add.stop, add.max_new_tokens) == ("generate", ("em",), ("\n",), 5)
    assert add.exact_match == {"ignore_case": True, "regexes_to_ignore": ["^\\s+"]}

    data = DataSource(None)
    val, train = data.load(sentiment, "val"), data.load(sentiment, "train")
    assert (len(val), len(train)) == (24, 8)
    rows = [json.loads(line) for line in (tasks_dir / "data" / "sentiment_val.jsonl").read_text().splitlines()]
    assert [ex.label for ex in val] == [r["label"] for r in rows]
    assert val[0].fields["review"] == rows[0]["review"].strip()  # process_docs (a !function) ran
    prompts = load_prompts(sentiment)
    assert [t.name for t in prompts.templates] == ["lm-eval", "stars"]
    assert [t.name for t in prompts.controls] == ["content-free", "input-only"]  # the companion's input-only
    text, choices = prompts.get("lm-eval").render(val[0])
    assert text == f"Review: {val[0].fields['review']}\nIs this review positive or negative?\nAnswer:"
    assert choices == ["negative", "positive"] and prompts.get("lm-eval").target_delimiter == " "
    assert prompts.get("content-free").render(val[0])[0] == "Review: N/A\nIs this review positive or negative?\nAnswer:"
    assert prompts.content_free == {"lm_eval_blank": True, "review": "N/A"}

    sums = data.load(add, "val")
    prompts = load_prompts(add)
    a, b = sums[3].fields["a"], sums[3].fields["b"]
    assert prompts.get("lm-eval").render(sums[3]) == (f"Question: What is {a} plus {b}?\nAnswer:", [str(a + b)])
    assert prompts.get("input-only").render(sums[3])[0] == f"{a} {b}\nAnswer:"  # the values shown, the answer cue
    assert prompts.get("content-free").render(sums[3])[0] == "Question: What is N/A plus N/A?\nAnswer:"
    assert [t.name for t in prompts.controls] == ["input-only", "content-free"] and prompts.content_free is not None
    others = sums[3].fields["lm_eval_other_targets"]  # random labels: other documents' answers
    assert others and str(a + b) not in others


def test_choices_per_document_and_description(tmp_path, offline):
    folder = tmp_path / "quiz"
    folder.mkdir()
    rows = [
        {"q": "Which is a colour?", "options": ["red", "run", "rice"], "answer": "red"},
        {"q": "Which is a number?", "options": ["seven", "sofa"], "answer": "seven"},
        {"q": "Which is an animal?", "options": ["chair", "cloud", "cat", "cup"], "answer": "cat"},
    ]
    _jsonl(folder / "quiz.jsonl", rows)
    (folder / "quiz.yaml").write_text(
        "task: quiz\ndataset_path: json\ndataset_kwargs: {data_files: quiz.jsonl}\ntest_split: train\n"
        'output_type: multiple_choice\ndescription: "Answer each question.\\n\\n"\n'
        'doc_to_text: "{{q}}\\nAnswer:"\ndoc_to_choice: options\ndoc_to_target: answer\n'
    )
    use_task_dirs([str(folder)])
    try:
        spec = get_task("quiz")
        examples = DataSource(None).load(spec, "val")
        prompts = load_prompts(spec)
    finally:
        use_task_dirs([])
    # the labels vary per document: none fixed, each example's label the index of its gold among its own choices
    assert spec.labels == () and spec.metrics == ("acc", "acc_norm")
    assert [ex.label for ex in examples] == [0, 0, 2]
    template = prompts.get("lm-eval")
    assert template.render(examples[2]) == ("Which is an animal?\nAnswer:", ["chair", "cloud", "cat", "cup"])
    assert not DataSource(None).has_split(spec, "train")  # its only split is the one evaluated on: no demos
    # a description goes before the demos and the prompt, once
    assert build_prefix(template, prompts, [], None, spec) == "Answer each question.\n\n"
    prefix = build_prefix(template, prompts, examples[:1], None, spec)
    assert prefix == "Answer each question.\n\nWhich is a colour?\nAnswer: red\n\n"


def test_generated_answers_stop_at_the_tasks_stop_strings(tiny_lm):
    model, tokenizer = tiny_lm
    engine = Engine(model, tokenizer)
    contexts = ["The cat sat on the mat", "Paris is the capital of"]
    free = engine.generate(contexts, 12, stop=())
    assert all(free)
    stops = [text[3:5] for text in free]
    assert all(stops), free
    for context, text, stop in zip(contexts, free, stops):
        cut = engine.generate([context], 12, stop=(stop, "never there"))
        assert cut == [cut_at_stop(text, (stop,))] and stop not in cut[0]
    # the default: the first newline, as before
    assert engine.generate(contexts, 12) == [cut_at_stop(t, ("\n",)) for t in engine.generate(contexts, 12, stop=())]


@pytest.mark.skipif(lm_eval is None, reason="lm-eval is not installed")
@pytest.mark.parametrize(
    "output, gold, options",
    [
        (" 7", "7", {}),
        (" 7", "7", {"regexes_to_ignore": ["^\\s+"]}),
        ("Seven.", "seven", {"ignore_case": True}),
        ("Seven.", "seven", {"ignore_case": True, "ignore_punctuation": True}),
        ("7 apples", "apples", {"ignore_numbers": True}),
        ("7", "7", {}),
    ],
)
def test_exact_match_is_lm_evals(output, gold, options):
    from lm_eval.api.metrics import exact_match_hf_evaluate

    record = Record("0", "0", [0], [0.0], gold_texts=[gold], generated=output)
    spec = TaskSpec("answer", answer="generate", exact_match=options)
    theirs = exact_match_hf_evaluate(predictions=[output], references=[gold], **options)["exact_match"]
    assert generated_correct(record, spec) == bool(theirs)


def test_the_readme_example_is_an_lm_eval_task(tmp_path, offline):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Adding an lm-eval task", 1)[1]
    text = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    folder = tmp_path / "my-lm-eval"
    (folder / "data").mkdir(parents=True)
    (folder / "sst2.yaml").write_text(text)
    rows = [
        {"sentence": FRAMES[i % 4].format((POSITIVE if i % 2 else NEGATIVE)[i % 6]), "label": i % 2} for i in range(8)
    ]
    _jsonl(folder / "data" / "train.jsonl", rows)
    _jsonl(folder / "data" / "validation.jsonl", rows[::-1])
    use_task_dirs([str(folder)])
    try:
        spec = get_task("my_sst2")
        examples = DataSource(None).load(spec, "val")
        prompts = load_prompts(spec)
    finally:
        use_task_dirs([])
    assert spec.labels == ("negative", "positive") and len(examples) == 8
    shown = prompts.get("input-only").render(examples[0])[0]
    assert shown == rows[-1]["sentence"] + "\nAnswer:"  # as the README describes it


# ---------------------------------------------------------------- bad input: one line, naming the file
def _bad_folder(tmp_path: Path, change: str) -> tuple[Path, Path]:
    folder = write_tasks(tmp_path / "bad")
    path = folder / ("add.yaml" if change == "bad function" else "sentiment.yaml")
    text = path.read_text()
    if change == "missing data file":
        (folder / "data" / "sentiment_val.jsonl").unlink()
    elif change == "unknown output_type":
        path.write_text(text.replace("output_type: multiple_choice", "output_type: multiple_choices"))
    elif change == "bad function":
        path.write_text(text.replace('doc_to_target: "{{a + b}}"', "doc_to_target: !function utils.no_such_fn"))
    return folder, path


CLI_CASES = {
    "missing data file": "field 'dataset_kwargs.data_files': data/sentiment_val.jsonl not found in {folder} nor",
    "unknown output_type": "field 'output_type': 'multiple_choices' is not an lm-eval output type",
    "bad function": "field 'doc_to_target': !function utils.no_such_fn: {folder}/utils.py has no function 'no_such_fn'",
}


@pytest.mark.parametrize("change", sorted(CLI_CASES))
def test_bad_task_files_are_one_line_errors_through_the_cli(change, tmp_path, offline):
    folder, path = _bad_folder(tmp_path, change)
    task = "lm_add" if change == "bad function" else "lm_sentiment"
    args = ["eval", "--tasks-dir", str(folder), "--tasks", task, "--methods", "prompt", "--shots", "0"]
    result = harness(*args, "--model", "smollm2-135m", "--out", str(tmp_path / "out"), env=cli_env(offline))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: {path}: "), lines[0]
    assert CLI_CASES[change].format(folder=folder) in lines[0], lines[0]


BAD_FIELDS = {
    "unknown field": ("doc_to_text:", "doc_to_txt: x\ndoc_to_text:", "unknown field(s) doc_to_txt"),
    "filters": ("doc_to_text:", "filter_list: [{name: x, filter: [{function: take_first}]}]\ndoc_to_text:",
                "field 'filter_list': output filters are not supported"),
    "metric": ("- metric: acc_norm", "- metric: mcc", "field 'metric_list': metric 'mcc' is not computed"),
    "include": ("include: _common.yaml", "include: _nowhere.yaml", "field 'include': "),
    "jinja": ('doc_to_text: "Review:', 'doc_to_text: "{{ review ', "field 'doc_to_text': syntax error"),
    "target": ("doc_to_target: label", "doc_to_target: 5", "field 'doc_to_target' gives 5 on document 0"),
    "sampling": ("process_docs:", "generation_kwargs: {do_sample: true}\nprocess_docs:", "generation_kwargs"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_FIELDS))
def test_bad_fields_name_file_and_field(case, tmp_path, offline):
    old, new, message = BAD_FIELDS[case]
    folder = write_tasks(tmp_path / "bad")
    path = folder / "sentiment.yaml"
    if case == "sampling":
        path.write_text(path.read_text().replace("output_type: multiple_choice", "output_type: generate_until"))
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))
    use_task_dirs([str(folder)])
    try:
        with pytest.raises(HarnessError) as err:
            spec = get_task("lm_sentiment")
            DataSource(None).load(spec, "val")
    finally:
        use_task_dirs([])
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the same scores as lm-eval (real model)
CASES = [("lm_sentiment", k) for k in SHOTS] + [("lm_add", k) for k in SHOTS]
FILES = {"lm_sentiment": "sentiment.yaml", "lm_add": "add.yaml"}


@pytest.fixture(scope="module")
def agreement(smollm2, tmp_path_factory):
    """One lm-eval run over every case: its per-document samples and aggregated results, and the task folder.

    lm-eval reads the same task files through `include`, adding only a task name, the shots and its `first_n`
    sampler (harness: --demo-selection first). It runs in the task folder: lm-eval passes relative data files to
    datasets unchanged, so they are read from the current folder, where harness reads them from the YAML's."""
    require(lm_eval is not None, "lm-eval", "pip install -e '.[test]'")
    tmp = tmp_path_factory.mktemp("lm_eval_import")
    folder = write_tasks(tmp / "tasks")
    wrappers = tmp / "lm-eval-runs"
    wrappers.mkdir()
    for task, shots in CASES:
        config = {"include": str(folder / FILES[task]), "task": f"{task}_{shots}shot", "num_fewshot": shots}
        if shots:
            config["fewshot_config"] = {"sampler": "first_n"}
        (wrappers / f"{task}_{shots}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cache = tmp / "datasets_cache"
    with pytest.MonkeyPatch.context() as mp:
        offline_datasets(mp, cache)
        mp.chdir(folder)
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        lm = HFLM(pretrained=smollm2.model, tokenizer=smollm2.tokenizer, batch_size=4)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=[f"{t}_{k}shot" for t, k in CASES],
            log_samples=True,
            task_manager=TaskManager(include_path=str(wrappers), include_defaults=False),
            random_seed=None,
            numpy_random_seed=None,
            torch_random_seed=None,
        )
    assert not any(cache.glob("**/downloads/*")), "lm-eval downloaded something"
    samples = {name: sorted(s, key=lambda s: s["doc_id"]) for name, s in results["samples"].items()}
    return folder, samples, results["results"]


@pytest.mark.slow
@pytest.mark.parametrize(("task_name", "shots"), CASES, ids=[f"{t}-{k}shot" for t, k in CASES])
def test_scores_equal_lm_evals(smollm2, agreement, offline, task_name, shots):
    folder, all_samples, results = agreement
    samples, result = all_samples[f"{task_name}_{shots}shot"], results[f"{task_name}_{shots}shot"]
    use_task_dirs([str(folder)])
    try:
        task = get_task(task_name)
        data = DataSource(None)
        examples, train = data.load(task, "val"), data.load(task, "train")
        prompts = load_prompts(task)
        engine = Engine(smollm2.model, smollm2.tokenizer)
        variants = run_unit(PromptUnit("lm-eval", shots, 0), task, prompts, engine, examples, train, "first")
    finally:
        use_task_dirs([])
    records = next(v for v in variants if v.variant == "gold").records
    assert [s["doc_id"] for s in samples] == list(range(len(examples))) and len(examples) == 24

    # the same prompts: lm-eval's contexts are our prefix + text (and continuations delimiter + choice)
    template = prompts.get("lm-eval")
    prefix = build_prefix(template, prompts, draw_demos(train, shots, 0, "first", task.name), None, task)
    for sample, ex in zip(samples, examples):
        text, choices = template.render(ex)
        if task.generates:
            assert sample["arguments"][0][0] == prefix + text
        else:
            assert [tuple(a) for a in sample["arguments"]] == [(prefix + text, " " + c) for c in choices]

    if task.generates:
        outputs = [s["filtered_resps"][0] for s in samples]
        assert [r.generated for r in records] == outputs
        assert [float(s["exact_match"]) for s in samples] == [float(generated_correct(r, task)) for r in records]
        ours = sum(generated_correct(r, task) for r in records) / len(records)
        assert ours == pytest.approx(result["exact_match,none"])
        assert 0 < ours and any(o.startswith(" ") for o in outputs)  # not vacuous, and the options mattered
        print(f"\n{task_name} {shots}-shot: exact match {ours:.3f} (lm-eval {result['exact_match,none']:.3f})")
        return
    worst = max(abs(a - float(b[0])) for s, r in zip(samples, records) for a, b in zip(r.logprobs, s["filtered_resps"]))
    assert worst <= TOLERANCE, f"log-likelihoods differ by {worst:.3g} nats"
    for metric, normalise in (("acc", False), ("acc_norm", True)):
        hits = [float(p in r.gold) for p, r in zip(predictions(records, normalise), records)]
        assert hits == [float(s[metric]) for s in samples], metric
        assert sum(hits) / len(hits) == pytest.approx(result[f"{metric},none"])
    assert all(len(set(r.logprobs)) == 2 and all(math.isfinite(x) for x in r.logprobs) for r in records)
    print(f"\n{task_name} {shots}-shot: acc {result['acc,none']:.3f}, acc_norm {result['acc_norm,none']:.3f}")


@pytest.mark.slow
def test_harness_eval_runs_lm_eval_tasks_end_to_end(smollm2, tasks_dir, offline, tmp_path):
    out = tmp_path / "run"
    args = ["eval", "--tasks-dir", str(tasks_dir), "--tasks", "lm_sentiment,lm_add", "--methods", "prompt"]
    args += ["--shots", "0", "--limit", "8", "--model", "smollm2-135m", "--out", str(out)]
    env = cli_env(offline)
    run = harness(*args, env=env, timeout=900)
    assert run.returncode == 0, run.stderr
    report = (out / "report.md").read_text()
    assert "#### lm_sentiment" in report and "#### lm_add" in report
    summary = (out / "summary.csv").read_text()
    assert ",lm_sentiment,prompt,gold,0,lm-eval,0,acc_norm," in summary  # always computed, and reported
    before = report  # the store keeps the spec (exact_match options included): re-rendered without the task files
    rerun = harness("report", str(out), env={k: v for k, v in env.items() if k != "HARNESS_TASKS_DIR"})
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "report.md").read_text() == before
