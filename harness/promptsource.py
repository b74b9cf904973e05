"""promptsource templates beside an lm-eval task: `<task>.promptsource.yaml`, in promptsource's templates.yaml shape.

The file (bigscience-workshop/promptsource's `templates/<dataset>/<subset>/templates.yaml`, copied beside the lm-eval
task file and named after its `task`) is `dataset:`/`subset:` (not read) and `templates:`, a mapping of template id
to `!Template` {name, jinja, answer_choices, metadata, reference}. `jinja` is "<input> ||| <target>"; `answer_choices`
is "No ||| Yes" (Jinja over the document; an older file's list of choices works too). A template is applied as
promptsource applies it (and lm-eval, through `use_prompt: promptsource:<name>`): the answer choices rendered and
split on `|||`, each stripped; the jinja rendered with them as `answer_choices`, every `{{ ... }}` cut to 2,048
characters (promptsource's `truncate`), split on `|||` into the input and the target, both stripped; a `|||` inside
a document's own text is kept out of the split. Rendering is harness's sandbox (harness/prompts.py; templates are
user input), with StrictUndefined (a field the document lacks is an error, where promptsource prints nothing) and
promptsource's `zip`; its `choice` (random), `most_frequent` and `highlight` filters are not provided.

harness/lm_eval_tasks.py uses the file two ways:
- every template with `answer_choices` is an extra template of a multiple_choice task, named `ps.<its name>`
  (characters other than letters, digits, `-_.+` made `-`): the input, its choices, and as gold the choice its
  target is. The example's gold is the task's, so the template is kept where its target is the task's gold choice
  on every val document; one without answer_choices or a `|||`, with a promptsource-only filter, or whose target is
  not its task's gold choice on some document is left out with a one-line note on stderr.
- `use_prompt: promptsource:<name>` makes that template the task's own (`lm-eval`): its input, choices and target
  replace doc_to_text, doc_to_choice and doc_to_target, as in lm-eval.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jinja2
import jinja2.meta
import yaml

from harness.catalog import PROMPTSOURCE_SUFFIXES
from harness.errors import HarnessError
from harness.prompts import Template, compile_template, render_sandboxed, template_function
from harness.resources import parse_yaml
from harness.tasks import Example, TaskSpec

SEPARATOR = "|||"
TEXT_LENGTH = 2048  # promptsource's TEXT_VAR_LENGTH: what each {{ ... }} is cut to
PREFIX = "ps."  # harness names of the extra templates: ps.<promptsource name>
UNSUPPORTED_FILTERS = {
    "choice": "promptsource's random 'choice' filter (a prompt must be the same on every run)",
    "most_frequent": "promptsource's 'most_frequent' filter",
    "highlight": "promptsource's 'highlight' filter (HTML for its browser)",
}
_PIPE = "\ue002"  # stands for a `|||` in the document's text while a template is rendered and split
_EXPRESSION_END = re.compile(r"([-+]?)\}\}")
_PROMPTSOURCE_FILTER = re.compile(r"(?<!\|)\|\s*(" + "|".join(UNSUPPORTED_FILTERS) + r")\b")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.+-]+")
_NOTED: set[str] = set()


class Unusable(HarnessError):
    """A template that cannot give this document's gold: no two parts, a target that is not the gold choice."""


class _Loader(yaml.SafeLoader):
    """Safe YAML plus promptsource's `!Template` and `!TemplateMetadata` tags, read as plain mappings."""


def _mapping(loader: _Loader, node: yaml.Node) -> dict:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(None, None, f"{node.tag} must be a mapping", node.start_mark)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("!Template", _mapping)
_Loader.add_constructor("!TemplateMetadata", _mapping)


def note(message: str) -> None:
    """A one-line note on stderr, once per process."""
    if message not in _NOTED:
        _NOTED.add(message)
        print(f"harness: {message}", file=sys.stderr)


def file_of(task_path: Path, task: str) -> Path | None:
    """`<task>.promptsource.yaml` (or .yml) beside the task file."""
    for suffix in PROMPTSOURCE_SUFFIXES:
        path = task_path.parent / f"{task}{suffix}"
        if path.is_file():
            return path
    return None


def harness_name(name: str) -> str:
    return PREFIX + _NAME_CHARS.sub("-", name).strip("-")


# ------------------------------------------------------------------------------------------------------ reading
@dataclass
class Source:
    """One promptsource template, compiled."""

    id: str
    name: str
    jinja: str
    answer_choices: str | list[str] | None
    path: Path
    prompt: jinja2.Template | None = None  # the jinja, every {{ ... }} cut as promptsource cuts it
    answers: jinja2.Template | list[jinja2.Template] | None = None
    unsupported: str = ""  # why it cannot be rendered here (a promptsource-only filter), else ""
    fixed: tuple[str, ...] | None = None  # the answer choices where they read no field

    @property
    def where(self) -> str:
        return f"{self.path}: promptsource template '{self.name}'"

    def why_not_extra(self) -> str:
        """Why the template cannot be an extra template of a choice task, or ""."""
        if self.unsupported:
            return f"it uses {self.unsupported}"
        if self.answer_choices is None:
            return "it has no answer_choices (an open-ended template)"
        if SEPARATOR not in self.jinja:
            return f"its jinja has no '{SEPARATOR}' (no target)"
        return ""

    # promptsource's Template.get_answer_choices_list and apply, in harness's sandbox
    def choices(self, doc: dict, where: str) -> list[str] | None:
        if self.answers is None:
            return None
        protected = _protect(doc)
        if isinstance(self.answers, list):
            parts = [self._render(t, protected, where, "answer_choices") for t in self.answers]
        else:
            parts = self._render(self.answers, protected, where, "answer_choices").split(SEPARATOR)
        return [_unprotect(p.strip()) for p in parts]

    def apply(self, doc: dict, where: str) -> tuple[str, str, list[str] | None]:
        """(input, target, answer choices) of one document."""
        if self.unsupported:
            raise HarnessError(f"{self.where}: it uses {self.unsupported}")
        if "answer_choices" in doc:
            raise HarnessError(f"{self.where}: the document has a field 'answer_choices', a name promptsource keeps")
        choices = self.choices(doc, where)
        fields = {**_protect(doc), "answer_choices": choices, "zip": template_function(zip)}
        parts = self._render(self.prompt, fields, where, "jinja").split(SEPARATOR)
        if len(parts) != 2:
            raise Unusable(f"{self.where}: renders {len(parts)} '{SEPARATOR}'-separated parts, not 2, on {where}")
        text, target = (_unprotect(p.strip()) for p in parts)
        return text, target, choices

    def _render(self, template: jinja2.Template, fields: dict, where: str, part: str) -> str:
        try:
            return render_sandboxed(template, fields)
        except jinja2.UndefinedError as err:
            raise HarnessError(f"{self.where} ({part}): undefined field ({err.message}) on {where}") from None
        except Exception as err:  # SecurityError, TypeError, ...: the template's, in one line
            message = " ".join(str(err).split())[:300]
            raise HarnessError(f"{self.where} ({part}): {type(err).__name__}: {message} on {where}") from None


def read_file(path: Path) -> list[Source]:
    """A promptsource templates file's templates, in file order; a malformed file or template is a one-line error."""
    doc = parse_yaml(path, _Loader)
    if not isinstance(doc, dict) or not isinstance(doc.get("templates"), dict) or not doc["templates"]:
        raise HarnessError(
            f"{path}: expected promptsource's templates.yaml shape: 'templates:', a mapping of id -> "
            "{name, jinja, answer_choices, ...}"
        )
    sources, names = [], set()
    for key, entry in doc["templates"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise HarnessError(f"{path}: template {key}: needs a string 'name'")
        name = entry["name"]
        if not isinstance(entry.get("jinja"), str) or not entry["jinja"].strip():
            raise HarnessError(f"{path}: promptsource template '{name}': needs a string 'jinja'")
        answers = entry.get("answer_choices")
        if answers is not None and not isinstance(answers, str):
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                raise HarnessError(
                    f"{path}: promptsource template '{name}': 'answer_choices' must be a string (choices separated "
                    f"by '{SEPARATOR}') or a list of strings"
                )
        if name in names:
            raise HarnessError(f"{path}: two promptsource templates are named '{name}'")
        names.add(name)
        sources.append(_compiled(Source(str(entry.get("id", key)), name, entry["jinja"], answers, path)))
    return sources


def _compiled(source: Source) -> Source:
    """The template's Jinja compiled in the sandbox (a syntax error is one line naming file and template), or the
    promptsource-only filter that keeps it from being rendered."""
    texts = source.answer_choices if isinstance(source.answer_choices, list) else [source.answer_choices or ""]
    used = {m.group(1) for t in (source.jinja, *texts) for m in _PROMPTSOURCE_FILTER.finditer(t)}
    if used:
        source.unsupported = UNSUPPORTED_FILTERS[sorted(used)[0]]
        return source
    parts = {"jinja": _EXPRESSION_END.sub(f" | string | truncate({TEXT_LENGTH}) \\1}}}}", source.jinja)}
    if isinstance(source.answer_choices, list):
        parts.update({f"answer_choices[{i}]": a for i, a in enumerate(source.answer_choices)})
    elif source.answer_choices is not None:
        parts["answer_choices"] = source.answer_choices
    compiled = {
        part: compile_template(text, source.path, f"promptsource: {source.name}", part) for part, text in parts.items()
    }
    source.prompt = compiled.pop("jinja")
    if isinstance(source.answer_choices, list):
        source.answers = list(compiled.values())
    elif source.answer_choices is not None:
        source.answers = compiled["answer_choices"]
    else:
        return source
    env = jinja2.Environment()
    if not any(jinja2.meta.find_undeclared_variables(env.parse(t)) for t in texts):
        source.fixed = tuple(source.choices({}, "no document (the choices read no field)"))
    return source


def use_prompt(value: object, task_path: Path, task: str) -> Source:
    """The template `use_prompt: promptsource:<name>` names, from `<task>.promptsource.yaml` beside the task file."""

    def bad(why: str) -> HarnessError:
        return HarnessError(f"{task_path}: field 'use_prompt': {why}")

    if not isinstance(value, str) or ":" not in value:
        raise bad(f"must be 'promptsource:<template name>' (got {value!r})")
    category, name = value.split(":", 1)
    if category.strip() != "promptsource":
        raise bad(f"{category!r} prompts are not supported by harness's lm-eval import; it reads promptsource:<name>")
    if any(c in name for c in "*?["):
        raise bad(
            f"a pattern ({name!r}) is not supported: name one template (every template with answer_choices is added "
            "as an extra template anyway)"
        )
    path = file_of(task_path, task)
    if path is None:
        raise bad(
            f"promptsource prompts are read from {task_path.parent / (task + PROMPTSOURCE_SUFFIXES[0])} (promptsource's "
            "templates.yaml, copied beside the task file): not found"
        )
    sources = read_file(path)
    for source in sources:
        if source.name == name:
            if source.unsupported:
                raise bad(f"{source.where} uses {source.unsupported}")
            if SEPARATOR not in source.jinja:
                raise bad(f"{source.where} has no '{SEPARATOR}' in its jinja: no target")
            return source
    raise bad(f"no template named {name!r} in {path} (its templates: {', '.join(s.name for s in sources)})")


# ------------------------------------------------------------------------------------------------------ templates
def _protect(doc: dict) -> dict:
    return {k: v.replace(SEPARATOR, _PIPE) if isinstance(v, str) else v for k, v in doc.items()}


def _unprotect(text: str) -> str:
    return text.replace(_PIPE, SEPARATOR)


def blank_texts(value: object, na: str) -> object:
    """A document with every text replaced by `na`, its numbers and flags kept (the label a template indexes
    answer_choices with): the content-free input of a promptsource template."""
    if isinstance(value, str):
        return na
    if isinstance(value, list):
        return [blank_texts(v, na) for v in value]
    if isinstance(value, dict):
        return {k: blank_texts(v, na) for k, v in value.items()}
    return value


@dataclass
class PromptsourceTemplate(Template):
    """A promptsource template as a harness template: the input, its answer choices, checked on each example to give
    the task's gold choice as its target (harness scores one gold per example, the task's)."""

    source: Source | None = None
    own_fields: tuple[str, ...] = ()  # the example fields that are not the document's (lm-eval's added fields)
    blank_field: str = ""  # true in the calibration input: render the document with its texts "N/A"
    na: str = "N/A"

    def render(self, example: Example, fields: dict | None = None) -> tuple[str, list[str]]:
        where = example.describe()
        doc = self._document(example.fields)
        text, target, choices = self.source.apply(doc, where)
        if not choices or any(not c for c in choices):
            raise Unusable(f"{self.source.where}: an empty answer choice on {where}")
        label = example.label
        if label is not None and not (0 <= label < len(choices) and choices[label] == target):
            if target not in choices:
                why = f"its target {target!r} is not one of its answer choices {choices}"
            else:
                why = f"its target {target!r} is choice {choices.index(target)}, the task's gold is choice {label}"
            raise Unusable(f"{self.source.where}: {why} on {where}")
        if fields is not None and fields is not example.fields:
            given = self._document(fields)
            if fields.get(self.blank_field):  # the calibration input: the document's texts "N/A"
                try:
                    text = self.source.apply(blank_texts(given, self.na), f"{where}, its texts {self.na!r}")[0]
                except HarnessError:
                    text = self.na
            elif given != doc:
                text = self.source.apply(given, where)[0]
        return text, choices

    def _document(self, fields: dict) -> dict:
        return {k: v for k, v in fields.items() if k not in self.own_fields}


def extra_templates(
    spec: TaskSpec, sources: list[Source], own_fields: tuple[str, ...], blank_field: str, na: str
) -> list[PromptsourceTemplate]:
    """The file's templates that can be extra templates of a choice task (the others noted and left out)."""
    out, names = [], set()
    for source in sources:
        why = source.why_not_extra()
        name = harness_name(source.name)
        if not why and (name == PREFIX or name in names):
            why = f"its harness name {name!r} is empty or taken by another of its templates"
        if why:
            note(f"{source.path}: promptsource template '{source.name}' not added: {why}")
            continue
        names.add(name)
        template = PromptsourceTemplate(
            name=name,
            text=source.jinja.split(SEPARATOR, 1)[0],
            choices=list(source.fixed) if source.fixed is not None else {"for_each": "answer_choices", "text": ""},
            target_delimiter=spec.data["config"].get("target_delimiter", " "),
            control=False,
            note=f"promptsource template '{source.name}' ({source.id}) of {source.path.name}",
            path=source.path,
            _compiled=source.prompt,
            _choices=[],
            source=source,
            own_fields=own_fields,
            blank_field=blank_field,
            na=na,
        )
        out.append(template)
    return out


def usable(templates: list[PromptsourceTemplate], examples: list[Example]) -> list[PromptsourceTemplate]:
    """The templates whose target is the task's gold choice on every example; the others noted and left out."""
    kept = []
    for template in templates:
        try:
            for example in examples:
                template.render(example)
        except Unusable as err:
            why = str(err).removeprefix(f"{template.source.where}: ")
            note(f"{template.source.path}: promptsource template '{template.source.name}' not added: {why}")
            continue
        kept.append(template)
    return kept
