"""Prompt templates: a task file's `templates` and `controls`, rendered in jinja2's sandbox (templates are user input)."""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import Namespace

from harness.errors import HarnessError
from harness.resources import resource_dir
from harness.tasks import Example, TaskSpec

# ------------------------------------------------------------------------------------------------------- sandbox
# jinja2's sandbox stops the walks to Python internals (`__class__`, `__globals__`, str.format's `{0.__class__}`).
# What it lets through, this environment stops too: work without bound (`range(10**10)` is refused per call but
# not nested loops; `'a' * 10**10`, `10 ** 10**10`, `'a'|center(10**10)` or a doubling macro exhaust memory),
# in-place mutation (an unbounded accumulator), and showing a Python object (`{{ cycler }}`, `{{ premise.upper }}`
# print class names and memory addresses). The limits sit far above any prompt.
MAX_CHARS = 1_000_000  # the longest string or list a template may build, and its longest rendered text
MAX_INT_BITS = 100_000  # the largest integer a template may compute (about 30,000 digits)
MAX_RANGE = 100_000  # range() items one rendering may create, all its calls together
MAX_WORK = 10_000_000  # characters and items that one rendering's calls, filters and operators may produce in all


@dataclass
class _Budget:
    work: int = MAX_WORK
    range: int = MAX_RANGE


_BUDGET: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)  # set while one rendering runs


def _refuse(what: str) -> NoReturn:
    raise SecurityError(f"{what}: templates are limited to {MAX_CHARS:,} characters or items")


def _size(value: object, what: str) -> int:
    """The size of a value a template made or took (refusing one over the limits), charged to the rendering."""
    size = 1
    if isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        size = len(value)
        if size > MAX_CHARS:
            _refuse(f"{what} holds {size:,}")
    elif isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"{what} is an integer of {value.bit_length():,} bits; the limit is {MAX_INT_BITS:,}")
    budget = _BUDGET.get()
    if budget is not None:
        budget.work -= size
        if budget.work < 0:
            raise SecurityError(f"the template does more than {MAX_WORK:,} characters of work on one example")
    return size


def _safe_range(*args: int) -> range:
    """range() for templates: the ranges of one rendering hold MAX_RANGE items in all, so nesting cannot multiply."""
    items = range(*args)
    try:
        count = len(items)
    except OverflowError:  # more items than an index can count
        count = 2**63
    budget = _BUDGET.get() or _Budget()
    if count > budget.range:
        raise SecurityError(f"range() of {count:,} items: one rendering may create {MAX_RANGE:,} range items in all")
    budget.range -= count
    return items


class _Function:
    """A function or method that a template reached (`range`, `premise.upper`): callable through the sandbox but
    never shown, since its repr names Python classes and memory addresses."""

    __slots__ = ("function",)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args, **kwargs):
        return self.function(*args, **kwargs)

    def _shown(self, *args):
        raise SecurityError("a template cannot show a function or method, only call it")

    __str__ = __repr__ = __format__ = _shown


def _hide(value: object) -> object:
    if callable(value) and not isinstance(value, (jinja2.Undefined, _Function)):
        return _Function(value)
    return value


_PRINTF_WIDTHS = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_WIDTH_ARGUMENTS = {
    "center",
    "ljust",
    "rjust",
    "zfill",
    "expandtabs",
    "indent",
    "wordwrap",
    "truncate",
    "batch",
    "slice",
}


def _check_widths(widths: Iterable[str], args: object) -> None:
    """Format widths and precisions (`%10000000000s`, `{:>{}}`) up to MAX_CHARS, given or taken from `args`."""
    values = args.values() if isinstance(args, dict) else args if isinstance(args, (tuple, list)) else [args]
    for width in widths:
        if width.isdigit() and int(width) > MAX_CHARS:
            _refuse(f"a format width of {int(width):,}")
        if not width.isdigit() and any(isinstance(v, int) and v > MAX_CHARS for v in values):
            _refuse("a format width taken from the arguments")


def _check_printf(text: str, args: object) -> None:
    _check_widths([w for m in _PRINTF_WIDTHS.finditer(text) for w in m.groups() if w], args)


def _check_growth(name: str, value: object, args: tuple, kwargs: dict) -> None:
    """Refuse, before it runs, a string method or filter `name` on `value` whose result would pass MAX_CHARS: a width
    of 10**10, a replace, join or translate that multiplies lengths. Other results are measured after."""
    given = [*args, *kwargs.values()]
    if name in _WIDTH_ARGUMENTS and any(isinstance(a, int) and a > MAX_CHARS for a in given):
        _refuse(f"{name}() with a width or count over the limit")
    if not isinstance(value, (str, bytes)):
        return
    estimate = 0
    if name == "replace" and len(args) >= 2 and all(isinstance(a, type(value)) for a in args[:2]):
        old, new = args[0], args[1]
        estimate = len(value) + (value.count(old) if old else len(value) + 1) * len(new)
    elif name == "join" and args and isinstance(args[0], (str, bytes, list, tuple, dict)):
        parts = args[0]
        estimate = len(value) * len(parts) + sum(len(p) for p in parts if isinstance(p, (str, bytes)))
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, (str, bytes))), default=1)
        estimate = len(value) * longest
    elif name == "expandtabs":
        tabsize = next((a for a in given if isinstance(a, int)), 8)
        estimate = len(value) + value.count(b"\t" if isinstance(value, bytes) else "\t") * tabsize
    elif name == "indent":
        width = next((a for a in given if isinstance(a, (int, str)) and not isinstance(a, bool)), 4)
        estimate = len(value) + (value.count("\n") + 1) * (len(width) if isinstance(width, str) else width)
    elif name == "wordwrap":
        width = next((a for a in given if isinstance(a, int) and not isinstance(a, bool)), 79)
        wrap = kwargs.get("wrapstring") or next((a for a in args if isinstance(a, str)), "\n")
        estimate = len(value) + (len(value) // max(width, 1) + 1) * len(wrap)
    elif name in ("format", "format_map") and isinstance(value, str):
        specs = [spec for _, _, spec, _ in string.Formatter().parse(value) if spec]
        widths = [w for spec in specs for w in re.findall(r"\d+", spec)] + ["*" for spec in specs if "{" in spec]
        _check_widths(widths, args[0] if name == "format_map" and args else given)
    if estimate > MAX_CHARS:
        _refuse(f"{name}() would build {estimate:,}")


def _guard_filter(name: str, function):
    """A filter whose inputs and result are checked: `'a'|center(10**10)` is refused before it allocates."""
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0  # the context/environment argument

    @functools.wraps(function)
    def guarded(*args, **kwargs):
        value, rest = (args[skip], args[skip + 1 :]) if len(args) > skip else (None, ())
        for arg in (*args[skip:], *kwargs.values()):
            _size(arg, f"an argument of filter '{name}'")
        if name == "join":  # the method's shape: separator.join(items)
            _check_growth("join", rest[0] if rest else kwargs.get("d", ""), (value,), {})
        elif name == "format" and isinstance(value, str):
            _check_printf(value, kwargs or rest)
        else:
            _check_growth(name, value, rest, kwargs)
        result = function(*args, **kwargs)
        _size(result, f"filter '{name}'")
        return _hide(result)

    return guarded


class _PromptEnvironment(ImmutableSandboxedEnvironment):
    """jinja2's sandbox (immutable: no `list.append` accumulators) with the limits above and no Python reprs."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def __init__(self, **options) -> None:
        super().__init__(**options)
        # globals a prompt may use (lipsum, cycler and joiner dropped), never shown as Python objects
        self.globals = {"range": _Function(_safe_range), "dict": _Function(dict), "namespace": _Function(Namespace)}
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.concat = _capped_concat

    def getattr(self, obj, attribute):
        value = super().getattr(obj, attribute)
        _size(value, f"attribute '{attribute}'")
        return _hide(value)

    def getitem(self, obj, argument):
        value = super().getitem(obj, argument)
        _size(value, "an item")
        return _hide(value)

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, (str, bytes, list, tuple))
                    and isinstance(times, int)
                    and len(seq) * times > MAX_CHARS
                ):
                    _refuse(f"'*' would build {len(seq) * times:,}")
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_INT_BITS
            ):
                raise SecurityError(f"'*' would make an integer of over {MAX_INT_BITS:,} bits")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            if right * left.bit_length() > MAX_INT_BITS:
                raise SecurityError(f"'**' would make an integer of over {MAX_INT_BITS:,} bits")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left, right)
        result = super().call_binop(context, operator, left, right)
        _size(result, f"'{operator}'")
        return result

    def call(__self, __context, __obj, *args, **kwargs):  # jinja2's names: free for the template's kwargs
        function = __obj.function if isinstance(__obj, _Function) else __obj
        for arg in (*args, *(v for k, v in kwargs.items() if not k.startswith("_"))):
            _size(arg, "an argument")
        target = getattr(function, "__wrapped__", function)  # str.format, wrapped by the sandbox
        owner = getattr(target, "__self__", None)
        if isinstance(owner, (str, bytes)):
            _check_growth(getattr(target, "__name__", ""), owner, args, kwargs)
        result = super().call(__context, function, *args, **kwargs)
        _size(result, "a call's result")
        return _hide(result)


def _capped_concat(parts: Iterable[str]) -> str:
    """The rendered text, refused as soon as it passes MAX_CHARS (a loop that prints without end)."""
    pieces, total = [], 0
    for piece in parts:
        total += len(piece)
        if total > MAX_CHARS:
            _refuse("the rendered text passes that")
        pieces.append(piece)
    return "".join(pieces)


def _render(template: jinja2.Template, fields: dict) -> str:
    """One rendering, with its own budget of work and range items."""
    token = _BUDGET.set(_Budget())
    try:
        return template.render(**fields)
    finally:
        _BUDGET.reset(token)


_ENV = _PromptEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
_TEMPLATE_KEYS = {"name", "text", "choices", "target_delimiter", "note"}
_TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


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
            text = _render(self._compiled, fields)
            if isinstance(self._choices, tuple):
                list_field, item_template = self._choices
                choices = [_render(item_template, {**fields, "item": item}) for item in fields[list_field]]
            else:
                choices = [_render(c, fields) for c in self._choices]
        except jinja2.UndefinedError as err:
            raise HarnessError(f"{self._where()}: undefined field ({err.message}) on {example.describe()}") from None
        except KeyError as err:
            raise HarnessError(f"{self._where()}: for_each field {err} missing on {example.describe()}") from None
        except Exception as err:  # anything else a template can raise: SecurityError, TypeError, OverflowError...
            message = " ".join(str(err).split())[:300]
            raise HarnessError(
                f"{self._where()}: {err.__class__.__name__}: {message} on {example.describe()}"
            ) from None
        if not choices or any(not c.strip() for c in choices):
            raise HarnessError(f"{self._where()}: empty answer choice on {example.describe()}")
        return text, choices


@dataclass
class PromptSet:
    task: str
    path: Path
    templates: list[Template]
    controls: list[Template]
    content_free: dict | None
    fewshot_delimiter: str
    preamble: str = ""  # text before the demos and the prompt (an lm-eval task's `description`)

    def get(self, name: str) -> Template:
        for t in self.templates + self.controls:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.templates + self.controls)
        raise HarnessError(f"unknown template '{name}' for task {self.task} (--templates); known: {known}")


def compile_field(source: str, path: Path, field: str) -> jinja2.Template:
    """A Jinja string of another task format (an lm-eval task's `doc_to_text`), compiled in the templates' sandbox;
    render it with `render_sandboxed`. A syntax error is one line naming the file and field."""
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise HarnessError(f"{path}: field '{field}': syntax error on line {err.lineno}: {err.message}") from None


def render_sandboxed(template: jinja2.Template, fields: dict) -> str:
    """One rendering of a `compile_field` template, with the limits every template renders under."""
    return _render(template, fields)


def compile_template(source: str, path: Path, name: str, part: str) -> jinja2.Template:
    """A template of another format (a promptsource template's jinja or answer_choices), compiled in the sandbox;
    render it with `render_sandboxed`. A syntax error is one line naming the file, template and part."""
    return _compile(source, path, name, part)


def template_function(function) -> object:
    """A function given to a template as a field (promptsource's `zip`): callable, never shown."""
    return _Function(function)


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
    if not _TEMPLATE_NAME.fullmatch(name):
        raise HarnessError(
            f"{path}: template name {name!r} (entry {position}): use letters, digits, '-', '_', '.' or '+' "
            "(names are keys in stores and reports)"
        )
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


def load_prompts(task: str | TaskSpec, prompts_dir: str | Path | None = None) -> PromptSet:
    """Read and compile a task's templates: from `<prompts_dir>/<name>.yaml` when a folder is given (a file of the
    same shape), else from the task's own file (`tasks/<name>.yaml`, or the user's, or an lm-eval task's)."""
    spec = task if isinstance(task, TaskSpec) else None
    name = spec.prompts_name if spec else task
    if spec is not None and spec.loader == "lm-eval" and not prompts_dir:
        from harness.lm_eval_tasks import prompts_from_lm_eval

        return prompts_from_lm_eval(spec)
    if prompts_dir:
        path = Path(prompts_dir) / f"{name}.yaml"
    elif spec is not None and spec.path is not None:
        path = spec.path
    else:
        from harness.catalog import file_of

        path = file_of(name) or resource_dir("tasks") / f"{name}.yaml"
    from harness.catalog import read_task_yaml

    if not path.is_file():
        raise HarnessError(f"no prompt file for task {name}: {path} not found")
    data = read_task_yaml(path)
    return prompt_set(data, path, spec.name if spec else name)


def prompt_set(data: object, path: Path, task: str) -> PromptSet:
    """A file's `templates`, `controls`, `content_free` and `fewshot_delimiter`, compiled and checked."""
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
