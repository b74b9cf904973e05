"""The options of each command, one dataclass per command: what `harness eval` and `harness transfer` run with.

The CLI (cli.py) fills these from flags; code and tests build them directly. Imports nothing heavy (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.methods import TRAINED_METHODS


@dataclass
class EvalConfig:
    models: list[str]
    suite: str = "superglue"
    tasks: list[str] | None = None
    methods: list[str] = field(default_factory=lambda: ["prompt"])
    shots: list[int] = field(default_factory=lambda: [0, 1, 4])
    random_label_shots: list[int] | None = None  # None: the largest k of `shots`
    seeds: int = 3
    templates: list[str] | None = None
    limit: int | None = None
    limit_seed: int = 0
    batch_size: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    out: str = "runs/latest"
    data_dir: str | None = None
    train_set: str = "auto"
    fewglue_dir: str | None = None
    demo_selection: str = "random"
    prompts_dir: str | None = None
    tasks_dirs: list[str] = field(default_factory=list)  # --tasks-dir: the user's task files
    trust_remote_code: bool = False
    train_sizes: list[int | str] | None = None  # trained methods; "all": the whole train split; None: 32 (FewGLUE)
    overrides: list[str] = field(default_factory=list)  # --set method.key=value
    presets_dir: str | None = None
    # trained methods also run on a re-initialised copy of the model (variant `<variant>-random-init`): the
    # baseline that selectivity is measured against
    random_init_baseline: list[str] = field(default_factory=lambda: ["probe"])
    # trained methods that also run with permuted labels: a sanity check that should sit at chance
    permuted_label_check: list[str] = field(default_factory=lambda: list(TRAINED_METHODS))


@dataclass
class TransferConfig:
    models: list[str]
    tasks: list[str]  # the CLI's default: five arithmetic skills and three text tasks with labels
    method: str = "bitfit"  # bitfit | ptune (its preset's first variant)
    source_n: int = 200
    target_n: int = 10
    source_steps: int = 50
    target_steps: int = 10
    target_lr: float | None = None  # None: the preset's learning rate, as in the source phase
    source_eval_every: int = 10
    seeds: int = 3
    limit: int | None = 100
    limit_seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    out: str = "runs/transfer"
    data_dir: str | None = None
    train_set: str = "superglue"  # FewGLUE's 32 examples are too few for source_n = 200
    fewglue_dir: str | None = None
    prompts_dir: str | None = None
    tasks_dirs: list[str] = field(default_factory=list)  # --tasks-dir: the user's task files
    presets_dir: str | None = None
    overrides: list[str] = field(default_factory=list)
    trust_remote_code: bool = False
