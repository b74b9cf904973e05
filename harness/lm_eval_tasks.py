"""lm-evaluation-harness task YAMLs, read as they are: a folder of them given to --tasks-dir runs unchanged.

A file is an lm-eval task where it has lm-eval's keys (`output_type`, `dataset_path`, `doc_to_text`, `include`) and no
`templates`; it is read with lm-eval 0.4.13's semantics (lm_eval/api/task.py ConfigurableTask, lm_eval/tasks):

- `include:` (a path or a list, relative to the including file) is read first and the file's own keys win; a group
  file (`group:` with a `task:` list) and a file without a `task` name are skipped.
- Data: `datasets.load_dataset(dataset_path, dataset_name, split=..., **dataset_kwargs)`. A relative path in
  `dataset_path`, `dataset_kwargs.data_files` or `dataset_kwargs.data_dir` is read from the folder of the YAML file
  that sets it where it exists there; otherwise it is passed on as it is and `datasets` reads it from the current
  folder, as lm-eval does (lm-eval passes every path on unchanged).
- Splits: harness evaluates on `validation_split`, else `test_split` (lm-eval itself prefers `test_split` where
  both are set); demos and training come from `training_split`, else `fewshot_split` (or `fewshot_config.split`),
  never from the split evaluated on.
- `process_docs`, `doc_to_text`, `doc_to_choice`, `doc_to_target` as lm-eval applies them: a field name, Jinja
  (rendered in harness's template sandbox), a literal list or int, or `!function module.fn` (a Python file beside
  the YAML file, run as lm-eval runs it: only point --tasks-dir at task folders you trust).
- `output_type: multiple_choice` is a choice task: a fixed `doc_to_choice` list gives the labels (`harness tasks`
  shows them; every method applies); choices that vary per document (a field, Jinja, a function) leave the labels
  empty, and each example's label is the index of its gold choice among its own choices, so accuracy, acc_norm and
  the prompt method's variants apply but trained methods, which need one label set, do not (the run says so).
- `output_type: generate_until` is a generated answer (`answer: generate`): greedy decoding up to
  `generation_kwargs.max_gen_toks` (lm-eval's default 256), stopped and cut at the first of `generation_kwargs.until`
  (lm-eval's default: the `fewshot_delimiter`), the gold being `doc_to_target` (or `doc_to_choice[doc_to_target]`),
  scored with lm-eval's exact_match and its options: nothing stripped.
- `metric_list`: acc, acc_norm and exact_match (em); without one, lm-eval's defaults (acc, acc_norm; exact_match).
- `target_delimiter`, `fewshot_delimiter`; a `description` without fields is put before the demos and the prompt.
- `use_prompt: promptsource:<name>`: the template of that name in `<task>.promptsource.yaml` beside the task file
  (promptsource's templates.yaml; harness/promptsource.py) gives the text, the choices and the target, as in lm-eval.
- Keys that change what lm-eval computes and that harness does not reproduce (`filter_list`, `process_results`,
  `gen_prefix`, sampling in `generation_kwargs`, ...) are one-line errors naming the file and field;
  `num_fewshot` and `fewshot_config.sampler` are left to harness's --shots and --demo-selection (`first` takes the
  first train documents, as lm-eval's `first_n` sampler does).

Templates (`prompts_from_lm_eval`): `lm-eval`, the task's own prompt (its scores equal lm-eval's), plus two controls:
`content-free` (doc_to_text of the document with every field, list item and mapping value replaced by "N/A"; where
doc_to_text fails on that, "N/A" and the answer cue) and `input-only` (the document's values that doc_to_text shows,
in the order it shows them, joined by a space, then the answer cue: the last line of what doc_to_text puts after its
last field, e.g. "\\nAnswer:"). Both keep the task's answer choices; contextual calibration uses the content-free text.
Users add templates in `<task>.harness.yaml` beside the task file: `templates:` and `controls:` in harness's format
(harness/prompts.py) over the document's fields, with one choice per label (fixed choices),
`{for_each: lm_eval_choices, text: "{{item}}"}` (choices per document) or `["{{lm_eval_target}}"]` (a generated
answer), and `content_free:` (the field values of a content-free input) for calibrating them. A multiple_choice
task also gets the templates of `<task>.promptsource.yaml` that have answer_choices, as `ps.<name>`, where their
target is the task's gold choice on every val document (harness/promptsource.py).
"""

from __future__ import annotations

import ast
import glob
import importlib
import importlib.util
import numbers
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jinja2
import jinja2.meta

from harness import promptsource
from harness.catalog import COMPANION_SUFFIXES, NAME, FunctionRef, read_task_yaml
from harness.errors import HarnessError
from harness.loaders import Loader, register_loader
from harness.prompts import PromptSet, compile_field, prompt_set, render_sandboxed
from harness.tasks import Example, TaskSpec

LM_EVAL_KEYS = ("output_type", "dataset_path", "doc_to_text", "include")
OUTPUT_TYPES = {"multiple_choice": "choice", "generate_until": "generate"}
METRICS = {"acc": "acc", "acc_norm": "acc_norm", "exact_match": "em"}  # lm-eval's name -> harness's
DEFAULT_METRICS = {"multiple_choice": ["acc", "acc_norm"], "generate_until": ["exact_match"]}  # lm-eval's registry
EXACT_MATCH_OPTIONS = ("regexes_to_ignore", "ignore_case", "ignore_punctuation", "ignore_numbers")
MAX_GEN_TOKS = 256  # lm_eval.defaults.DEFAULT_MAX_GEN_TOKS
GEN_LENGTH_KEYS = ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")  # lm-eval's synonyms
# lm-eval's TaskConfig fields (and the structural keys its task index reads): anything else is a typo
TASK_CONFIG_KEYS = {
    "task", "task_alias", "tag", "group", "task_list", "include", "custom_dataset", "dataset_path", "dataset_name",
    "dataset_kwargs", "training_split", "validation_split", "test_split", "fewshot_split", "process_docs",
    "doc_to_text", "doc_to_target", "doc_to_image", "doc_to_audio", "unsafe_code", "doc_to_choice",
    "process_results", "use_prompt", "description", "target_delimiter", "fewshot_delimiter", "fewshot_config",
    "num_fewshot", "metric_list", "output_type", "generation_kwargs", "repeats", "filter_list",
    "should_decontaminate", "doc_to_decontamination_query", "gen_prefix", "metadata", "class",
}  # fmt: skip
# set (not null or empty) these change what lm-eval computes in ways harness does not reproduce
UNSUPPORTED = {
    "class": "a Python task class",
    "custom_dataset": "a Python data set",
    "process_results": "a Python scorer",
    "filter_list": "output filters",
    "gen_prefix": "an answer prefix",
    "doc_to_image": "images",
    "doc_to_audio": "audio",
}
FEWSHOT_CONFIG_UNSUPPORTED = ("samples", "fewshot_indices", "process_docs", "doc_to_text", "doc_to_choice",
                              "doc_to_target", "gen_prefix", "fewshot_delimiter", "target_delimiter")  # fmt: skip
# datasets' packaged builders: a `dataset_path` of these names is never a folder
PACKAGED_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "sql", "xml", "webdataset"}

# Fields each example gets besides the document's own (templates read them)
TEXT = "lm_eval_text"  # doc_to_text
CHOICES = "lm_eval_choices"  # doc_to_choice, where it varies per document
TARGET = "lm_eval_target"  # a generated answer's gold
OTHER_TARGETS = "lm_eval_other_targets"  # other documents' golds: the random labels of a generated answer
CONTENT_FREE = "lm_eval_content_free"  # the content-free control's text
INPUT_ONLY = "lm_eval_input_only"  # the input-only control's text
BLANK = "lm_eval_blank"  # True only in the calibration input: the lm-eval template shows the content-free text
N_OTHER_TARGETS = 8
NA = "N/A"
_MARK = "\ue000{}\ue001"  # private-use characters around a field's number: where doc_to_text shows a field
_MARKS = re.compile("\ue000(\\d+)\ue001")


def is_lm_eval_task(doc: dict) -> bool:
    """An lm-eval task file (or a file others include), told apart from a harness task file by its keys."""
    return any(key in doc for key in LM_EVAL_KEYS) and "templates" not in doc


# ------------------------------------------------------------------------------------------------------ reading
def read_config(path: Path) -> dict:
    """A task file with its includes merged as lm-eval merges them (included first, the file's own keys win)."""
    return _read(path, ())


def _read(path: Path, seen: tuple[Path, ...], doc: object = None) -> dict:
    doc = read_task_yaml(path) if doc is None else doc
    if not isinstance(doc, dict):
        raise HarnessError(f"{path}: expected a mapping of lm-eval task fields")
    doc = _local_paths(dict(doc), path)
    includes = doc.pop("include", None)
    if includes is None:
        return doc
    merged: dict = {}
    for include in includes if isinstance(includes, list) else [includes]:
        if not isinstance(include, str) or not include.strip():
            raise HarnessError(f"{path}: field 'include' must be a file name or a list of them")
        target = Path(include).expanduser()
        target = target if target.is_absolute() else path.parent / target
        if target.resolve() in seen or target.resolve() == path.resolve():
            raise HarnessError(f"{path}: field 'include': {target} includes itself (an include cycle)")
        if not target.is_file():
            raise HarnessError(f"{path}: field 'include': {target} not found")
        included = _read(target, (*seen, path.resolve()))
        included.pop("task_list", None)  # lm-eval: it defines the included file's own tasks
        merged.update(included)
    merged.update(doc)
    return merged


def _local_paths(doc: dict, path: Path) -> dict:
    """`dataset_path` and `dataset_kwargs` paths that exist relative to this file's folder, made absolute."""
    folder = path.parent
    value = doc.get("dataset_path")
    if isinstance(value, str) and value not in PACKAGED_BUILDERS and _local(value, folder):
        doc["dataset_path"] = str(folder / value)
    kwargs = doc.get("dataset_kwargs")
    if isinstance(kwargs, dict):
        kwargs = dict(kwargs)
        if isinstance(kwargs.get("data_dir"), str) and _local(kwargs["data_dir"], folder):
            kwargs["data_dir"] = str(folder / kwargs["data_dir"])
        if "data_files" in kwargs:
            kwargs["data_files"] = _map_files(
                kwargs["data_files"], lambda p: str(folder / p) if _local(p, folder) else p
            )
        doc["dataset_kwargs"] = kwargs
    return doc


def _local(value: str, folder: Path) -> bool:
    path = Path(value).expanduser()
    if path.is_absolute() or "://" in value:
        return False
    return (folder / path).exists() or bool(glob.has_magic(value) and glob.glob(str(folder / value)))


def _map_files(files: object, change: Callable[[str], str]) -> object:
    """`data_files` (a path, a list, or a mapping of split -> path or list) with `change` applied to each path."""
    if isinstance(files, str):
        return change(files)
    if isinstance(files, list):
        return [change(f) if isinstance(f, str) else f for f in files]
    if isinstance(files, dict):
        return {k: _map_files(v, change) for k, v in files.items()}
    return files


def _files(files: object) -> list[str]:
    out: list[str] = []
    _map_files(files, lambda p: out.append(p) or p)
    return out


# ------------------------------------------------------------------------------------------------------ the spec
def spec_from_lm_eval(path: Path, doc: dict, origin: str) -> TaskSpec:
    """An lm-eval task file -> TaskSpec (loader "lm-eval"), each field checked with an error naming file and field.

    `doc` is the file as read; its includes are merged here. Python (`!function`) is not run until data is loaded.
    """
    cfg = _read(path, (), doc)

    def bad(field: str, why: str) -> HarnessError:
        return HarnessError(f"{path}: field '{field}': {why}")

    unknown = sorted(set(cfg) - TASK_CONFIG_KEYS)
    if unknown:
        raise HarnessError(f"{path}: unknown field(s) {', '.join(unknown)}: not lm-eval task fields")
    name = cfg.get("task")
    if not isinstance(name, str) or not NAME.match(name.strip().lower()):
        raise bad("task", f"must be a task name of letters, digits, '-', '_' or '.' (got {name!r})")
    output_type = cfg.get("output_type", "generate_until")  # lm-eval's default
    if output_type not in OUTPUT_TYPES:
        known = "loglikelihood", "loglikelihood_rolling"
        why = "is not run by harness" if output_type in known else "is not an lm-eval output type"
        raise bad("output_type", f"{output_type!r} {why}; harness runs {' and '.join(OUTPUT_TYPES)}")
    for key, what in UNSUPPORTED.items():
        if cfg.get(key) not in (None, False, [], {}, ""):
            raise bad(key, f"{what} are not supported by harness's lm-eval import (remove it to run the task)")
    if cfg.get("unsafe_code"):
        raise bad("unsafe_code", "tasks that run generated code are not supported")
    if cfg.get("repeats") not in (None, 1):
        raise bad("repeats", "repeated generations are not supported (harness decodes greedily once)")
    if not isinstance(cfg.get("dataset_path"), str) or not cfg["dataset_path"].strip():
        raise bad("dataset_path", "must name a data set (a Hub id, a folder, or json/csv with data_files)")
    if cfg.get("dataset_name") is not None and not isinstance(cfg["dataset_name"], str):
        raise bad("dataset_name", "must be a string")
    if cfg.get("dataset_kwargs") is not None and not isinstance(cfg["dataset_kwargs"], dict):
        raise bad("dataset_kwargs", "must be a mapping of datasets.load_dataset arguments")
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if cfg.get(key) is not None and not isinstance(cfg[key], str):
            raise bad(key, "must be a split name")
    if not (cfg.get("validation_split") or cfg.get("test_split")):
        raise bad("validation_split", "neither validation_split nor test_split is set: nothing to evaluate on")
    fewshot = cfg.get("fewshot_config") or {}
    if not isinstance(fewshot, dict):
        raise bad("fewshot_config", "must be a mapping")
    if fewshot.get("split") is not None and not isinstance(fewshot["split"], str):
        raise bad("fewshot_config.split", "must be a split name")
    for key in FEWSHOT_CONFIG_UNSUPPORTED:
        if fewshot.get(key) is not None:
            raise bad(f"fewshot_config.{key}", "demos formatted apart from the task are not supported")
    for key in ("target_delimiter", "fewshot_delimiter", "description"):
        if not isinstance(cfg.get(key, ""), str):
            raise bad(key, "must be a string")
    generates = output_type == "generate_until"
    prompt = None
    if cfg.get("use_prompt") not in (None, ""):
        prompt = promptsource.use_prompt(cfg["use_prompt"], path, name.strip().lower())
        if not generates and prompt.answers is None:
            raise bad("use_prompt", f"{prompt.where} has no answer_choices: a multiple_choice task needs them")
    _check_doc_fields(cfg, path, generates, prompt is not None)
    labels = _fixed_choices(cfg, path) if prompt is None else prompt.fixed or ()
    if generates:
        labels = ()
    stop, max_new = _generation(cfg, path) if generates else (("\n",), 0)
    metrics, exact_match = _metrics(cfg, path, output_type)
    return TaskSpec(
        name=name.strip().lower(),
        labels=labels,
        metrics=metrics,
        answer=OUTPUT_TYPES[output_type],
        max_new_tokens=max_new,
        stop=stop,
        exact_match=exact_match,
        loader="lm-eval",
        data={"config": cfg, "preamble": _description(cfg, path)},
        path=path,
        origin=origin,
    )


def _check_doc_fields(cfg: dict, path: Path, generates: bool, prompted: bool = False) -> None:
    allowed = {
        "doc_to_text": (str, FunctionRef),
        "doc_to_target": (str, int, list, FunctionRef),
        "doc_to_choice": (str, list, dict, FunctionRef),
        "process_docs": (FunctionRef,),
    }
    for key, types in allowed.items():
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            if key == "doc_to_text" and isinstance(value, int):
                why = "an index into the choices (lm-eval's multiple inputs, as in Winogrande) is not supported"
            else:
                why = f"must be {' or '.join(_KINDS[t] for t in types)}, not {type(value).__name__}"
            raise HarnessError(f"{path}: field '{key}': {why}")
        if isinstance(value, FunctionRef) and "." not in value.dotted:
            raise HarnessError(f"{path}: field '{key}': !function {value.dotted!r} must name module.function")
        if isinstance(value, str) and key != "process_docs":
            compile_field(value, path, key)  # a syntax error shows now, not on the first row
    for key in ("doc_to_text", "doc_to_target") + (() if generates else ("doc_to_choice",)):
        if cfg.get(key) is None and not prompted:  # a promptsource prompt replaces the three, as in lm-eval
            raise HarnessError(f"{path}: field '{key}' is needed")


_KINDS = {str: "a field name or Jinja", int: "an int", list: "a list", dict: "a mapping", FunctionRef: "!function"}


def _fixed_choices(cfg: dict, path: Path) -> tuple[str, ...]:
    """The labels: doc_to_choice where it is the same for every document (a list, a mapping's values, or Jinja
    that reads no field); () where it varies per document."""
    value = cfg.get("doc_to_choice")
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, str) and not jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(value)):
        # `{{['no', 'yes']}}`: no field; a bare name would be a field (a name that is no field fails on the first row)
        if "{" in value:
            value = _literal_list(render_sandboxed(compile_field(value, path, "doc_to_choice"), {}), path)
    if isinstance(value, list):
        if not value or not all(isinstance(c, str) for c in value):
            raise HarnessError(f"{path}: field 'doc_to_choice': a list of answer texts (strings)")
        return tuple(value)
    return ()


def _literal_list(text: str, path: Path, where: str = "") -> list:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise HarnessError(f"{path}: field 'doc_to_choice': {text[:80]!r} is not a list{where}") from None
    if not isinstance(value, list):
        raise HarnessError(f"{path}: field 'doc_to_choice': {text[:80]!r} is not a list{where}")
    return value


def _metrics(cfg: dict, path: Path, output_type: str) -> tuple[tuple[str, ...], dict | None]:
    """Harness metric names (acc first: the headline every report reads) and exact_match's options."""
    entries = cfg.get("metric_list")
    if entries is None:
        entries = [{"metric": m} for m in DEFAULT_METRICS[output_type]]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise HarnessError(f"{path}: field 'metric_list': a list of {{metric: name, ...}} entries")
    names, options = [], None
    allowed = ("acc", "acc_norm") if output_type == "multiple_choice" else ("exact_match",)
    for entry in entries:
        metric = entry.get("metric")
        if not isinstance(metric, str) or metric not in allowed:
            shown = metric.dotted if isinstance(metric, FunctionRef) else metric
            raise HarnessError(
                f"{path}: field 'metric_list': metric {shown!r} is not computed by harness for {output_type} "
                f"(it computes {', '.join(allowed)})"
            )
        names.append(METRICS[metric])
        if metric == "exact_match":
            options = {k: entry[k] for k in EXACT_MATCH_OPTIONS if entry.get(k) is not None}
            regexes = options.get("regexes_to_ignore")
            if regexes is not None:
                if not isinstance(regexes, list) or not all(isinstance(r, str) for r in regexes):
                    raise HarnessError(f"{path}: field 'metric_list': regexes_to_ignore must be a list of patterns")
                for pattern in regexes:
                    try:
                        re.compile(pattern)
                    except re.error as err:
                        raise HarnessError(
                            f"{path}: field 'metric_list': regexes_to_ignore {pattern!r} ({err})"
                        ) from None
    if not names:
        raise HarnessError(f"{path}: field 'metric_list' is empty")
    if output_type == "multiple_choice":
        return ("acc",) + (("acc_norm",) if "acc_norm" in names else ()), None
    return ("em",), options or {}


def _generation(cfg: dict, path: Path) -> tuple[tuple[str, ...], int]:
    """Stop strings and the token limit of a generated answer, with lm-eval's defaults."""
    fewshot_delimiter = cfg.get("fewshot_delimiter", "\n\n")
    kwargs = cfg.get("generation_kwargs")
    if kwargs is None:
        return (fewshot_delimiter,), MAX_GEN_TOKS
    if not isinstance(kwargs, dict):
        raise HarnessError(f"{path}: field 'generation_kwargs' must be a mapping")
    temperature = kwargs.get("temperature") or 0
    if kwargs.get("do_sample") or not isinstance(temperature, (int, float)) or temperature > 0:
        raise HarnessError(
            f"{path}: field 'generation_kwargs': sampling (do_sample, temperature) is not supported; harness "
            "decodes greedily"
        )
    until = kwargs.get("until", [fewshot_delimiter])
    until = [until] if isinstance(until, str) else until
    if not isinstance(until, list) or not all(isinstance(s, str) for s in until):
        raise HarnessError(f"{path}: field 'generation_kwargs.until' must be a string or a list of strings")
    length = next((kwargs[k] for k in GEN_LENGTH_KEYS if k in kwargs), MAX_GEN_TOKS)
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise HarnessError(f"{path}: field 'generation_kwargs.max_gen_toks' must be a positive whole number")
    return tuple(until), length


def _description(cfg: dict, path: Path) -> str:
    """The `description`, rendered once: it is put before the demos, so it cannot read a document's fields."""
    text = cfg.get("description") or ""
    if not text:
        return ""
    template = compile_field(text, path, "description")
    if jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(text)):
        raise HarnessError(f"{path}: field 'description': a description that reads document fields is not supported")
    return render_sandboxed(template, {})


# ------------------------------------------------------------------------------------------------------ documents
_MODULES: dict[Path, object] = {}


def _function(ref: FunctionRef, path: Path, field: str) -> Callable:
    """`!function module.fn`: `module.py` in the folder of the YAML file that names it, else an importable module."""
    module_name, _, name = ref.dotted.rpartition(".")
    where = f"{path}: field '{field}': !function {ref.dotted}"
    file = (ref.folder / (module_name.replace(".", "/") + ".py")).resolve()
    if file.is_file():
        if file not in _MODULES:
            # a name of its own (two task folders may both have a utils.py), registered as lm-eval registers it
            unique = f"harness_lm_eval_{len(_MODULES)}_{file.stem}"
            spec = importlib.util.spec_from_file_location(unique, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module
            try:
                spec.loader.exec_module(module)
            except Exception as err:  # the user's module: any error is theirs, in one line
                del sys.modules[unique]
                raise HarnessError(f"{where}: importing {file} failed: {_one_line(err)}") from None
            _MODULES[file] = module
        module = _MODULES[file]
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception:
            raise HarnessError(f"{where}: no {file} and no module '{module_name}' to import") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise HarnessError(f"{where}: {getattr(module, '__file__', module_name)} has no function '{name}'")
    return function


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"


def _blank(value: object) -> object:
    """A document with every value replaced by "N/A" (lists and mappings keep their shape)."""
    if isinstance(value, list):
        return [_blank(v) for v in value]
    if isinstance(value, dict):
        return {k: _blank(v) for k, v in value.items()}
    return NA


def _mark(value: object, shown: list[str], numbers: bool = True) -> object:
    """A document whose strings (and numbers) are replaced by numbered marks; `shown` collects the values. A
    promptsource template keeps its numbers: it indexes answer_choices with the label."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str) or (numbers and isinstance(value, (int, float))):
        shown.append(str(value))
        return _MARK.format(len(shown) - 1)
    if isinstance(value, list):
        return [_mark(v, shown, numbers) for v in value]
    if isinstance(value, dict):
        return {k: _mark(v, shown, numbers) for k, v in value.items()}
    return value


@dataclass
class _Field:
    """One of doc_to_text/doc_to_choice/doc_to_target, applied to a document as lm-eval applies it."""

    name: str
    value: object
    path: Path
    function: Callable | None = None
    template: jinja2.Template | None = None

    def raw(self, doc: dict, where: str) -> tuple[object, bool]:
        """(lm-eval's value before its type rules, whether it is rendered Jinja): the document's field of that name,
        the rendered Jinja, the literal, or what the function returns."""
        try:
            if self.function is not None:
                return self.function(doc), False
            if isinstance(self.value, str):
                if self.value in doc:
                    return doc[self.value], False
                return render_sandboxed(self.template, doc), True
        except jinja2.UndefinedError as err:
            raise HarnessError(
                f"{self.path}: field '{self.name}': undefined field ({err.message}) on {where}"
            ) from None
        except HarnessError:
            raise
        except Exception as err:
            raise HarnessError(f"{self.path}: field '{self.name}' failed on {where}: {_one_line(err)}") from None
        return (list(self.value.values()) if isinstance(self.value, dict) else self.value), False


class LmEvalTask:
    """A task file's document functions, resolved (Python imported) when its data is first loaded."""

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.cfg = cfg = spec.data["config"]
        self.path = spec.path
        self.fields = {key: self._field(key) for key in ("doc_to_text", "doc_to_choice", "doc_to_target")}
        # `use_prompt: promptsource:<name>`: the template's input, choices and target replace the three
        self.prompt = None
        if cfg.get("use_prompt") not in (None, ""):
            self.prompt = promptsource.use_prompt(cfg["use_prompt"], self.path, spec.name)
        process = cfg.get("process_docs")
        self.process_docs = _function(process, self.path, "process_docs") if process is not None else None

    def _field(self, key: str) -> _Field | None:
        value = self.cfg.get(key)
        if value is None:
            return None
        field = _Field(key, value, self.path)
        if isinstance(value, FunctionRef):
            field.function = _function(value, self.path, key)
        elif isinstance(value, str):
            field.template = compile_field(value, self.path, key)
        return field

    # lm-eval's type rules (ConfigurableTask.doc_to_text / doc_to_choice / doc_to_target)
    def text(self, doc: dict, where: str) -> str:
        if self.prompt is not None:
            return self.prompt.apply(doc, where)[0]
        value, rendered = self.fields["doc_to_text"].raw(doc, where)
        multiple_inputs = isinstance(value, int) or (
            rendered and value.isdigit() and self.cfg.get("doc_to_choice") is not None
        )
        if multiple_inputs:
            raise HarnessError(
                f"{self.path}: field 'doc_to_text' gives a choice index on {where} (lm-eval's multiple inputs, as "
                "in Winogrande): not supported"
            )
        if not isinstance(value, str):
            raise HarnessError(f"{self.path}: field 'doc_to_text' gives {type(value).__name__}, not text, on {where}")
        return value

    def choices(self, doc: dict, where: str) -> list[str] | None:
        if self.prompt is not None:  # a generated answer's gold is the target itself, as in lm-eval
            return None if self.spec.generates else self.prompt.choices(doc, where)
        field = self.fields["doc_to_choice"]
        if field is None:
            return None
        value, rendered = field.raw(doc, where)
        if rendered:
            value = _literal_list(value, self.path, f" on {where}")
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise HarnessError(f"{self.path}: field 'doc_to_choice' gives no list of texts on {where}")
        return value

    def target(self, doc: dict, where: str) -> object:
        if self.prompt is not None:
            return self.prompt.apply(doc, where)[1]
        value, rendered = self.fields["doc_to_target"].raw(doc, where)
        if rendered:
            if value.isdigit() and self.cfg.get("doc_to_choice") is not None:
                return ast.literal_eval(value)
            if len(value) >= 2 and value[0] == "[" and value[-1] == "]":
                try:
                    return ast.literal_eval(value)
                except (SyntaxError, ValueError):
                    return value
        return value

    def gold(self, doc: dict, choices: list[str] | None, where: str) -> tuple[int, str]:
        """(gold choice index, gold text); a generated answer's index is 0."""
        target = self.target(doc, where)
        if isinstance(target, list):
            raise HarnessError(
                f"{self.path}: field 'doc_to_target' gives a list (several gold answers) on {where}: not supported"
            )
        if self.spec.generates:
            if choices is not None:
                target = self._index(target, choices, where)
                return 0, choices[target]
            return 0, str(target)
        index = self._index(target, choices, where)
        return index, choices[index]

    def _index(self, target: object, choices: list[str], where: str) -> int:
        if isinstance(target, numbers.Integral):  # bool too, as in lm-eval
            if not 0 <= int(target) < len(choices):
                raise HarnessError(
                    f"{self.path}: field 'doc_to_target' gives {target} on {where}, which has {len(choices)} choices"
                )
            return int(target)
        if isinstance(target, str) and target in choices:
            return choices.index(target)
        if self.prompt is not None:
            raise HarnessError(
                f"{self.prompt.where}: its target {target!r} is not one of its answer choices {choices} on {where}"
            )
        raise HarnessError(f"{self.path}: field 'doc_to_target' gives {target!r}, not one of the choices, on {where}")

    def content_free(self, doc: dict, cue: str, where: str) -> str:
        """doc_to_text with every value "N/A"; where it fails on that, "N/A" and the answer cue."""
        try:
            return self.text(_blank(doc) if self.prompt is None else promptsource.blank_texts(doc, NA), where)
        except HarnessError:
            return NA + cue

    def input_only(self, doc: dict, answers: set[str], where: str) -> tuple[str, str]:
        """(the input-only text, the answer cue): the values doc_to_text shows, in its order, joined by a space, then
        the last line of what it puts after its last field. Where no value can be traced through doc_to_text (a
        function that fails on marked values), the document's texts that are no answer, joined, without a cue."""
        shown: list[str] = []
        try:
            marked = self.text(_mark(doc, shown, numbers=self.prompt is None), where)
        except HarnessError:
            marked = ""
        found = list(_MARKS.finditer(marked))
        if not found:
            texts = [v for v in doc.values() if isinstance(v, str) and v.strip() and v not in answers]
            return " ".join(texts), ""
        order = list(dict.fromkeys(int(m.group(1)) for m in found))
        tail = marked[found[-1].end() :]
        cue = "\n" + tail.rsplit("\n", 1)[1] if "\n" in tail else tail
        return " ".join(shown[i] for i in order) + cue, cue


_TASKS: dict[tuple[str, str], LmEvalTask] = {}


def lm_eval_task(spec: TaskSpec) -> LmEvalTask:
    key = (str(spec.path), spec.name)
    if key not in _TASKS:
        _TASKS[key] = LmEvalTask(spec)
    return _TASKS[key]


# ------------------------------------------------------------------------------------------------------ the loader
def split_name(spec: TaskSpec, split: str) -> str | None:
    """The lm-eval split behind harness's `val` (validation, else test) or `train` (training, else few-shot); train
    is None where it would be the split evaluated on."""
    cfg = spec.data["config"]
    val = cfg.get("validation_split") or cfg.get("test_split")
    if split == "val":
        return val
    fewshot = (cfg.get("fewshot_config") or {}).get("split") or cfg.get("fewshot_split")
    train = cfg.get("training_split") or fewshot
    return train if train != val else None


def _split_file(spec: TaskSpec, split: str) -> str | None:
    """The one data file of an lm-eval split (`dataset_kwargs.data_files`), where there is one."""
    files = (spec.data["config"].get("dataset_kwargs") or {}).get("data_files")
    if isinstance(files, dict):
        files = files.get(split)
    elif split != "train":
        files = None  # one file or a list: datasets names its split `train`
    return files if isinstance(files, str) else None


@register_loader("lm-eval")
class LmEvalLoader(Loader):
    """An lm-eval task file's data set: `datasets.load_dataset(dataset_path, dataset_name, **dataset_kwargs)`,
    `process_docs` applied, each document's prompt, choices and gold computed as lm-eval computes them."""

    def split_path(self, spec, split, data):
        name = split_name(spec, split)
        file = _split_file(spec, name) if name else None
        return Path(file) if file else None

    def has_split(self, spec, split, data):
        return split_name(spec, split) is not None

    def missing(self, spec, split, data):
        if split == "val":
            return f"no val split: {spec.path} sets neither validation_split nor test_split"
        return f"no train split: {spec.path} sets no training_split or fewshot_split apart from the split evaluated on"

    def load(self, spec, split, data):
        name = split_name(spec, split)
        if name is None:
            raise HarnessError(f"{spec.name}: {self.missing(spec, split, data)}")
        task = lm_eval_task(spec)
        docs = _documents(spec, task, name)
        return _examples(spec, task, docs, name)


def _documents(spec: TaskSpec, task: LmEvalTask, split: str) -> list[dict]:
    cfg = spec.data["config"]
    kwargs = dict(cfg.get("dataset_kwargs") or {})
    kwargs.pop("trust_remote_code", None)  # as lm-eval does with datasets 4
    described = cfg["dataset_path"] + (f" ({cfg['dataset_name']})" if cfg.get("dataset_name") else "")
    if "data_files" in kwargs and "://" not in cfg["dataset_path"]:
        for file in _files(kwargs["data_files"]):
            exists = glob.glob(file) if glob.has_magic(file) else Path(file).expanduser().exists()
            if "://" not in file and not exists:
                where = "" if Path(file).is_absolute() else f" in {spec.path.parent} nor in the current folder"
                raise HarnessError(f"{spec.path}: field 'dataset_kwargs.data_files': {file} not found{where}")
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.utils.logging.set_verbosity_error()
        dataset = datasets.load_dataset(cfg["dataset_path"], cfg.get("dataset_name"), split=split, **kwargs)
    except Exception as err:  # offline, unknown data set or split, a malformed file, ...: one line for the user
        raise HarnessError(f"{spec.path}: cannot load {described} ({split}) with datasets: {_one_line(err)}") from None
    if task.process_docs is not None:
        try:
            dataset = task.process_docs(dataset)
            docs = [dict(doc) for doc in dataset]
        except Exception as err:
            raise HarnessError(f"{spec.path}: field 'process_docs' failed on {split}: {_one_line(err)}") from None
    else:
        docs = [dict(doc) for doc in dataset]
    return docs


def _examples(spec: TaskSpec, task: LmEvalTask, docs: list[dict], split: str) -> list[Example]:
    """Examples: the document's fields, plus what the templates read (TEXT, CHOICES or TARGET, the controls')."""
    described = _split_file(spec, split) or spec.data["config"]["dataset_path"]
    out: list[Example] = []
    for n, doc in enumerate(docs):
        where = f"document {n} of {split} ({described})"
        text = task.text(doc, where)
        choices = task.choices(doc, where)
        label, gold = task.gold(doc, choices, where)
        answers = {gold, *(choices or [])}
        input_only, cue = task.input_only(doc, answers, where)
        fields = {**doc, TEXT: text, BLANK: False, INPUT_ONLY: input_only}
        fields[CONTENT_FREE] = task.content_free(doc, cue, where)
        if spec.generates:
            fields[TARGET] = gold
        elif not spec.labels:
            fields[CHOICES] = choices
        elif tuple(choices) != spec.labels:
            raise HarnessError(f"{spec.path}: field 'doc_to_choice' gives other choices on {where}")
        out.append(Example(str(n), fields, label, str(n), source=where))
    if spec.generates:
        targets = [ex.fields[TARGET] for ex in out]
        for i, ex in enumerate(out):
            ex.fields[OTHER_TARGETS] = _other_targets(targets, i)
    return out


def _other_targets(targets: list[str], i: int) -> list[str]:
    """Up to N_OTHER_TARGETS distinct golds of the documents after document i (cyclically) that differ from its own:
    a generated answer's random labels are other documents' answers. Its own where every gold is the same."""
    others: dict[str, None] = {}
    for step in range(1, min(len(targets), 8 * N_OTHER_TARGETS)):
        t = targets[(i + step) % len(targets)]
        if t != targets[i]:
            others.setdefault(t)
            if len(others) == N_OTHER_TARGETS:
                break
    return list(others) or [targets[i]]


# ------------------------------------------------------------------------------------------------------ templates
def _literal(text: str) -> str:
    """An answer text as a template choice: Jinja only where it would otherwise read as Jinja."""
    return text if not re.search(r"\{[{%#]", text) else "{% raw %}" + text + "{% endraw %}"


def _show(expression: str) -> str:
    return "{{ " + expression + " }}"


def companion_file(spec: TaskSpec) -> Path | None:
    """`<task>.harness.yaml` (or .yml) beside the task file: templates a user adds to it."""
    for suffix in COMPANION_SUFFIXES:
        path = spec.path.parent / f"{spec.name}{suffix}"
        if path.is_file():
            return path
    return None


def prompts_from_lm_eval(spec: TaskSpec) -> PromptSet:
    """The `lm-eval` template, the `input-only` and `content-free` controls, and a companion file's templates."""
    cfg = spec.data["config"]
    if spec.generates:
        choices: list | dict = [_show(TARGET)]
    elif spec.labels:
        choices = [_literal(c) for c in spec.labels]
    else:
        choices = {"for_each": CHOICES, "text": "{{ item }}"}
    delimiter = cfg.get("target_delimiter", " ")
    used = cfg.get("use_prompt") or None
    how = (
        f"{spec.path.name}: {used}, as lm-eval applies it"
        if used
        else f"{spec.path.name}: doc_to_text, doc_to_choice and doc_to_target as lm-eval renders them"
    )
    own = {
        "templates": [
            {
                "name": "lm-eval",
                "note": how,
                "text": _show(f"{CONTENT_FREE} if {BLANK} else {TEXT}"),
                "choices": choices,
                "target_delimiter": delimiter,
            }
        ],
        "controls": [
            {
                "name": "input-only",
                "note": "the values doc_to_text shows, joined by a space, then its answer cue",
                "text": _show(INPUT_ONLY),
                "choices": choices,
                "target_delimiter": delimiter,
            },
            {
                "name": "content-free",
                "note": 'doc_to_text with every document value "N/A"',
                "text": _show(CONTENT_FREE),
                "choices": choices,
                "target_delimiter": delimiter,
            },
        ],
        "content_free": {BLANK: True},
        "fewshot_delimiter": cfg.get("fewshot_delimiter", "\n\n"),
    }
    prompts = prompt_set(own, spec.path, spec.name)
    prompts.preamble = spec.data.get("preamble", "")
    prompts.templates += _promptsource_templates(spec, used)
    companion = companion_file(spec)
    return _with_companion(prompts, companion) if companion else prompts


def _promptsource_templates(spec: TaskSpec, used: str | None) -> list:
    """`<task>.promptsource.yaml`'s templates with answer_choices, as extra templates of a multiple_choice task (the
    one `use_prompt` names is the task's own): those whose target is the task's gold choice on every val document
    (harness/promptsource.py). Where the val data cannot be loaded now (`harness tasks` offline), each rendering
    checks its own example."""
    path = promptsource.file_of(spec.path, spec.name)
    if path is None:
        return []
    if spec.generates:
        promptsource.note(
            f"{path}: not added to {spec.name}: promptsource templates are added to multiple_choice tasks (a "
            "generate_until task can take one as its own with use_prompt: promptsource:<name>)"
        )
        return []
    own_name = used.split(":", 1)[1] if used else None
    sources = [s for s in promptsource.read_file(path) if s.name != own_name]
    own_fields = (TEXT, CHOICES, TARGET, OTHER_TARGETS, CONTENT_FREE, INPUT_ONLY, BLANK)
    templates = promptsource.extra_templates(spec, sources, own_fields, BLANK, NA)
    if not templates:
        return []
    try:
        examples = LmEvalLoader().load(spec, "val", None)
    except HarnessError:
        return templates
    return promptsource.usable(templates, examples)


def _with_companion(prompts: PromptSet, path: Path) -> PromptSet:
    """A companion file's templates after the lm-eval one; its controls replace automatic ones of the same name."""
    doc = read_task_yaml(path)
    if not isinstance(doc, dict):
        raise HarnessError(f"{path}: expected a mapping with 'templates' and/or 'controls'")
    unknown = set(doc) - {"templates", "controls", "content_free"}
    if unknown:
        raise HarnessError(
            f"{path}: unknown field(s) {', '.join(sorted(unknown))}; a companion file has templates, controls "
            "and content_free"
        )
    for key in ("templates", "controls"):
        if doc.get(key) is not None and not isinstance(doc[key], list):
            raise HarnessError(f"{path}: '{key}' must be a list of templates")
    extra = prompt_set(
        {"templates": doc.get("templates") or [], "controls": doc.get("controls") or [],
         "content_free": doc.get("content_free")},
        path,
        prompts.task,
    )  # fmt: skip
    replaced = {c.name for c in extra.controls}
    clash = {t.name for t in extra.templates} & {t.name for t in prompts.templates + prompts.controls}
    if clash:
        raise HarnessError(f"{path}: template name(s) {', '.join(sorted(clash))} are taken by the lm-eval task")
    prompts.templates = prompts.templates + extra.templates
    prompts.controls = [c for c in prompts.controls if c.name not in replaced] + extra.controls
    if extra.templates:  # calibration blanks every template's fields: the companion's need its content_free
        prompts.content_free = {**prompts.content_free, **extra.content_free} if extra.content_free else None
    return prompts
