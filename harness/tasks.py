"""The shapes every part shares: an example, a task's spec (read from its file by harness/catalog.py), subsets.

Where the rows come from is harness/loaders.py.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.prompts import Template


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
    """A task as its file declares it (harness/catalog.py reads the files)."""

    name: str  # lower-case name used on the command line
    labels: tuple[str, ...] = ()  # label id -> name; empty where there are no fixed labels (ReCoRD, generated)
    metrics: tuple[str, ...] = ("acc",)  # by name (harness/metrics.py); the first is the headline metric
    grouped: bool = False  # metric groups (questions, queries) span several examples
    # "choice": score answer choices; "generate": greedy decoding scored by exact match (harness/synthetic.py);
    # "read": probability and rank of the next line's first token along a list (harness/presidents.py)
    answer: str = "choice"
    max_new_tokens: int = 0  # generated answers: decoding stops here, or at a stop string
    stop: tuple[str, ...] = ("\n",)  # generated answers: decoding stops at the first of these, and is cut there
    # generated answers: None compares output and gold after stripping spaces; a mapping is lm-eval's exact_match
    # with these options (regexes_to_ignore, ignore_case, ignore_punctuation, ignore_numbers), nothing stripped
    exact_match: dict | None = field(default=None, hash=False, compare=False)
    answer_pattern: str = ""  # generated answers: what a well-formed answer looks like (the attempt rate)
    loader: str = "files"  # harness/loaders.py LOADERS
    data: dict = field(default_factory=dict, hash=False, compare=False)  # the file's `data` section
    derive: tuple[str, ...] = ()  # harness/loaders.py DERIVATIONS, applied to every row
    path: Path | None = field(default=None, compare=False)  # the task file
    origin: str = field(default="shipped", compare=False)  # "shipped", or the user's folder it came from
    description: str = field(default="", compare=False)

    @property
    def generates(self) -> bool:
        return self.answer == "generate"

    @property
    def prompts_name(self) -> str:
        """The task file's name: a family's file (`arithmetic`) serves many task names."""
        return self.path.stem if self.path is not None else self.name

    @property
    def folder(self) -> str:
        """A SuperGLUE task's folder in the original release (CB, MultiRC), or a GPT-3 arithmetic file's name."""
        return str(self.data.get("folder", ""))

    @property
    def hub_config(self) -> str:
        return str(self.data.get("hub_config", ""))

    @property
    def source(self) -> str:
        """Where rows come from, by kind: superglue | generated | gpt3 | presidents | files | hub | lm-eval."""
        return {"arithmetic": "generated", "sorting": "generated"}.get(self.loader, self.loader)

    def to_info(self) -> dict:
        """What a store keeps of the spec, so that a report reads back what was run."""
        info = {"labels": list(self.labels), "metrics": list(self.metrics), "grouped": self.grouped,
                "answer": self.answer, "answer_pattern": self.answer_pattern, "loader": self.loader}  # fmt: skip
        if self.exact_match is not None:  # only where set: the stored info of every other task stays as it was
            info["exact_match"] = self.exact_match
        return info

    @classmethod
    def from_info(cls, name: str, info: dict) -> TaskSpec:
        return cls(name, tuple(info["labels"]), tuple(info["metrics"]), bool(info["grouped"]), info["answer"],
                   answer_pattern=info.get("answer_pattern", ""), loader=info.get("loader", "files"),
                   exact_match=info.get("exact_match"))  # fmt: skip


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


SECOND_SAMPLE_SEED_OFFSET = 1_000_003  # the second sample's draw is seeded apart from the first's


@dataclass
class SampledTask:
    """A task of `harness transfer` or `harness w2s`, loaded and checked before a model is: its template, the eval
    examples it is scored on, and the train split from which each seed draws two disjoint samples."""

    spec: TaskSpec
    template: Template
    eval_examples: list[Example]
    train: list[Example]

    def disjoint_samples(self, first_n: int, second_n: int, seed: int) -> tuple[list[Example], list[Example]]:
        """Two seeded, label-stratified samples of train with no metric group in common: `first_n` groups drawn
        with `seed`, then `second_n` of the rest with a seed apart."""
        first = stratified_subset(self.train, first_n, seed)
        taken = {e.group for e in first}
        rest = [e for e in self.train if e.group not in taken]
        return first, stratified_subset(rest, second_n, SECOND_SAMPLE_SEED_OFFSET + seed)
