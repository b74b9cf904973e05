"""Shipped templates: enough of them, all render on real data; user templates are sandboxed and checked."""

from __future__ import annotations

import pytest

from harness.catalog import get_task
from harness.errors import HarnessError
from harness.loaders import DataSource, load_jsonl_split
from harness.prompts import load_prompts
from tests.conftest import REPO, require

SUPERGLUE = ["boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc"]


@pytest.mark.parametrize("task", SUPERGLUE)
def test_shipped_prompt_files(task, superglue_dir, fewglue_dir):
    prompts = load_prompts(task)
    assert prompts.templates[0].name == "lm-eval"
    assert len(prompts.templates) >= 6
    assert len(prompts.controls) >= 2
    data = DataSource(superglue_dir)
    if data.has_split(get_task(task), "val"):
        examples = data.load(get_task(task), "val")[:25]
    else:
        examples = load_jsonl_split(get_task(task), fewglue_dir / get_task(task).folder / "train.jsonl")[:10]
    for template in prompts.templates + prompts.controls:
        for ex in examples:
            text, choices = template.render(ex)
            assert text and not text.endswith(" ")
            if ex.label is not None:
                assert ex.label < len(choices)
            else:
                assert len(choices) == len(ex.fields["entities"])


@pytest.mark.parametrize("task", ["add-3d", "sub-2d", "mul-2d", "div-1d", "mixed-2d", "sort-5"])
def test_generated_task_prompt_files(task):
    from harness.catalog import get_task
    from harness.synthetic import generate_split

    spec = get_task(task)
    prompts = load_prompts(spec.prompts_name)
    assert len(prompts.templates) >= 4 and len(prompts.controls) >= 1
    for ex in generate_split(spec, "val")[:20]:
        for template in prompts.templates + prompts.controls:
            text, choices = template.render(ex)
            assert len(choices) == 1 and text  # the one "choice" is the gold answer, bracketed or not
            assert choices[0].strip("[]") == ex.fields["answer"].strip("[]")


def test_rte_lm_eval_template_is_lm_evals(superglue_dir):
    ex = DataSource(superglue_dir).load(get_task("rte"), "val")[0]
    text, choices = load_prompts("rte").get("lm-eval").render(ex)
    assert text == f"{ex.fields['premise']}\nQuestion: {ex.fields['hypothesis']} True or False?\nAnswer:"
    assert choices == ["True", "False"]


def _write(tmp_path, body: str):
    (tmp_path / "rte.yaml").write_text(body)
    return tmp_path


def _example():
    from harness.tasks import Example

    return Example("0", {"premise": "P", "hypothesis": "H"}, 0, "0")


def test_syntax_error_names_file_template_and_line(tmp_path):
    folder = _write(
        tmp_path, 'templates:\n  - name: broken\n    text: "line one\\n{{ premise "\n    choices: ["a", "b"]\n'
    )
    with pytest.raises(HarnessError, match=r"rte\.yaml: template 'broken' \(text\): syntax error on line 2"):
        load_prompts("rte", folder)


def test_undefined_field_is_named(tmp_path):
    folder = _write(
        tmp_path, 'templates:\n  - name: t\n    text: "{{ premise }} {{ hypotesis }}"\n    choices: ["a", "b"]\n'
    )
    template = load_prompts("rte", folder).get("t")
    with pytest.raises(HarnessError, match="template 't': undefined field .*hypotesis"):
        template.render(_example())


def test_empty_choices_rejected(tmp_path):
    folder = _write(tmp_path, 'templates:\n  - name: t\n    text: "x"\n    choices: []\n')
    with pytest.raises(HarnessError, match="empty answer choices"):
        load_prompts("rte", folder)
    folder = _write(tmp_path, 'templates:\n  - name: t\n    text: "x"\n    choices: ["{{ hypothesis[5:] }}", "b"]\n')
    with pytest.raises(HarnessError, match="empty answer choice on example 0"):
        load_prompts("rte", folder).get("t").render(_example())


def test_templates_are_sandboxed(tmp_path):
    folder = _write(
        tmp_path,
        'templates:\n  - name: evil\n    text: "{{ premise.__class__.__mro__[1].__subclasses__() }}"\n    choices: ["a", "b"]\n',
    )
    with pytest.raises(HarnessError, match="template 'evil'.*SecurityError"):
        load_prompts("rte", folder).get("evil").render(_example())


def test_unknown_template_and_unknown_key(tmp_path):
    with pytest.raises(HarnessError, match="unknown template 'nope' for task rte"):
        load_prompts("rte").get("nope")
    folder = _write(tmp_path, 'templates:\n  - name: t\n    text: "x"\n    choices: ["a"]\n    colour: red\n')
    with pytest.raises(HarnessError, match="unknown field.*colour"):
        load_prompts("rte", folder)


def test_missing_prompt_file(tmp_path):
    with pytest.raises(HarnessError, match="no prompt file for task rte"):
        load_prompts("rte", tmp_path)


# One task per prompt file, to render its templates on real examples.
_TASK_OF_PROMPT_FILE = {
    "arithmetic": "add-2d",
    "sorting": "sort-5",
    "parity": "add-2d-parity",
    "gpt3-arithmetic": "gpt3-two-digit-addition",
}


def _examples_for(prompt_file: str, superglue_dir, fewglue_dir):
    from harness.catalog import get_task
    from harness.synthetic import generate_split, gpt3_folder, load_gpt3_split

    spec = get_task(_TASK_OF_PROMPT_FILE.get(prompt_file, prompt_file))
    if spec.source == "superglue":
        data = DataSource(superglue_dir)
        if data.has_split(spec, "val"):
            return spec, data.load(spec, "val")[:3]
        return spec, load_jsonl_split(spec, fewglue_dir / spec.folder / "train.jsonl")[:3]
    if prompt_file == "gpt3-arithmetic":
        folder = gpt3_folder(superglue_dir)
        require(folder is not None, "the gpt3-arithmetic folder beside the SuperGLUE data")
        return spec, load_gpt3_split(spec, folder, "val")[:3]
    return spec, generate_split(spec, "val")[:3]


@pytest.mark.parametrize(
    "prompt_file", sorted(p.stem for p in (REPO / "tasks").glob("*.yaml") if p.stem != "presidents")
)
def test_demos_and_query_are_separated_at_k2(prompt_file, superglue_dir, fewglue_dir):
    """At k=2 every demo ends its answer and the next demo (or the query) starts after a newline: a demo's answer
    never runs into the next question (gpt3-arithmetic's empty delimiter once gave " 117Q: What is 12 plus")."""
    from harness.methods.prompt import build_prefix

    prompts = load_prompts(prompt_file)
    spec, examples = _examples_for(prompt_file, superglue_dir, fewglue_dir)
    demos, query = examples[:2], examples[2]
    for template in prompts.templates + prompts.controls:
        prefix = build_prefix(template, prompts, demos, None, spec)
        text = prefix + template.render(query)[0]
        position = 0
        for demo in demos:
            demo_text, choices = template.render(demo)
            assert text.startswith(demo_text, position), (template.name, text)
            position += len(demo_text) + len(template.target_delimiter)
            answer = next(c for c in choices if text.startswith(c, position))
            position += len(answer)
            rest = text[position:]
            gap = rest[: len(rest) - len(rest.lstrip())]
            assert "\n" in gap, f"{prompt_file}/{template.name}: demo answer runs into {rest[:30]!r}"
            position += len(prompts.fewshot_delimiter)
        assert text.endswith(template.render(query)[0])
