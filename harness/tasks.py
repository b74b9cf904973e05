"""Tasks: load SuperGLUE splits into one example shape, from local jsonl files or the Hugging Face Hub.

Every example uses the field names and label ids of the Hub's `aps/super_glue` (the names lm-eval's templates
use), whichever source it came from, so a template works on both.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.errors import HarnessError
from harness.resources import read_text

HUB_DATASET = "aps/super_glue"


@dataclass
class Example:
    id: str  # stable within a task and split
    fields: dict  # template variables
    label: int | None  # class id; None where the gold depends on the example's choices (ReCoRD)
    group: str  # examples scored together by a metric (a MultiRC question, a ReCoRD query); else == id
    source: str = ""  # where it was read, "file:line", for error messages; empty for generated or Hub examples

    def describe(self) -> str:
        return f"example {self.id}" + (f" ({self.source})" if self.source else "")


@dataclass(frozen=True)
class TaskSpec:
    name: str  # lower-case name used on the command line and in prompts/<name>.yaml
    folder: str  # folder name in the original SuperGLUE release
    hub_config: str
    labels: tuple[str, ...]  # label id -> name; empty where there are no fixed labels
    metrics: tuple[str, ...]
    grouped: bool = False  # metric groups (questions, queries) span several examples
    notes: tuple[str, ...] = field(default=())
    # "choice": score fixed answer choices; "generate": greedy decoding scored by exact match (harness/synthetic.py);
    # "read": probability and rank of the next line's first token along a list (harness/presidents.py)
    answer: str = "choice"
    prompt_file: str = ""  # prompts/<prompt_file>.yaml; empty: the task's name
    source: str = "superglue"  # superglue | generated | gpt3 | presidents
    max_new_tokens: int = 0  # generated answers: decoding stops here, or at the first newline
    answer_pattern: str = ""  # generated answers: what a well-formed answer looks like (the attempt rate)

    @property
    def generates(self) -> bool:
        return self.answer == "generate"

    @property
    def prompts_name(self) -> str:
        return self.prompt_file or self.name


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec("boolq", "BoolQ", "boolq", ("false", "true"), ("acc",)),
        TaskSpec("cb", "CB", "cb", ("entailment", "contradiction", "neutral"), ("acc", "macro_f1")),
        TaskSpec("copa", "COPA", "copa", ("choice1", "choice2"), ("acc",)),
        TaskSpec("multirc", "MultiRC", "multirc", ("false", "true"), ("f1a", "em", "acc"), grouped=True),
        TaskSpec("record", "ReCoRD", "record", (), ("f1", "em"), grouped=True),
        TaskSpec("rte", "RTE", "rte", ("entailment", "not_entailment"), ("acc",)),
        TaskSpec("wic", "WiC", "wic", ("false", "true"), ("acc",)),
        TaskSpec("wsc", "WSC", "wsc.fixed", ("false", "true"), ("acc",)),
        # a knowledge probe read off the next-token distribution along a list (harness/presidents.py)
        TaskSpec("presidents", "", "", (), ("top1", "top10", "p_correct"), answer="read", source="presidents"),
    ]
}


def find_task(name: str) -> TaskSpec | None:
    """A SuperGLUE task, or a generated-answer task whose name carries its settings (`add-3d`, `sort-5`)."""
    from harness.synthetic import synthetic_spec

    key = name.strip().lower()
    return TASKS.get(key) or synthetic_spec(key)


def get_task(name: str) -> TaskSpec:
    spec = find_task(name)
    if spec is None:
        raise HarnessError(
            f"unknown task '{name}' (--tasks): known tasks are {', '.join(TASKS)}, "
            "add-Nd, sub-Nd, mul-Nd, div-Nd, mixed-Nd (N digits), sort-N (N numbers) and gpt3-<file>"
        )
    return spec


# ---------------------------------------------------------------- derived fields (as lm-eval computes them)
def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def _detokenize(s: str) -> str:
    # lm_eval.utils.general_detokenize
    import re

    s = s.replace(" n't", "n't").replace(" )", ")").replace("( ", "(").replace('" ', '"').replace(' "', '"')
    return re.sub(r" (['.,])", r"\1", s)


def _add_derived(task: str, f: dict) -> dict:
    if task == "copa":
        f["connector"] = {"cause": "because", "effect": "therefore"}[f["question"]]
        f["premise_trimmed"] = f["premise"].strip()[:-1]
        f["choice1_lc"], f["choice2_lc"] = _lower_first(f["choice1"]), _lower_first(f["choice2"])
    elif task == "wsc":
        raw = f["text"]
        pre = " ".join(raw.split()[: f["span2_index"]])
        post = raw[len(pre) + len(f["span2_text"]) + 1 :]
        f["marked_text"] = _detokenize(pre + " *{}*".format(f["span2_text"]) + post)
    elif task == "record":
        initial, *highlights = f["passage"].strip().split("\n@highlight\n")
        f["passage_text"], f["highlights"] = initial, highlights
        f["passage_lm_eval"] = initial + "\n\n" + "".join(f"  - {h}.\n" for h in highlights)
        f["entities"] = sorted(set(f["entities"]))
        f["answers"] = sorted(set(f["answers"]))
    return f


# ---------------------------------------------------------------- original jsonl -> Hub shape
_LABEL_IDS = {
    "cb": {"entailment": 0, "contradiction": 1, "neutral": 2},
    "rte": {"entailment": 0, "not_entailment": 1},
}


class LabelError(ValueError):
    """A row's label is not one of its task's labels."""


def _label_id(task: str, value) -> int:
    labels = TASKS[task].labels if task in TASKS else ()
    if task in _LABEL_IDS:
        found = _LABEL_IDS[task].get(value) if isinstance(value, str) else None
    elif isinstance(value, bool):
        found = int(value)
    elif isinstance(value, int):
        found = value if value < 0 or not labels or value < len(labels) else None  # < 0: an unlabelled test row
    elif isinstance(value, str) and value.lower() in ("true", "false"):
        found = int(value.lower() == "true")
    else:
        found = None
    if found is None:
        raise LabelError(f"label {value!r} is not one of {task}'s labels ({', '.join(labels) or 'none'})")
    return found


def _from_original(task: str, row: dict, n: int) -> list[Example]:
    """One line of the original SuperGLUE jsonl -> examples (MultiRC and ReCoRD lines hold several)."""
    if task == "multirc":
        out = []
        p = row["passage"]
        for qi, q in enumerate(p["questions"]):
            group = f"{row['idx']}-{q.get('idx', qi)}"
            for ai, a in enumerate(q["answers"]):
                fields = {"paragraph": p["text"], "question": q["question"], "answer": a["text"]}
                out.append(Example(f"{group}-{a.get('idx', ai)}", fields, _label_id(task, a["label"]), group))
        return out
    if task == "record":
        out = []
        text = row["passage"]["text"]
        entities = [text[e["start"] : e["end"] + 1] for e in row["passage"]["entities"]]
        for qi, qa in enumerate(row["qas"]):
            answers = [a["text"] for a in qa.get("answers", [])]
            fields = {"passage": text, "query": qa["query"], "entities": entities, "answers": answers}
            qid = f"{row['idx']}-{qa.get('idx', qi)}"
            out.append(Example(qid, _add_derived(task, fields), None, qid))
        return out
    fields = {k: v for k, v in row.items() if k not in ("idx", "label")}
    if task == "wsc":
        fields.update(fields.pop("target"))
    label = _label_id(task, row["label"]) if "label" in row else None
    ex_id = str(row.get("idx", n))
    return [Example(ex_id, _add_derived(task, fields), label, ex_id)]


def _from_hub(task: str, row: dict, n: int) -> Example:
    fields = {k: v for k, v in row.items() if k not in ("idx", "label")}
    idx = row.get("idx", n)
    if task == "multirc":
        group = f"{idx['paragraph']}-{idx['question']}"
        return Example(f"{group}-{idx['answer']}", fields, row["label"], group)
    if task == "record":
        qid = f"{idx['passage']}-{idx['query']}"
        return Example(qid, _add_derived(task, fields), None, qid)
    label = row.get("label")
    return Example(str(idx), _add_derived(task, fields), None if label is None or label < 0 else label, str(idx))


def load_jsonl_split(task: TaskSpec, path: Path) -> list[Example]:
    examples: list[Example] = []
    lines = read_text(path).splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise HarnessError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
        try:
            examples.extend(replace(ex, source=f"{path}:{lineno}") for ex in _from_original(task.name, row, lineno - 1))
        except LabelError as err:
            raise HarnessError(f"{path}:{lineno}: {err}") from None
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            raise HarnessError(f"{path}:{lineno}: missing or invalid field {err} for task {task.name}") from None
    return examples


# ---------------------------------------------------------------- where data comes from
SPLIT_FILES = {"val": "val.jsonl", "train": "train.jsonl"}
GPT3_HINT = "a gpt3-arithmetic folder in or beside the data folder, or $HARNESS_GPT3_ARITHMETIC_DIR"
HUB_SPLITS = {"val": "validation", "train": "train"}


@dataclass
class DataSource:
    """Where a task's splits come from: a folder of original jsonl files, or the Hub when folder is None."""

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

    def split_path(self, task: TaskSpec, split: str) -> Path | None:
        if task.source == "presidents":
            from harness.presidents import FILE, FOLDER, presidents_file

            return presidents_file(self.folder) or Path(FOLDER) / FILE
        if task.source == "gpt3":
            from harness.synthetic import gpt3_folder

            folder = gpt3_folder(self.folder)
            return folder / task.folder if folder else Path(GPT3_HINT) / task.folder
        if task.source == "generated":
            return None
        return self.folder / task.folder / SPLIT_FILES[split] if self.folder else None

    def has_split(self, task: TaskSpec, split: str) -> bool:
        path = self.split_path(task, split)
        return path.exists() if path else True  # a folder in a file's place is an error when read, not "no split"

    def load(self, task: TaskSpec, split: str) -> list[Example]:
        from harness.synthetic import generate_split, load_gpt3_split

        if task.source == "generated":
            return generate_split(task, split)
        if task.source == "presidents":
            from harness.presidents import HINT, load_presidents

            path = self.split_path(task, split)
            if not path.is_file():
                raise HarnessError(f"{task.name}: {path} not found ({HINT})")
            return load_presidents(path)
        if task.source == "gpt3":
            path = self.split_path(task, split)
            if not path.is_file():
                raise HarnessError(f"{task.name}: {path} not found ({GPT3_HINT})")
            return load_gpt3_split(task, path.parent, split)
        path = self.split_path(task, split)
        if path is not None:
            if not path.exists():
                raise HarnessError(f"{task.name}: no {split} split: {path} not found")
            return load_jsonl_split(task, path)
        return _load_hub(task, split)


def _load_hub(task: TaskSpec, split: str) -> list[Example]:
    try:
        import datasets

        datasets.disable_progress_bars()
        ds = datasets.load_dataset(HUB_DATASET, task.hub_config, split=HUB_SPLITS[split])
    except Exception as err:  # offline, unknown config, ...: one line for the user
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise HarnessError(
            f"{task.name}: cannot load {HUB_DATASET}/{task.hub_config} ({split}) from the Hugging Face Hub: {first}. "
            "Offline? Point --data-dir or HARNESS_DATA_DIR at a folder of SuperGLUE jsonl files"
        ) from None
    return [_from_hub(task.name, dict(row), n) for n, row in enumerate(ds)]


def find_beside_data(data_folder: Path | None, relative: str, env: str, what: str) -> Path | None:
    """$`env` (which must exist), else `relative` in or beside the data folder, else None."""
    value = os.environ.get(env)
    if value:
        path = Path(value).expanduser()
        if not path.exists():
            raise HarnessError(f"{what} not found: {path} ({env})")
        return path
    if data_folder is not None:
        for candidate in (data_folder / relative, data_folder.parent / relative):
            if candidate.exists():
                return candidate
    return None


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
    if task.source != "superglue":  # generated tasks and GPT-3 files bring their own train pool
        return data.load(task, "train")
    if source.kind == "superglue":
        return data.load(task, "train") if data.has_split(task, "train") else None
    path = source.path / task.folder / "train.jsonl"
    return load_jsonl_split(task, path) if path.is_file() else None


# ---------------------------------------------------------------- subsets
def stratified_subset(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    """A seeded subset of `limit` metric groups (examples, or whole MultiRC questions), stratified by label.

    Allocation is proportional to each label's share (largest remainders), so small subsets keep the label mix.
    """
    groups: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        groups[ex.group].append(ex)
    if limit is None or limit >= len(groups):
        return examples
    by_label: dict[object, list[str]] = defaultdict(list)
    for gid, members in groups.items():
        by_label[members[0].label if len(members) == 1 else None].append(gid)
    rng = random.Random(seed)
    total = len(groups)
    quotas = {lab: limit * len(ids) / total for lab, ids in by_label.items()}
    take = {lab: int(q) for lab, q in quotas.items()}
    for lab in sorted(quotas, key=lambda lab: (-(quotas[lab] - take[lab]), str(lab)))[: limit - sum(take.values())]:
        take[lab] += 1
    chosen: set[str] = set()
    for lab in sorted(by_label, key=str):
        ids = sorted(by_label[lab])
        chosen.update(rng.sample(ids, take[lab]))
    return [ex for ex in examples if ex.group in chosen]
