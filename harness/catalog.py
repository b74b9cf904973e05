"""The task catalog: every task is a YAML file.

Shipped tasks live in `tasks/` (one file per task, or per family of tasks whose names carry their settings, such as
`add-3d`). A user adds folders with `--tasks-dir DIR` (repeatable) or `$HARNESS_TASKS_DIR` (folders joined by the
path separator); their files take precedence over shipped ones of the same name. A folder may also hold
lm-evaluation-harness task files, which are read as they are (harness/lm_eval_tasks.py).

A harness task file holds, besides the templates and controls (see harness/prompts.py):

    task: sst2                      # the name on the command line (a family file has `names: {pattern, shown, example}`)
    description: ...                # optional, one line
    answer: choice                  # choice (default) | generate (greedy decoding, exact match) | read (a list)
    labels: [negative, positive]    # label id -> name; a row's label may be the name, the id, or true/false
    metrics: [acc]                  # by name (harness/metrics.py METRICS); the first is the headline one
    data:                           # where the rows come from (harness/loaders.py)
      val: data/val.jsonl           # jsonl, json, csv or tsv (.gz too), relative to this file or absolute
      train: data/train.jsonl
      label: label                  # the field holding the label (default `label`)
      # or: hub: {path: glue, name: sst2}, splits: {val: validation, train: train}
    derive: [copa-connective]       # named field derivations (harness/loaders.py DERIVATIONS)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from harness.errors import HarnessError
from harness.resources import parse_yaml, resource_dir
from harness.tasks import TaskSpec

ENV = "HARNESS_TASKS_DIR"
ANSWERS = ("choice", "generate", "read")
TASK_KEYS = {
    "task", "description", "names", "answer", "labels", "metrics", "grouped", "data", "derive", "max_new_tokens",
    "answer_pattern", "fewshot_delimiter", "content_free", "templates", "controls",
}  # fmt: skip
COMPANION_SUFFIXES = (".harness.yaml", ".harness.yml")  # <task>.harness.yaml: templates added to an lm-eval task
PROMPTSOURCE_SUFFIXES = (".promptsource.yaml", ".promptsource.yml")  # promptsource templates of an lm-eval task
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")  # task names: lower case, no `/` (store keys and file names)


@dataclass(frozen=True)
class FunctionRef:
    """An lm-eval `!function utils.fn` tag: a function in a Python file beside the task file."""

    folder: Path
    dotted: str


class TaskYamlLoader(yaml.SafeLoader):
    """Safe YAML plus lm-eval's `!function` tag (resolved only when an lm-eval task is run)."""


def _function_tag(loader: TaskYamlLoader, node: yaml.Node) -> FunctionRef:
    return FunctionRef(Path(loader.name).parent if loader.name else Path("."), loader.construct_scalar(node))


TaskYamlLoader.add_constructor("!function", _function_tag)


def read_task_yaml(path: Path) -> object:
    """A task file's content; a YAML error is a one-line error naming the file and line."""
    return parse_yaml(path, TaskYamlLoader)


# ------------------------------------------------------------------------------------------------------ folders
_EXTRA_DIRS: list[Path] = []


def use_task_dirs(dirs: list[str] | None) -> None:
    """Add the folders of `--tasks-dir` (before $HARNESS_TASKS_DIR's and the shipped `tasks/`). A command that
    reads task files starts here, so specs a report in this process read back from a store (`remember`) are
    forgotten: a run plans from the task files."""
    _EXTRA_DIRS.clear()
    _STORED.clear()
    for value in dirs or []:
        path = Path(value).expanduser()
        if not path.is_dir():
            raise HarnessError(f"task folder not found: {path} (--tasks-dir)")
        _EXTRA_DIRS.append(path)


def task_dirs() -> list[tuple[Path, str]]:
    """(folder, origin) in precedence order: --tasks-dir, $HARNESS_TASKS_DIR, then the shipped tasks."""
    out = [(p, str(p)) for p in _EXTRA_DIRS]
    for value in filter(None, os.environ.get(ENV, "").split(os.pathsep)):
        path = Path(value).expanduser()
        if not path.is_dir():
            raise HarnessError(f"task folder not found: {path} ({ENV})")
        out.append((path, str(path)))
    out.append((resource_dir("tasks"), "shipped"))
    return out


# ------------------------------------------------------------------------------------------------------ catalog
@dataclass
class Entry:
    """One task file: a task (`name`), or a family whose names match `pattern`."""

    path: Path
    origin: str
    doc: dict
    name: str = ""
    pattern: re.Pattern | None = None
    shown: str = ""
    example: str = ""  # a family's name listed by `harness tasks`
    lm_eval: bool = False


def _entries(folder: Path, origin: str) -> list[Entry]:
    shipped = origin == "shipped"
    files = sorted(folder.glob("*.yaml") if shipped else [*folder.rglob("*.yaml"), *folder.rglob("*.yml")])
    out = []
    for path in files:
        if path.name.endswith(COMPANION_SUFFIXES + PROMPTSOURCE_SUFFIXES):
            continue  # an lm-eval task's extra templates, read with it (harness/lm_eval_tasks.py, promptsource.py)
        doc = read_task_yaml(path)
        if not isinstance(doc, dict):
            if shipped:
                raise HarnessError(f"{path}: expected a mapping")
            continue  # a user's folder may hold other YAML files
        from harness.lm_eval_tasks import is_lm_eval_task

        if is_lm_eval_task(doc):
            if isinstance(doc.get("task"), str):
                out.append(Entry(path, origin, doc, name=doc["task"].strip().lower(), lm_eval=True))
            continue  # a group file, or a template only included by others
        if "templates" not in doc and doc.get("answer") != "read":
            if shipped:
                raise HarnessError(f"{path}: no 'templates'")
            continue
        names = doc.get("names")
        if names is not None:
            if not isinstance(names, dict) or not isinstance(names.get("pattern"), str):
                raise HarnessError(
                    f"{path}: 'names' must be a mapping {{pattern: <regex>, shown: <text>, example: <a name>}}"
                )
            try:
                pattern = re.compile(names["pattern"])
            except re.error as err:
                raise HarnessError(f"{path}: names.pattern is not a regular expression ({err})") from None
            example = str(names.get("example", ""))
            if not pattern.fullmatch(example):
                raise HarnessError(f"{path}: names.example must be a task name that names.pattern matches")
            shown = str(names.get("shown", names["pattern"]))
            out.append(Entry(path, origin, doc, pattern=pattern, shown=shown, example=example))
            continue
        name = doc.get("task")
        if not isinstance(name, str) or not NAME.match(name.strip().lower()):
            raise HarnessError(
                f"{path}: field 'task' must be a name of lower-case letters, digits, '-', '_' or '.' (got {name!r})"
            )
        out.append(Entry(path, origin, doc, name=name.strip().lower()))
    return out


_CACHE: dict[tuple, list[Entry]] = {}


def entries() -> list[Entry]:
    """Every task file, in precedence order (a user's before a shipped one)."""
    dirs = task_dirs()
    key = tuple((str(p), o) for p, o in dirs)
    if key not in _CACHE:
        _CACHE[key] = [e for folder, origin in dirs for e in _entries(folder, origin)]
    return _CACHE[key]


_STORED: dict[str, TaskSpec] = {}


def remember(spec: TaskSpec) -> None:
    """A spec read back from a store (`harness report`): what was run, whatever the task files say today."""
    _STORED[spec.name] = spec


def find_task(name: str) -> TaskSpec | None:
    """The spec of task `name`, or None."""
    key = name.strip().lower()
    if key in _STORED:
        return _STORED[key]
    for entry in entries():
        if entry.name == key:
            return spec_of(entry, key)
    for entry in entries():
        if entry.pattern is not None and entry.pattern.fullmatch(key):
            return spec_of(entry, key)
    return None


def get_task(name: str) -> TaskSpec:
    spec = find_task(name)
    if spec is None:
        raise HarnessError(f"unknown task '{name}' (--tasks): known tasks are {', '.join(known_names())}")
    return spec


def known_names() -> list[str]:
    """Task names and family patterns as shown to users, each once (the first file of a name wins)."""
    return [name for name, _ in listing()]


def listing() -> list[tuple[str, Entry]]:
    """(name or family, its file) for `harness tasks`: each name once, from the file that wins."""
    out, seen = [], set()
    for e in entries():
        key = e.name or e.shown
        if key not in seen:
            seen.add(key)
            out.append((key, e))
    return out


def file_of(stem: str) -> Path | None:
    """The winning task file whose name (file stem) is `stem`, for prompts of families (`arithmetic`)."""
    for e in entries():
        if e.path.stem == stem and not e.lm_eval:
            return e.path
    return None


# ------------------------------------------------------------------------------------------------------ parsing
def spec_of(entry: Entry, name: str) -> TaskSpec:
    if entry.lm_eval:
        from harness.lm_eval_tasks import spec_from_lm_eval

        return spec_from_lm_eval(entry.path, entry.doc, entry.origin)
    spec = parse_spec(entry.path, entry.doc, name, entry.origin)
    from harness.loaders import get_loader

    return get_loader(spec.loader, spec.path).specialize(spec)


def parse_spec(path: Path, doc: dict, name: str, origin: str) -> TaskSpec:
    """A harness task file's task fields -> TaskSpec, each checked with an error naming the file and field."""
    from harness.loaders import DERIVATIONS, LOADERS
    from harness.metrics import METRICS

    unknown = set(doc) - TASK_KEYS
    if unknown:
        raise HarnessError(
            f"{path}: unknown field(s) {', '.join(sorted(unknown))}; a task file has {', '.join(sorted(TASK_KEYS))}"
        )
    answer = doc.get("answer", "choice")
    if answer not in ANSWERS:
        raise HarnessError(f"{path}: field 'answer' must be one of {', '.join(ANSWERS)} (got {answer!r})")
    labels = doc.get("labels") or []
    if not isinstance(labels, list) or not all(isinstance(x, (str, int)) and str(x).strip() for x in labels):
        raise HarnessError(f"{path}: field 'labels' must be a list of label names")
    if answer == "choice" and "data" in doc and not labels and doc["data"].get("loader") != "superglue":
        raise HarnessError(f"{path}: field 'labels' is needed for answer: choice")
    metrics = doc.get("metrics") or (["em"] if answer == "generate" else ["acc"])
    if not isinstance(metrics, list) or not metrics:
        raise HarnessError(f"{path}: field 'metrics' must be a list of metric names")
    for metric in metrics:
        if answer not in METRICS.get(metric, str(path)).answers:
            fitting = [name for name, m in METRICS.items() if answer in m.answers]
            raise HarnessError(
                f"{path}: metric '{metric}' (metrics) does not score answer: {answer}; those that do are "
                f"{', '.join(fitting)}"
            )
    data = doc.get("data")
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: field 'data' must be a mapping (val/train files, hub, or loader)")
    loader = data.get("loader") or ("hub" if "hub" in data else "files")
    if loader not in LOADERS:
        raise HarnessError(LOADERS.unknown(loader, str(path)))
    derive = doc.get("derive") or []
    if not isinstance(derive, list):
        raise HarnessError(f"{path}: field 'derive' must be a list of names")
    for d in derive:
        if d not in DERIVATIONS:
            raise HarnessError(DERIVATIONS.unknown(d, str(path)))
    max_new = doc.get("max_new_tokens", 32 if answer == "generate" else 0)
    if not isinstance(max_new, int) or isinstance(max_new, bool) or max_new < 0:
        raise HarnessError(f"{path}: field 'max_new_tokens' must be a whole number")
    pattern = doc.get("answer_pattern", "")
    try:
        re.compile(str(pattern))
    except re.error as err:
        raise HarnessError(f"{path}: field 'answer_pattern' is not a regular expression ({err})") from None
    return TaskSpec(
        name=name,
        labels=tuple(str(x) for x in labels),
        metrics=tuple(metrics),
        grouped=bool(doc.get("grouped", False)),
        answer=answer,
        max_new_tokens=max_new,
        answer_pattern=str(pattern),
        loader=loader,
        data=dict(data),
        derive=tuple(derive),
        path=path,
        origin=origin,
        description=str(doc.get("description", "")),
    )
