"""The options of each command, one dataclass per command: what `harness eval`, `harness transfer`, `harness w2s`,
`harness report`, `harness tasks` and `harness prompts` run with.

Each field is defined with option(): its default, help text and, where the command line needs them, its flag, short
alias and parser. cli.py builds the commands' flags from these fields, so a new option is one new field; code and
tests build the dataclasses directly. Environment variables ($HARNESS_DATA_DIR, $HARNESS_FEWGLUE_DIR,
$HARNESS_TASKS_DIR) are read where the value is used, so a config built in code honours them as the CLI does.
Imports nothing heavy (no torch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from typing import Any

from harness.methods import TRAINED_METHODS
from harness.model_catalog import DEFAULT_MODEL
from harness.parallel import Part, parse_shard

# `harness transfer`'s default: five arithmetic skills and three text tasks with labels
# the variants the prompt method can run (--variants); gold is the unit itself, the others are read against it
PROMPT_VARIANTS = ("gold", "calibrated", "random_labels", "control", "abstract_labels")
# what runs without --variants: abstract labels are asked for (one more pass per template and seed at each
# --random-label-shots k, and runs measured before they existed keep their cost)
DEFAULT_VARIANTS = ("gold", "calibrated", "random_labels", "control")

DEFAULT_TRANSFER_TASKS = ["add-2d", "sub-2d", "mul-2d", "div-2d", "mixed-1d", "boolq", "rte", "copa"]

OPTION = "option"  # the key of a field's OptionSpec in its metadata


@dataclass(frozen=True)
class OptionSpec:
    """What the command line needs of a field beyond its name, type and default (see option())."""

    help: str
    flag: str | None = None
    short: str | None = None
    parse: Callable[[str], Any] | None = None
    argument: bool = False


def option(
    default: Any = MISSING,
    *,
    help: str,
    flag: str | None = None,
    short: str | None = None,
    parse: Callable[[str], Any] | None = None,
    argument: bool = False,
) -> Any:
    """A dataclass field that is also a command-line option of its command.

    default: the value when the option is not given (a list is copied for each instance); none: required.
    help: the option's line in `--help`. flag: the long flag where it is not the field's name with dashes (`--set`
    for `overrides`); short: a one-letter alias (`-m`). parse: turns the string the user typed into the field's
    value (the comma lists below), raising ValueError with what it expected; without it the flag has the field's
    type (int, float, str or bool; None allowed), and a list[str] field is a repeatable flag. argument: a
    positional argument (`harness report OUT`), not a flag.
    """
    spec = OptionSpec(help, flag, short, parse, argument)
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={OPTION: spec})
    return field(default=default, metadata={OPTION: spec})


# Parsers of comma-separated flags. A ValueError's message follows the flag's name: "--shots expects ...".


def comma_list(value: str) -> list[str]:
    """Comma-separated items, stripped; [] when given empty (`--tasks ,`), which validate() refuses rather than
    falling back to the default."""
    return [v.strip() for v in value.split(",") if v.strip()]


def comma_ints(value: str) -> list[int]:
    try:
        return [int(v) for v in comma_list(value)]
    except ValueError:
        raise ValueError(f"expects comma-separated integers, got '{value}'") from None


def k_values_or_none(value: str) -> list[int]:
    """--random-label-shots: k values, or 'none' for none; empty is a mistake, not 'none'."""
    if not comma_list(value):
        raise ValueError("is empty: give k values from --shots, or 'none'")
    return [] if value.strip().lower() == "none" else comma_ints(value)


def trained_methods_or_none(value: str) -> list[str]:
    """Comma-separated trained methods, or 'none' for none; empty is a mistake, not 'none'."""
    if value.strip().lower() == "none":
        return []
    names = comma_list(value)
    if not names:
        raise ValueError("is empty: name trained methods, comma-separated, or 'none'")
    return names


def sizes_or_all(value: str) -> list[int | str]:
    """--train-sizes: integers, or `all` for a task's whole train split (resolved per task)."""
    try:
        return [v.lower() if v.lower() == "all" else int(v) for v in comma_list(value)]
    except ValueError:
        raise ValueError(f"expects comma-separated integers or 'all', got '{value}'") from None


def tasks_dirs_option() -> Any:
    """--tasks-dir, the same for every command that reads tasks."""
    return option(
        [],
        flag="--tasks-dir",
        help="Folder of task files (harness tasks/<name>.yaml shape, or lm-evaluation-harness task YAMLs); "
        "repeatable; also $HARNESS_TASKS_DIR. Its tasks take precedence over shipped ones of the same name.",
    )


def models_option(help: str) -> Any:
    """--model/-m, repeatable: the models a command runs (default: the embedded SmolLM2-135M)."""
    return option([DEFAULT_MODEL], flag="--model", short="-m", help=help)


DEVICE_MAP_HELP = (
    "Place the model across GPUs, CPU memory and disk with accelerate, for a model larger than one device: auto "
    "(accelerate spreads the modules over the GPUs, then CPU memory, then disk), balanced, balanced_low_0, "
    "sequential, or a mapping of "
    'module names to devices as inline JSON or a .json/.yaml file, e.g. \'{"model.embed_tokens": 0, '
    '"model.layers.0": 0, "model.layers.1": 1, "model.norm": 1, "lm_head": "cpu"}\' (a device: GPU '
    'index, cuda:N, mps, cpu or disk; "" is the whole model). Replaces --device. Prompts and probes run with any '
    "map; ptune and bitfit refuse one that offloads modules to cpu or disk (accelerate reloads those weights at "
    "every pass, so training them in place is lost), and run with one that keeps every module on a GPU."
)


@dataclass
class EvalConfig:
    """`harness eval`: evaluate models on a suite."""

    models: list[str] = models_option(
        "Short name (see `harness models`), Hub id, local HF folder or .gguf file. Repeat for several sizes."
    )
    suite: str = option("superglue", help="Suite(s) in suites/, comma-separated, or a suite YAML file.")
    tasks: list[str] | None = option(
        None, parse=comma_list, help="Comma-separated tasks; overrides the suite's list (see `harness tasks`)."
    )
    methods: list[str] = option(
        ["prompt"],
        parse=comma_list,
        help="Comma-separated methods: prompt (templates, demos, controls), ptune (soft prompts), "
        "bitfit (bias-only tuning), probe (linear probes on hidden states), ccs (Contrast-Consistent Search: an "
        "unsupervised probe).",
    )
    shots: list[int] = option([0, 1, 4], parse=comma_ints, help="Comma-separated numbers of demos (k).")
    random_label_shots: list[int] | None = option(  # None: the largest k of `shots`
        None,
        parse=k_values_or_none,
        help="k values that also get random-label demos, and abstract-label demos where --variants has "
        "abstract_labels (default: the largest k; 'none' for none).",
    )
    variants: list[str] = option(
        list(DEFAULT_VARIANTS),
        parse=comma_list,
        help="Prompt variants to run, comma-separated: gold (the templates with their demos; always needed), "
        "calibrated (contextual calibration of gold: one content-free request more), random_labels (the demos with "
        "random labels, at --random-label-shots), control (the templates with no task information), "
        "abstract_labels (the demos with gold labels shown as neutral symbols, foo/bar/..., and the query scored on "
        "them, at --random-label-shots; tasks with a fixed label set only; not in the default). Default: "
        f"{','.join(DEFAULT_VARIANTS)}. --variants gold --no-train-picks runs exactly lm-eval's work.",
    )
    train_picks: bool = option(
        True,
        help="Score gold prompts at k = 0 and the largest k on 16 train examples, so the report picks a template "
        "on train (--no-train-picks skips them: the report then has no picked-on-train columns or verdicts).",
    )
    design: str = option(
        "full",
        help="full (every template scores every eval example) or sampled (each eval example is scored under a "
        "seeded, balanced subset of the templates, --template-share of them, for gold, calibrated and "
        "random-label prompts; controls score every example). A store keeps one design.",
    )
    template_share: float = option(
        0.25,
        help="With --design sampled: the share of the templates each eval example is scored under, in (0, 1]: about "
        "that share of the prompt grid's forward passes.",
    )
    seeds: int = option(3, help="Demo seeds per (template, k>0): each draws its own demo set from train.")
    templates: list[str] | None = option(
        None, parse=comma_list, help="Comma-separated template names (default: all). Control templates always run."
    )
    limit: int | None = option(
        None,
        help="Evaluate a seeded, label-stratified subset of this many val examples per task (MultiRC: questions). "
        "Default: all.",
    )
    limit_seed: int = option(0, help="Seed of the --limit subset.")
    batch_size: int | None = option(
        None, help="Rows per forward pass (default: picked from sequence lengths and memory)."
    )
    device: str = option("auto", help="auto, cpu, cuda or mps.")
    device_map: str | None = option(None, help=DEVICE_MAP_HELP)
    dtype: str = option("auto", help="auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16 or float16.")
    out: str = option(
        "runs/latest", help="Output folder: results.db, summary.csv, report.md, plots/. Rerunning resumes."
    )
    data_dir: str | None = option(
        None,
        help="Folder of SuperGLUE jsonl files (<dir>/<Task>/{train,val}.jsonl). Default: $HARNESS_DATA_DIR, else "
        "the Hugging Face Hub.",
    )
    train_set: str = option(
        "auto",
        help="Where demos come from: auto (FewGLUE if found, else SuperGLUE train), fewglue, superglue, or a folder.",
    )
    fewglue_dir: str | None = option(
        None, help="FewGLUE folder. Default: $HARNESS_FEWGLUE_DIR, else a 'fewglue' folder beside the data folder."
    )
    demo_selection: str = option(
        "random", help="random (seeded, one demo set per k and seed) or first (the first k train examples)."
    )
    prompts_dir: str | None = option(
        None, help="Folder of <task>.yaml prompt files to use instead of the task files' templates."
    )
    tasks_dirs: list[str] = tasks_dirs_option()
    trust_remote_code: bool = option(False, help="Allow model code from the Hub to run (off by default).")
    train_sizes: list[int | str] | None = option(  # None: 32 (FewGLUE)
        None,
        parse=sizes_or_all,
        help="Trained methods: comma-separated train sample sizes for learning curves, e.g. 8,32,128,all "
        "(all: the task's whole train split; default 32, FewGLUE's size). A quarter of each sample is held "
        "out for early stopping; eval data never is.",
    )
    overrides: list[str] = option(
        [],
        flag="--set",
        help="Override a method preset (probes/<method>.yaml): METHOD.KEY=VALUE, e.g. ptune.max_steps=40. Repeatable.",
    )
    presets_dir: str | None = option(
        None, help="Folder of <method>.yaml presets to use instead of the shipped probes/."
    )
    random_init_baseline: list[str] = option(
        ["probe", "ccs"],
        parse=trained_methods_or_none,
        help="Trained methods that also run on a seeded re-initialisation of the model (variant "
        "<variant>-random-init), the baseline of their selectivity: comma-separated, or 'none'.",
    )
    shard: Part | None = option(
        None,
        parse=parse_shard,
        help="Run only shard I of N (I/N, 1 <= I <= N, e.g. 2/8): a cost-balanced share of the planned units, into "
        "this shard's own --out, for a scheduler's array job; `harness merge` puts the shards together.",
    )
    permuted_label_check: list[str] = option(
        list(TRAINED_METHODS),
        parse=trained_methods_or_none,
        help="Trained methods that also train and score with permuted labels (variant <variant>-control): a "
        "sanity check that should sit at chance, one more unit per trained unit. Comma-separated, or 'none'.",
    )


@dataclass
class TrainingInputs:
    """The options that end `harness transfer`'s and `harness w2s`'s --help, the same in both: where the data,
    prompts, task files and presets come from, and whether Hub code may run. Each command's config inherits them
    after its own options (`class TransferConfig(TrainingInputs, TransferOptions)`: a dataclass lists the fields of
    its later bases first), so both --help texts list their own options first. A config may redefine a field here
    to word it for its command; the field keeps its place (W2SConfig's `overrides`)."""

    data_dir: str | None = option(
        None, help="Folder of SuperGLUE jsonl files. Default: $HARNESS_DATA_DIR, else the Hub."
    )
    train_set: str = option(
        "superglue", help="superglue (default: FewGLUE's 32 examples are too few), fewglue, auto or a folder."
    )
    fewglue_dir: str | None = option(
        None, help="FewGLUE folder. Default: $HARNESS_FEWGLUE_DIR, else a 'fewglue' folder beside the data folder."
    )
    prompts_dir: str | None = option(None, help="Folder of <task>.yaml prompt files.")
    tasks_dirs: list[str] = tasks_dirs_option()
    presets_dir: str | None = option(None, help="Folder of <method>.yaml presets.")
    overrides: list[str] = option(
        [], flag="--set", help="Override a preset: METHOD.KEY=VALUE, e.g. bitfit.learning_rate=3e-3."
    )
    trust_remote_code: bool = option(False, help="Allow model code from the Hub to run.")


@dataclass
class TransferOptions:
    """`harness transfer`'s own options (TransferConfig adds the shared TrainingInputs after them)."""

    models: list[str] = models_option("Short name, Hub id, local HF folder or .gguf file. Repeat for several sizes.")
    tasks: list[str] = option(
        DEFAULT_TRANSFER_TASKS,
        parse=comma_list,
        help="Comma-separated tasks (at least two); every ordered pair (A, B) is run, A = B included.",
    )
    method: str = option(
        "bitfit", help="bitfit (bias-only tuning) or ptune (its preset's first variant: prompt tuning)."
    )
    source_n: int = option(200, help="Train examples of the source task A.")
    target_n: int = option(10, help="Train examples of the target task B (disjoint from A's sample).")
    target_sizes: list[int] = option(
        [],
        parse=comma_ints,
        help="Also train B alone at these sizes (e.g. 2,5,20,40; same steps and learning rate as at --target-n): "
        "the learning curve that converts each gain into effective data transferred, in examples of B. "
        "Adds units to a store; --target-n is always run.",
    )
    shuffled_sources: bool = option(
        False,
        help="Also train each source on A's same sample with its answers shuffled across the examples (a seeded "
        "permutation: same inputs, answer format and answer mix) and run every target from it: the format-only "
        "control; the report shows transfer beyond format = gain(A) - gain(shuffled A). Adds units to a store.",
    )
    source_steps: int = option(
        50, help="Most optimiser steps on A; a quarter of A's sample is held out for early stopping."
    )
    target_steps: int = option(10, help="Optimiser steps on B; the last state is kept.")
    target_lr: float | None = option(
        None, help="Learning rate on B (default: the preset's, as on A); a fresh AdamW either way."
    )
    source_eval_every: int = option(10, help="Steps between held-out checks on A.")
    seeds: int = option(3, help="Training seeds: each draws its own samples and initialisation.")
    limit: int | None = option(100, help="Seeded, label-stratified val examples scored per task.")
    limit_seed: int = option(0, help="Seed of the --limit subset.")
    device: str = option("auto", help="auto, cpu, cuda or mps.")
    device_map: str | None = option(None, help=DEVICE_MAP_HELP)
    dtype: str = option("auto", help="auto, float32, bfloat16 or float16.")
    out: str = option("runs/transfer", help="Output folder: results.db, states/, transfer.csv, report.md, plots/.")


@dataclass
class TransferConfig(TrainingInputs, TransferOptions):
    """`harness transfer`: train on task A, then briefly on B, for every ordered pair of tasks."""


DEFAULT_W2S_TASKS = ["boolq", "cb", "copa", "rte"]


@dataclass
class W2SOptions:
    """`harness w2s`'s own options (W2SConfig adds the shared TrainingInputs after them)."""

    weak: str = option(
        help="The weak model (the supervisor): short name (see `harness models`), Hub id, local HF folder or .gguf file."
    )
    strong: str = option(help="The strong model (the student), named as --weak.")
    tasks: list[str] = option(DEFAULT_W2S_TASKS, parse=comma_list, help="Comma-separated tasks with class labels.")
    method: str = option(
        "probe",
        help="The ecological method both models train: probe (logistic regression on hidden states, layer chosen by "
        "CV on its train labels; the only method w2s trains so far).",
    )
    weak_n: int = option(64, help="Gold-labelled train examples the weak model learns from (sample A).")
    strong_n: int = option(
        128,
        help="Train examples (sample B, disjoint from A) the weak model labels; the strong model learns from them "
        "with the weak labels (w2s) and with their gold labels (the ceiling).",
    )
    confidence_loss: float | None = option(
        None,
        help="Also train the strong probe with Burns et al.'s auxiliary confidence loss of this weight ALPHA in "
        "(0, 1): targets mix the weak labels with its own hardened predictions (variant w2s-conf<ALPHA>).",
    )
    seeds: int = option(1, help="Seeds: each draws its own samples A and B.")
    limit: int | None = option(None, help="Seeded, label-stratified val examples scored per task (default: all).")
    limit_seed: int = option(0, help="Seed of the --limit subset.")
    device: str = option("auto", help="auto, cpu, cuda or mps.")
    dtype: str = option("auto", help="auto, float32, bfloat16 or float16.")
    out: str = option("runs/w2s", help="Output folder: results.db, w2s.csv, report.md. Rerunning resumes.")


@dataclass
class W2SConfig(TrainingInputs, W2SOptions):
    """`harness w2s`: weak-to-strong generalization (Burns et al. 2023) with each model's probe."""

    # w2s trains the probe only
    overrides: list[str] = option(
        [], flag="--set", help="Override the probe preset: probe.KEY=VALUE, e.g. probe.C=0.1."
    )


@dataclass
class ReportConfig:
    """`harness report`: re-render a stored run."""

    out: str = option(help="Output folder of a previous `harness eval` or `harness transfer`.", argument=True)


@dataclass
class MergeConfig:
    """`harness merge`: put the stores of a sharded run together."""

    out: str = option(
        help="Output folder of the merged run (created if need be; rerunning adds what is new).", argument=True
    )
    shards: list[str] = option(
        help="Output folders of the shards (`harness eval --shard I/N --out DIR`).", argument=True
    )


@dataclass
class TasksConfig:
    """`harness tasks`: list the tasks."""

    prompts_dir: str | None = option(None, help="Folder of <task>.yaml prompt files.")
    tasks_dirs: list[str] = tasks_dirs_option()


@dataclass
class PromptsConfig:
    """`harness prompts`: render a task's templates on a val example."""

    task: str = option(help="Task name (see `harness tasks`).", argument=True)
    data_dir: str | None = option(
        None, help="Folder of SuperGLUE jsonl files; default $HARNESS_DATA_DIR, else the Hub."
    )
    example: int = option(0, help="Index of the val example to render.")
    prompts_dir: str | None = option(None, help="Folder of <task>.yaml prompt files.")
    tasks_dirs: list[str] = tasks_dirs_option()
