"""Prompt templates: `prompts/<task>.yaml`, rendered in jinja2's sandbox (templates are user input)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from harness.errors import HarnessError
from harness.resources import read_yaml, resource_dir
from harness.tasks import Example

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
_TEMPLATE_KEYS = {"name", "text", "choices", "target_delimiter", "note"}


@dataclass
class Template:
    name: str
    text: str
    choices: list[str] | dict  # one Jinja string per label id, or {for_each: field, text: Jinja with `item`}
    target_delimiter: str
    control: bool
    note: str
    path: Path
    _compiled: jinja2.Template
    _choices: list[jinja2.Template] | tuple[str, jinja2.Template]

    @property
    def fixed_choices(self) -> bool:
        """True when the choices read no example field: the same answers for every example."""
        return isinstance(self.choices, list) and all("{" not in c for c in self.choices)

    def _where(self) -> str:
        return f"{self.path}: template '{self.name}'"

    def render(self, example: Example, fields: dict | None = None) -> tuple[str, list[str]]:
        """(text up to the answer slot, answer choices) for one example."""
        fields = example.fields if fields is None else fields
        try:
            text = self._compiled.render(**fields)
            if isinstance(self._choices, tuple):
                list_field, item_template = self._choices
                choices = [item_template.render(**fields, item=item) for item in fields[list_field]]
            else:
                choices = [c.render(**fields) for c in self._choices]
        except jinja2.UndefinedError as err:
            raise HarnessError(f"{self._where()}: undefined field ({err.message}) on example {example.id}") from None
        except KeyError as err:
            raise HarnessError(f"{self._where()}: for_each field {err} missing on example {example.id}") from None
        except jinja2.TemplateError as err:
            raise HarnessError(f"{self._where()}: {err.__class__.__name__}: {err} on example {example.id}") from None
        if not choices or any(not c.strip() for c in choices):
            raise HarnessError(f"{self._where()}: empty answer choice on example {example.id}")
        return text, choices


@dataclass
class PromptSet:
    task: str
    path: Path
    templates: list[Template]
    controls: list[Template]
    content_free: dict | None
    fewshot_delimiter: str

    def get(self, name: str) -> Template:
        for t in self.templates + self.controls:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.templates + self.controls)
        raise HarnessError(f"unknown template '{name}' for task {self.task} (--templates); known: {known}")


def _compile(source: str, path: Path, name: str, part: str) -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise HarnessError(
            f"{path}: template '{name}' ({part}): syntax error on line {err.lineno}: {err.message}"
        ) from None


def _template(entry: object, path: Path, control: bool, position: int) -> Template:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise HarnessError(f"{path}: entry {position} needs a string field 'name'")
    name = entry["name"]
    unknown = set(entry) - _TEMPLATE_KEYS
    if unknown:
        raise HarnessError(f"{path}: template '{name}': unknown field(s) {', '.join(sorted(unknown))}")
    text = entry.get("text")
    if not isinstance(text, str) or not text:
        raise HarnessError(f"{path}: template '{name}': field 'text' must be a non-empty string")
    choices = entry.get("choices")
    if isinstance(choices, list):
        if not choices or not all(isinstance(c, str) and c.strip() for c in choices):
            raise HarnessError(f"{path}: template '{name}': empty answer choices")
        compiled_choices: list | tuple = [_compile(c, path, name, "choices") for c in choices]
    elif isinstance(choices, dict) and set(choices) == {"for_each", "text"}:
        compiled_choices = (str(choices["for_each"]), _compile(str(choices["text"]), path, name, "choices"))
    else:
        raise HarnessError(f"{path}: template '{name}': 'choices' must be a list of strings or {{for_each, text}}")
    delimiter = entry.get("target_delimiter", " ")
    if not isinstance(delimiter, str):
        raise HarnessError(f"{path}: template '{name}': 'target_delimiter' must be a string")
    return Template(
        name,
        text,
        choices,
        delimiter,
        control,
        str(entry.get("note", "")),
        path,
        _compile(text, path, name, "text"),
        compiled_choices,
    )


def load_prompts(task: str, prompts_dir: str | Path | None = None) -> PromptSet:
    """Read and compile `<prompts_dir>/<task>.yaml` (default: the prompts shipped with harness)."""
    folder = Path(prompts_dir) if prompts_dir else resource_dir("prompts")
    path = folder / f"{task}.yaml"
    data = read_yaml(path, f"prompt file for task {task}")
    if not isinstance(data, dict) or not isinstance(data.get("templates"), list):
        raise HarnessError(f"{path}: expected a mapping with a 'templates' list")
    templates = [_template(e, path, False, i) for i, e in enumerate(data["templates"])]
    controls = [_template(e, path, True, i) for i, e in enumerate(data.get("controls") or [])]
    names = [t.name for t in templates + controls]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise HarnessError(f"{path}: duplicate template name(s) {', '.join(sorted(dupes))}")
    content_free = data.get("content_free")
    if content_free is not None and not isinstance(content_free, dict):
        raise HarnessError(f"{path}: 'content_free' must be a mapping of field values")
    return PromptSet(
        task=task,
        path=path,
        templates=templates,
        controls=controls,
        content_free=content_free,
        fewshot_delimiter=str(data.get("fewshot_delimiter", "\n\n")),
    )
