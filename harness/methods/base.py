"""The Method interface, the registry of methods, and what the trained methods share before any model is loaded.

A method is one file in harness/methods/ that defines a `Method` subclass and ends with one `register(...)` call;
its name in BUILTIN makes the registry import it. A method says what it is (name, description, whether it trains,
its preset class), plans its units for a task (`plan`), says what a unit costs in progress steps (`cost`), and runs
a unit (`run`): per eval example, a score per answer choice (`VariantRecords`), plus the unit's info for the store.

This module and the method files load no torch: the report reads the method names (TRAINED_METHODS) from here.
A method's heavy imports happen inside its `run`.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Protocol

from harness.errors import HarnessError
from harness.methods import CONTROL_SUFFIX, RANDOM_INIT_SUFFIX, is_random_init
from harness.registry import Registry
from harness.store import UnitName, VariantRecords
from harness.tasks import Example, TaskSpec, stratified_subset

if TYPE_CHECKING:
    from harness.config import EvalConfig
    from harness.engine import Engine
    from harness.features import FeatureCache
    from harness.methods.presets import Preset
    from harness.prompts import PromptSet, Template

# The files of the shipped methods (harness/methods/<name>.py), imported the first time the registry is read; their
# order is the order of `--methods`' help, of the report's trained methods and of a run's units.
BUILTIN = ("prompt", "ptune", "bitfit", "probe", "ccs")
DEFAULT_TRAIN_SIZE = 32  # a trained unit's train sample when --train-sizes is not given: FewGLUE's size


class Unit(Protocol):
    """One stored unit of work: its method, its key in the store (`UnitName` text) and the template it renders."""

    method: str
    template: str

    @property
    def key(self) -> str: ...


@dataclass(frozen=True)
class TaskContext:
    """One task of a run as a method sees it when it plans and costs its units (no model yet)."""

    cfg: EvalConfig
    spec: TaskSpec
    prompts: PromptSet | None  # None for a task read off the next-token distribution (the presidents list)
    eval_examples: list[Example]
    train: list[Example] | None  # None: the train source has no split for this task
    presets: dict[str, Preset]  # every trained method's preset in this run, by method name


@dataclass
class RunContext:
    """What a method's `run` gets besides its unit: the task, the model, and the run's shared helpers."""

    task: TaskContext
    model: str  # the model's name in the store (also the feature cache's key)
    engine: Engine
    cache: FeatureCache  # hidden-state features, shared between the prompt method and the probe
    advance: Callable[[int], None]  # progress: steps done
    random_engine: Callable[[], Engine]  # the re-initialised copy of the model (made when first called)
    random_init_seed: int  # the seed of that copy, stored with the units run on it


class Method:
    """One way to elicit a model's answers. Subclasses set the class attributes and implement the three methods;
    an instance holds no state of a run (presets and models come in through the contexts)."""

    name: ClassVar[str]
    description: ClassVar[str]  # one line: what it does, for help texts and listings
    trained: ClassVar[bool] = False  # trained on train examples: gets train sizes, seeds and the control task
    preset_class: ClassVar[type[Preset] | None] = None  # its preset (probes/<name>.yaml); None: no preset

    def plan(self, task: TaskContext) -> list[Unit]:
        """The units this method runs on one task (none where it does not apply)."""
        raise NotImplementedError

    def cost(self, unit: Unit, task: TaskContext) -> int:
        """Progress steps of one unit: by default one per eval example."""
        return len(task.eval_examples)

    def run(self, unit: Unit, ctx: RunContext) -> tuple[list[VariantRecords], dict]:
        """Score the eval examples: the records of each variant the unit yields, and the unit's info."""
        raise NotImplementedError


METHODS: Registry[Method] = Registry("method", "--methods")


def register(method: Method) -> Method:
    """Add a method to the registry under its name; returns it (a test unregisters its own with `unregister`)."""
    return METHODS.register(method.name, method)


def unregister(name: str) -> None:
    METHODS.unregister(name)


def method_names() -> tuple[str, ...]:
    """Every registered method: the shipped ones in BUILTIN's order (not the order their files happened to be
    imported in), then others in the order they were registered."""
    for name in BUILTIN:
        importlib.import_module(f"harness.methods.{name}")  # registers it, once
    rank = {name: i for i, name in enumerate(BUILTIN)}
    return tuple(sorted(METHODS, key=lambda name: rank.get(name, len(BUILTIN))))


def trained_method_names() -> tuple[str, ...]:
    return tuple(name for name in method_names() if METHODS[name].trained)


def get_method(name: str, flag: str = "--methods") -> Method:
    """The method called `name`; an unknown name is a one-line HarnessError naming `flag` and the known methods."""
    known = method_names()
    if name not in known:
        raise HarnessError(f"unknown method '{name}' ({flag}): known are {', '.join(known)}")
    return METHODS[name]


# ---------------------------------------------------------------- trained methods
@dataclass(frozen=True)
class TrainedUnit:
    """One training run and its evaluation: a method variant, train size and seed, on the task or its control."""

    method: str  # ptune | bitfit | probe
    variant: str  # prompt-tuning | p-tuning | bitfit | probe, or one of these + RANDOM_INIT_SUFFIX
    template: str
    train_size: int
    seed: int
    control: bool = False

    @property
    def stored_variant(self) -> str:
        return self.variant + CONTROL_SUFFIX if self.control else self.variant

    @property
    def key(self) -> str:
        return str(UnitName(self.stored_variant, self.template, f"n{self.train_size}", self.seed))


def train_sizes(asked: Sequence[int | str] | None, train: list[Example]) -> list[int]:
    """The train sizes of a task's trained units: as asked (`all`: the whole train split, counted in metric groups;
    a size named twice is planned once), else FewGLUE's 32 (or the whole split, if smaller)."""
    available = len({e.group for e in train})
    sizes = list(dict.fromkeys(available if n == "all" else n for n in asked or []))
    return sizes or [min(DEFAULT_TRAIN_SIZE, available)]


def trained_template(spec: TaskSpec, prompts: PromptSet, preset: Preset) -> Template:
    """The preset's template (failing now, naming the file, if a SuperGLUE prompt file lacks it); the presets name
    SuperGLUE's templates, so a generated task without that name trains on its prompt file's first template."""
    names = {t.name for t in prompts.templates + prompts.controls}
    if spec.loader == "superglue" or preset.template in names:
        return prompts.get(preset.template)
    return prompts.templates[0]


def train_sample(train: list[Example], size: int, seed: int) -> list[Example]:
    """A seeded, label-stratified sample of `size` metric groups (all of train when it has exactly that many)."""
    return stratified_subset(train, size, seed)


def split_holdout(sample: list[Example], share: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(fit, held out): whole metric groups, at least one on each side. Eval data never enters here."""
    groups = sorted({e.group for e in sample})
    if len(groups) < 2:
        raise HarnessError(f"a train sample of {len(groups)} example(s) cannot be split for early stopping")
    rng = random.Random(f"holdout/{seed}")
    rng.shuffle(groups)
    n_hold = min(len(groups) - 1, max(1, round(share * len(groups))))
    held = set(groups[:n_hold])
    return [e for e in sample if e.group not in held], [e for e in sample if e.group in held]


def control_examples(examples: list[Example], seed: int, salt: str, answer_fields: Sequence[str] = ()) -> list[Example]:
    """The control task (after Hewitt & Liang 2019): the same inputs, the labels permuted at random.

    The permutation keeps the label distribution and breaks any relation between input and label, so what a
    method reaches on it is what it gets from fitting arbitrary labels and the label prior alone. A generated
    answer has no label: its `answer_fields` are permuted together instead (another example's answer).
    """
    rng = random.Random(f"control/{salt}/{seed}")
    if answer_fields:
        answers = [{k: e.fields[k] for k in answer_fields if k in e.fields} for e in examples]
        rng.shuffle(answers)
        return [replace(e, fields={**e.fields, **a}) for e, a in zip(examples, answers)]
    labels = [e.label for e in examples]
    rng.shuffle(labels)
    return [replace(e, label=label) for e, label in zip(examples, labels)]


def trained_unit_examples(
    unit: TrainedUnit, train: list[Example], eval_examples: list[Example], answer_fields: Sequence[str] = ()
) -> tuple[list[Example], list[Example]]:
    """(train sample, eval examples) of a trained unit: its seeded train sample and the eval set, both with their
    labels (or `answer_fields`) permuted for a control unit (`control_examples`)."""
    sample = train_sample(train, unit.train_size, unit.seed)
    if not unit.control:
        return sample, eval_examples
    return (
        control_examples(sample, unit.seed, "train", answer_fields),
        control_examples(eval_examples, unit.seed, "eval", answer_fields),
    )


class TrainedMethod(Method):
    """A method fit on a train sample: one unit per variant, train size and seed, with its permuted-label twin
    (--permuted-label-check) and its run on the re-initialised model (--random-init-baseline) where asked."""

    trained = True

    def variants(self, preset: Preset) -> list[str]:
        """The variants this method stores (ptune: its preset's; others: one, the method's name)."""
        return [self.name]

    def not_applicable(self, spec: TaskSpec) -> str | None:
        """Why this method cannot run on a task whose labels it could otherwise train on (None: it can)."""
        return None

    def plan(self, task: TaskContext) -> list[Unit]:
        cfg, preset = task.cfg, task.presets[self.name]
        template = trained_template(task.spec, task.prompts, preset)
        units: list[Unit] = []
        for variant in self.variants(preset):
            for n in train_sizes(cfg.train_sizes, task.train or []):
                for seed in range(cfg.seeds):
                    units.append(TrainedUnit(self.name, variant, template.name, n, seed))
                    if self.name in cfg.permuted_label_check:
                        units.append(TrainedUnit(self.name, variant, template.name, n, seed, True))
                    if self.name in cfg.random_init_baseline:
                        units.append(TrainedUnit(self.name, variant + RANDOM_INIT_SUFFIX, template.name, n, seed))
        return units


class TuningMethod(TrainedMethod):
    """A trained method that tunes a few parameters of the frozen model by gradient descent (ptune, bitfit):
    harness/methods/tuning.py runs its units, training.py its training loop."""

    def trainable(self, model, tokenizer, variant: str, preset: Preset, template: Template, seed: int):
        """A context manager yielding (soft prompt or None, trainable parameters, description) of a fresh untrained
        state; the model is restored after."""
        raise NotImplementedError

    def cost(self, unit: Unit, task: TaskContext) -> int:
        return task.presets[self.name].max_steps + len(task.eval_examples)  # optimiser steps, then eval requests

    def run(self, unit: TrainedUnit, ctx: RunContext) -> tuple[list[VariantRecords], dict]:
        from harness.methods.tuning import run_tuning_unit  # torch and peft load only when a unit runs

        random_init = is_random_init(unit.variant)
        task = ctx.task
        outputs, info = run_tuning_unit(
            replace(unit, variant=unit.variant.removesuffix(RANDOM_INIT_SUFFIX)),
            task.spec,
            task.prompts,
            ctx.random_engine().model if random_init else ctx.engine.model,
            ctx.engine.tokenizer,
            task.eval_examples,
            task.train,
            task.presets[self.name],
            ctx.advance,
        )
        if random_init:
            outputs = [replace(o, variant=unit.stored_variant) for o in outputs]
            info = {**info, "random_init": True, "random_init_seed": ctx.random_init_seed}
        ctx.advance(len(task.eval_examples))
        return outputs, info
