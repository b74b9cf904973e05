"""Where a task's rows come from: one loader per kind of source, registered by name (a task file's `data.loader`),
and the named derivations that add fields a template needs and YAML cannot compute.

Every loader returns the same `Example` shape. SuperGLUE rows keep the field names and label ids of the Hub's
`aps/super_glue` (the names lm-eval's templates use), whichever source they came from, so a template works on both.
Adding a loader or a derivation is one function or class plus one registration.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from harness.errors import HarnessError
from harness.registry import Registry
from harness.resources import read_text
from harness.tasks import Example, TaskSpec

HUB_DATASET = "aps/super_glue"
SPLIT_FILES = {"val": "val.jsonl", "train": "train.jsonl"}
HUB_SPLITS = {"val": "validation", "train": "train"}
GPT3_HINT = "a gpt3-arithmetic folder in or beside the data folder, or $HARNESS_GPT3_ARITHMETIC_DIR"


class LabelError(ValueError):
    """A row's label is not one of its task's labels."""


def label_id(spec: TaskSpec, value: object) -> int:
    """A row's label as a class id: the label's name, its id, true/false (two labels), or a negative id for an
    unlabelled test row."""
    labels = spec.labels
    found: int | None = None
    if isinstance(value, bool):
        found = int(value) if len(labels) in (0, 2) else None
    elif isinstance(value, int):
        found = value if value < 0 or not labels or value < len(labels) else None
    elif isinstance(value, str):
        text = value.strip()
        lowered = [x.lower() for x in labels]
        if text.lower() in lowered:
            found = lowered.index(text.lower())
        elif re.fullmatch(r"-?\d+", text):
            return label_id(spec, int(text))
        elif text.lower() in ("true", "false") and len(labels) == 2:
            found = int(text.lower() == "true")
    if found is None:
        raise LabelError(f"label {value!r} is not one of {spec.name}'s labels ({', '.join(spec.labels) or 'none'})")
    return found


# ------------------------------------------------------------------------------------------------------ derivations
DERIVATIONS: Registry[Callable[[dict], dict]] = Registry("derivation", "derive")


def derivation(name: str):
    """Register a derivation: a function from a row's fields to the same fields with more added."""

    def register(function: Callable[[dict], dict]) -> Callable[[dict], dict]:
        return DERIVATIONS.register(name, function)

    return register


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def _detokenize(s: str) -> str:
    # lm_eval.utils.general_detokenize
    s = s.replace(" n't", "n't").replace(" )", ")").replace("( ", "(").replace('" ', '"').replace(' "', '"')
    return re.sub(r" (['.,])", r"\1", s)


@derivation("copa-connective")
def _copa(f: dict) -> dict:
    """COPA as lm-eval reads it: the connective for the question, the premise without its full stop, and the
    choices with a lower-case first letter."""
    f["connector"] = {"cause": "because", "effect": "therefore"}[f["question"]]
    f["premise_trimmed"] = f["premise"].strip()[:-1]
    f["choice1_lc"], f["choice2_lc"] = _lower_first(f["choice1"]), _lower_first(f["choice2"])
    return f


@derivation("wsc-marked-span")
def _wsc(f: dict) -> dict:
    """WSC's text with the pronoun marked *like this*, as lm-eval's template shows it."""
    raw = f["text"]
    pre = " ".join(raw.split()[: f["span2_index"]])
    post = raw[len(pre) + len(f["span2_text"]) + 1 :]
    f["marked_text"] = _detokenize(pre + " *{}*".format(f["span2_text"]) + post)
    return f


@derivation("record-passage")
def _record(f: dict) -> dict:
    """ReCoRD's passage split from its highlights (and joined as lm-eval shows them); entities and answers once."""
    initial, *highlights = f["passage"].strip().split("\n@highlight\n")
    f["passage_text"], f["highlights"] = initial, highlights
    f["passage_lm_eval"] = initial + "\n\n" + "".join(f"  - {h}.\n" for h in highlights)
    f["entities"] = sorted(set(f["entities"]))
    f["answers"] = sorted(set(f["answers"]))
    return f


def derive(spec: TaskSpec, fields: dict) -> dict:
    for name in spec.derive:
        fields = DERIVATIONS[name](fields)
    return fields


# ------------------------------------------------------------------------------------------------------ loaders
class Loader:
    """A kind of source. `data` is the run's DataSource (the --data-dir folder, which some sources search)."""

    def specialize(self, spec: TaskSpec) -> TaskSpec:
        """The spec of one name of a family (`add-3d`): settings that follow from the name."""
        return spec

    def split_path(self, spec: TaskSpec, split: str, data: DataSource) -> Path | None:
        """The file a split is read from, for messages and existence checks; None where there is no file."""
        return None

    def has_split(self, spec: TaskSpec, split: str, data: DataSource) -> bool:
        path = self.split_path(spec, split, data)
        return path.exists() if path else True  # a folder in a file's place is an error when read, not "no split"

    def missing(self, spec: TaskSpec, split: str, data: DataSource) -> str:
        """Why a split is missing, with what would provide it."""
        return f"no {split} split: {self.split_path(spec, split, data)} not found"

    def load(self, spec: TaskSpec, split: str, data: DataSource) -> list[Example]:
        raise NotImplementedError


LOADERS: Registry[Loader] = Registry("loader", "data.loader")


def register_loader(name: str):
    def register(cls: type[Loader]) -> type[Loader]:
        LOADERS.register(name, cls())
        return cls

    return register


def get_loader(name: str, where: object = "") -> Loader:
    if name == "lm-eval":
        import harness.lm_eval_tasks  # noqa: F401  (registers it; it imports this module)
    return LOADERS.get(name, str(where))


# ---------------------------------------------------------------- SuperGLUE: the original jsonl, or the Hub
def _superglue_rows(spec: TaskSpec, row: dict, n: int) -> list[Example]:
    """One line of the original SuperGLUE jsonl -> examples (MultiRC and ReCoRD lines hold several)."""
    layout = spec.data.get("layout", "flat")
    if layout == "multirc":
        out = []
        p = row["passage"]
        for qi, q in enumerate(p["questions"]):
            group = f"{row['idx']}-{q.get('idx', qi)}"
            for ai, a in enumerate(q["answers"]):
                fields = {"paragraph": p["text"], "question": q["question"], "answer": a["text"]}
                out.append(Example(f"{group}-{a.get('idx', ai)}", fields, label_id(spec, a["label"]), group))
        return out
    if layout == "record":
        out = []
        text = row["passage"]["text"]
        entities = [text[e["start"] : e["end"] + 1] for e in row["passage"]["entities"]]
        for qi, qa in enumerate(row["qas"]):
            answers = [a["text"] for a in qa.get("answers", [])]
            fields = {"passage": text, "query": qa["query"], "entities": entities, "answers": answers}
            qid = f"{row['idx']}-{qa.get('idx', qi)}"
            out.append(Example(qid, derive(spec, fields), None, qid))
        return out
    fields = {k: v for k, v in row.items() if k not in ("idx", "label")}
    if layout == "wsc":
        fields.update(fields.pop("target"))
    label = label_id(spec, row["label"]) if "label" in row else None
    ex_id = str(row.get("idx", n))
    return [Example(ex_id, derive(spec, fields), label, ex_id)]


def _superglue_hub_row(spec: TaskSpec, row: dict, n: int) -> Example:
    fields = {k: v for k, v in row.items() if k not in ("idx", "label")}
    idx = row.get("idx", n)
    layout = spec.data.get("layout", "flat")
    if layout == "multirc":
        group = f"{idx['paragraph']}-{idx['question']}"
        return Example(f"{group}-{idx['answer']}", fields, row["label"], group)
    if layout == "record":
        qid = f"{idx['passage']}-{idx['query']}"
        return Example(qid, derive(spec, fields), None, qid)
    label = row.get("label")
    return Example(str(idx), derive(spec, fields), None if label is None or label < 0 else label, str(idx))


def load_jsonl_split(spec: TaskSpec, path: Path) -> list[Example]:
    """A split in the original SuperGLUE (or FewGLUE) jsonl, each example naming its file and line."""
    examples: list[Example] = []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise HarnessError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
        try:
            examples.extend(replace(ex, source=f"{path}:{lineno}") for ex in _superglue_rows(spec, row, lineno - 1))
        except LabelError as err:
            raise HarnessError(f"{path}:{lineno}: {err}") from None
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            raise HarnessError(f"{path}:{lineno}: missing or invalid field {err} for task {spec.name}") from None
    return examples


@register_loader("superglue")
class SuperGlueLoader(Loader):
    """`<data-dir>/<folder>/{train,val}.jsonl` of the original release, or the Hub's aps/super_glue without one."""

    def split_path(self, spec, split, data):
        return data.folder / spec.folder / SPLIT_FILES[split] if data.folder else None

    def missing(self, spec, split, data):
        where = f"the Hub's {spec.hub_config} has it online"
        return f"no {split} split: {self.split_path(spec, split, data)} not found ({where})"

    def load(self, spec, split, data):
        path = self.split_path(spec, split, data)
        if path is not None:
            if not path.exists():
                raise HarnessError(f"{spec.name}: no {split} split: {path} not found")
            return load_jsonl_split(spec, path)
        try:
            import datasets

            datasets.disable_progress_bars()
            ds = datasets.load_dataset(HUB_DATASET, spec.hub_config, split=HUB_SPLITS[split])
        except Exception as err:  # offline, unknown config, ...: one line for the user
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise HarnessError(
                f"{spec.name}: cannot load {HUB_DATASET}/{spec.hub_config} ({split}) from the Hugging Face Hub: "
                f"{first}. Offline? Point --data-dir or HARNESS_DATA_DIR at a folder of SuperGLUE jsonl files"
            ) from None
        return [_superglue_hub_row(spec, dict(row), n) for n, row in enumerate(ds)]


# ---------------------------------------------------------------- a user's files, or any Hub data set
def read_rows(path: Path) -> list[tuple[dict, str]]:
    """(row, "file:line") of a jsonl, json (a list of objects), csv or tsv file, optionally gzipped."""
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if path.name.endswith(".gz"):
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError) as err:
            raise HarnessError(f"{path}: not gzipped UTF-8 text ({err})") from None
    else:
        text = read_text(path)
    rows: list[tuple[dict, str]] = []
    if name.endswith(".jsonl"):
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((json.loads(line), f"{path}:{lineno}"))
                except json.JSONDecodeError as err:
                    raise HarnessError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
    elif name.endswith(".json"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise HarnessError(f"{path}: malformed JSON (line {err.lineno}: {err.msg})") from None
        if not isinstance(doc, list):
            raise HarnessError(f"{path}: expected a JSON list of objects")
        rows = [(row, f"{path}: item {i}") for i, row in enumerate(doc)]
    elif name.endswith((".csv", ".tsv")):
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if name.endswith(".tsv") else ",")
        rows = [(row, f"{path}:{i + 2}") for i, row in enumerate(reader)]
    else:
        raise HarnessError(f"{path}: unknown data format; use .jsonl, .json, .csv or .tsv (optionally .gz)")
    for row, where in rows:
        if not isinstance(row, dict):
            raise HarnessError(f"{where}: expected an object of fields")
    return rows


def rows_to_examples(spec: TaskSpec, rows: list[tuple[dict, str]]) -> list[Example]:
    """Rows of a user's data -> examples: the label field mapped to a class id (a generated answer's gold is the
    one choice, id 0), `data.id` as the example id (else the row number), derivations applied."""
    label_field = str(spec.data.get("label", "label"))
    id_field = spec.data.get("id")
    out = []
    for n, (row, where) in enumerate(rows):
        fields = {k: v for k, v in row.items() if k != label_field}
        try:
            if spec.generates:
                label = 0
            elif label_field not in row:
                raise HarnessError(f"{where}: no field '{label_field}' (data.label) in this row")
            else:
                label = label_id(spec, row[label_field])
            ex_id = str(row[id_field]) if id_field else str(n)
            fields = derive(spec, fields)
        except LabelError as err:
            raise HarnessError(f"{where}: {err}") from None
        except KeyError as err:
            raise HarnessError(f"{where}: missing field {err} for task {spec.name}") from None
        out.append(Example(ex_id, fields, label, ex_id, source=where))
    return out


@register_loader("files")
class FilesLoader(Loader):
    """`data: {val: FILE, train: FILE}`: paths relative to the task file, or absolute."""

    def split_path(self, spec, split, data):
        value = spec.data.get(split)
        if not value:
            return None
        path = Path(str(value)).expanduser()
        return path if path.is_absolute() or spec.path is None else spec.path.parent / path

    def has_split(self, spec, split, data):
        path = self.split_path(spec, split, data)
        return path is not None and path.exists()

    def missing(self, spec, split, data):
        path = self.split_path(spec, split, data)
        return f"no {split} split: " + (f"{path} not found" if path else f"{spec.path} has no data.{split}")

    def load(self, spec, split, data):
        path = self.split_path(spec, split, data)
        if path is None or not path.exists():
            raise HarnessError(f"{spec.name}: {self.missing(spec, split, data)}")
        return rows_to_examples(spec, read_rows(path))


@register_loader("hub")
class HubLoader(Loader):
    """`data: {hub: {path, name, ...load_dataset keywords}, splits: {val: validation, train: train}}`."""

    def has_split(self, spec, split, data):
        return split in self._splits(spec)

    def missing(self, spec, split, data):
        return f"no {split} split: {spec.path} names none in data.splits"

    @staticmethod
    def _splits(spec: TaskSpec) -> dict:
        return spec.data.get("splits") or HUB_SPLITS

    def load(self, spec, split, data):
        hub = spec.data.get("hub")
        if not isinstance(hub, dict) or not hub.get("path"):
            raise HarnessError(f"{spec.path}: data.hub must be a mapping with a 'path' (a Hub data set id)")
        name = self._splits(spec).get(split)
        if name is None:
            raise HarnessError(f"{spec.name}: {self.missing(spec, split, data)}")
        try:
            import datasets

            datasets.disable_progress_bars()
            ds = datasets.load_dataset(split=name, **hub)
        except Exception as err:  # offline, unknown data set, ...: one line for the user
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise HarnessError(f"{spec.name}: cannot load {hub['path']} ({name}) with datasets: {first}") from None
        return rows_to_examples(spec, [(dict(row), f"{hub['path']} {name} row {n}") for n, row in enumerate(ds)])


# ---------------------------------------------------------------- generated tasks, GPT-3 files, the presidents list
@register_loader("arithmetic")
class ArithmeticLoader(Loader):
    """Arithmetic problems made from a seed; the name carries the operation and digits (`add-3d`, `-parity`)."""

    def specialize(self, spec):
        from harness.synthetic import arithmetic_max_new_tokens

        return replace(spec, max_new_tokens=arithmetic_max_new_tokens(spec.name)) if spec.generates else spec

    def load(self, spec, split, data):
        from harness.synthetic import generate_split

        return generate_split(spec, split)


@register_loader("sorting")
class SortingLoader(ArithmeticLoader):
    """Lists to sort, made from a seed; the name carries the length (`sort-5`)."""

    def specialize(self, spec):
        from harness.synthetic import sorting_max_new_tokens

        return replace(spec, max_new_tokens=sorting_max_new_tokens(spec.name))


@register_loader("gpt3")
class Gpt3Loader(Loader):
    """A file of the GPT-3 arithmetic release (`gpt3-two-digit-addition` reads two_digit_addition.jsonl)."""

    def specialize(self, spec):
        file = spec.name.removeprefix("gpt3-").replace("-", "_") + ".jsonl"
        return replace(spec, data={**spec.data, "folder": file})

    def split_path(self, spec, split, data):
        from harness.synthetic import gpt3_folder

        folder = gpt3_folder(data.folder)
        return folder / spec.folder if folder else Path(GPT3_HINT) / spec.folder

    def missing(self, spec, split, data):
        return f"no {split} split: {self.split_path(spec, split, data)} not found ({GPT3_HINT})"

    def load(self, spec, split, data):
        from harness.synthetic import load_gpt3_split

        path = self.split_path(spec, split, data)
        if not path.is_file():
            raise HarnessError(f"{spec.name}: {path} not found ({GPT3_HINT})")
        return load_gpt3_split(spec, path.parent, split)


@register_loader("presidents")
class PresidentsLoader(Loader):
    """The ordered list of US presidents, read once (harness/presidents.py)."""

    def split_path(self, spec, split, data):
        from harness.presidents import FILE, FOLDER, presidents_file

        return presidents_file(data.folder) or Path(FOLDER) / FILE

    def load(self, spec, split, data):
        from harness.presidents import HINT, load_presidents

        path = self.split_path(spec, split, data)
        if not path.is_file():
            raise HarnessError(f"{spec.name}: {path} not found ({HINT})")
        return load_presidents(path)


# ---------------------------------------------------------------- the run's data and train sources
@dataclass
class DataSource:
    """The run's --data-dir (or $HARNESS_DATA_DIR): SuperGLUE's jsonl folder, beside which the GPT-3 files and the
    presidents list are looked for. Without one, SuperGLUE comes from the Hub. Each task's loader does the rest."""

    folder: Path | None

    @classmethod
    def from_option(cls, data_dir: str | None) -> DataSource:
        value = data_dir or os.environ.get("HARNESS_DATA_DIR")
        if not value:
            return cls(None)
        path = Path(value).expanduser()
        if not path.is_dir():
            flag = "--data-dir" if data_dir else "HARNESS_DATA_DIR"
            raise HarnessError(f"data folder not found: {path} ({flag})")
        return cls(path)

    def describe(self) -> str:
        return str(self.folder) if self.folder else f"Hugging Face Hub {HUB_DATASET}"

    def split_path(self, spec: TaskSpec, split: str) -> Path | None:
        return get_loader(spec.loader, spec.path).split_path(spec, split, self)

    def has_split(self, spec: TaskSpec, split: str) -> bool:
        return get_loader(spec.loader, spec.path).has_split(spec, split, self)

    def missing(self, spec: TaskSpec, split: str) -> str:
        return get_loader(spec.loader, spec.path).missing(spec, split, self)

    def load(self, spec: TaskSpec, split: str) -> list[Example]:
        return get_loader(spec.loader, spec.path).load(spec, split, self)


def fewglue_folder(data: DataSource, explicit: str | None = None) -> Path | None:
    """FewGLUE folder: --fewglue-dir, $HARNESS_FEWGLUE_DIR, or a `fewglue` folder beside the data folder."""
    for value in (explicit, os.environ.get("HARNESS_FEWGLUE_DIR")):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise HarnessError(f"FewGLUE folder not found: {path}")
            return path
    if data.folder is not None:
        for candidate in (data.folder.parent / "fewglue", data.folder / "fewglue"):
            if candidate.is_dir():
                return candidate
    return None


@dataclass
class TrainSource:
    """Where demos and training examples come from, resolved per task."""

    kind: str  # "fewglue" | "superglue" | "path"
    path: Path | None
    auto: bool = False  # picked by `--train-set auto`: free to use the SuperGLUE train split where FewGLUE can't serve
    why: str = ""  # why this task's source differs from the one asked for

    def for_task(self, task: TaskSpec, data: DataSource) -> TrainSource:
        """This task's source. FewGLUE's WSC holds positive examples only (PET trains WSC on the referent alone):
        with one label, demos show one answer, train picks and probes can't tell templates apart. `auto` then takes
        the SuperGLUE train split, where there is one."""
        if not (self.auto and self.kind == "fewglue" and task.source == "superglue"):
            return self
        path = self.path / task.folder / "train.jsonl"
        if not path.is_file() or not data.has_split(task, "train"):
            return self
        labels = {str(ex.label) for ex in load_jsonl_split(task, path)}
        if len(labels) > 1:
            return self
        return TrainSource("superglue", None, why=f"FewGLUE's {path} holds one label only")

    def describe(self, task: TaskSpec) -> str:
        if task.source == "generated":
            return "generated train pool (disjoint from val)"
        if task.source == "gpt3":
            return f"{task.folder}: lines held out of val"
        if task.source != "superglue":
            path = get_loader(task.loader, task.path).split_path(task, "train", DataSource(None))
            return str(path) if path else f"{task.name}'s train split ({task.loader})"
        if self.kind == "fewglue":
            return f"FewGLUE 32-example train ({self.path / task.folder / 'train.jsonl'})"
        if self.kind == "path":
            return f"{self.path / task.folder / 'train.jsonl'}"
        return "SuperGLUE train split" + (f"; {self.why}" if self.why else "")


def resolve_train_source(option: str, data: DataSource, fewglue_dir: str | None = None) -> TrainSource:
    """`auto`: FewGLUE where its folder can be found, else the SuperGLUE train split."""
    if option == "auto":
        found = fewglue_folder(data, fewglue_dir)
        return TrainSource("fewglue", found, auto=True) if found else TrainSource("superglue", None)
    if option == "fewglue":
        found = fewglue_folder(data, fewglue_dir)
        if found is None:
            raise HarnessError("--train-set fewglue: no FewGLUE folder found; set --fewglue-dir or HARNESS_FEWGLUE_DIR")
        return TrainSource("fewglue", found)
    if option == "superglue":
        return TrainSource("superglue", None)
    path = Path(option).expanduser()
    if not path.is_dir():
        raise HarnessError(f"--train-set: expected auto, fewglue, superglue or a folder; {path} is none of these")
    return TrainSource("path", path)


def load_train(task: TaskSpec, source: TrainSource, data: DataSource) -> list[Example] | None:
    """The task's train examples, or None when the source has no train split for it."""
    if task.source == "presidents":
        return None  # the list is read once; nothing to train on
    if task.source != "superglue":  # generated tasks, GPT-3 files and a user's files bring their own train pool
        return data.load(task, "train") if data.has_split(task, "train") else None
    if source.kind == "superglue":
        return data.load(task, "train") if data.has_split(task, "train") else None
    path = source.path / task.folder / "train.jsonl"
    return load_jsonl_split(task, path) if path.is_file() else None
