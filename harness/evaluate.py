"""`harness eval`: plan every unit, skip those already stored, score the rest, then write the report."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness.errors import HarnessError, Interrupted
from harness.methods import prompt as prompt_method
from harness.prompts import PromptSet, load_prompts
from harness.resources import resource_dir
from harness.store import Store, UnitKey
from harness.tasks import (
    DataSource,
    Example,
    TaskSpec,
    get_task,
    load_train,
    resolve_train_source,
    stratified_subset,
)

METHODS = {"prompt": "many templates, k-shot demos, random-label demos, calibration, control prompts"}
PLANNED_METHODS = ("ptune", "bitfit", "probe")


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
    trust_remote_code: bool = False


@dataclass
class TaskPlan:
    spec: TaskSpec
    prompts: PromptSet
    eval_examples: list[Example]
    train: list[Example] | None
    units: list[prompt_method.PromptUnit]
    info: dict


def load_suite(name: str) -> list[str]:
    """Task names of one or more comma-separated suites (suites/<name>.yaml, or a path to a suite file)."""
    tasks: list[str] = []
    for part in [p.strip() for p in name.split(",") if p.strip()]:
        path = Path(part) if part.endswith((".yaml", ".yml")) else resource_dir("suites") / f"{part}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in resource_dir("suites").glob("*.yaml"))
            raise HarnessError(f"unknown suite '{part}' (--suite): known suites are {', '.join(known)}")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data.get("tasks"), list):
            raise HarnessError(f"{path}: a suite needs a 'tasks' list")
        tasks += [t for t in data["tasks"] if t not in tasks]
    return tasks


def random_label_shots(cfg: EvalConfig) -> list[int]:
    """The k that get random-label demos: as asked, else the largest k (where the report reads them)."""
    if cfg.random_label_shots is not None:
        return cfg.random_label_shots
    return [max(cfg.shots)]  # validate() has rejected an empty --shots


def validate(cfg: EvalConfig) -> None:
    for m in cfg.methods:
        if m in PLANNED_METHODS:
            raise HarnessError(
                f"method '{m}' (--methods) is not available yet in this version; available: {', '.join(METHODS)}"
            )
        if m not in METHODS:
            raise HarnessError(f"unknown method '{m}' (--methods): available methods are {', '.join(METHODS)}")
    if not cfg.shots or any(k < 0 for k in cfg.shots):
        raise HarnessError("--shots must be non-negative integers")
    if any(k not in cfg.shots for k in cfg.random_label_shots or []):
        raise HarnessError("--random-label-shots must be a subset of --shots")
    if cfg.seeds < 1:
        raise HarnessError("--seeds must be at least 1")
    if cfg.limit is not None and cfg.limit < 1:
        raise HarnessError("--limit must be at least 1")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise HarnessError("--batch-size must be at least 1")
    if cfg.demo_selection not in ("random", "first"):
        raise HarnessError("--demo-selection must be 'random' or 'first'")


def plan_tasks(cfg: EvalConfig, console: Console) -> tuple[list[TaskPlan], list[tuple[str, str]], DataSource]:
    """Load and check every task's data and templates before any model is loaded."""
    explicit = cfg.tasks is not None
    names = cfg.tasks if explicit else load_suite(cfg.suite)
    data = DataSource.from_option(cfg.data_dir)
    train_source = resolve_train_source(cfg.train_set, data, cfg.fewglue_dir)
    plans, skipped = [], []
    for name in names:
        spec = get_task(name)
        if not data.has_split(spec, "val"):
            reason = (
                f"no val split: {data.split_path(spec, 'val')} not found (the Hub's {spec.hub_config} has it online)"
            )
            if explicit:
                raise HarnessError(f"{spec.name}: {reason}")
            console.print(f"[yellow]{spec.name}: not evaluated, {reason}[/yellow]")
            skipped.append((spec.name, reason))
            continue
        prompts = load_prompts(spec.name, cfg.prompts_dir)
        eval_examples = stratified_subset(data.load(spec, "val"), cfg.limit, cfg.limit_seed)
        if not eval_examples:
            raise HarnessError(f"{spec.name}: the val split is empty")
        train = load_train(spec, train_source, data)
        notes = []
        if train is None and any(k > 0 for k in cfg.shots):
            notes.append(f"no train split in {train_source.describe(spec)}: only zero-shot prompts were run")
        units = prompt_method.plan_units(
            prompts,
            cfg.shots,
            cfg.seeds,
            cfg.templates,
            cfg.demo_selection,
            len(train) if train is not None else None,
            random_label_shots(cfg),
        )
        # Render every template once on a real example now, so a bad template fails before the model loads.
        for unit in units:
            template = prompts.get(unit.template)
            template.render(eval_examples[0])
            if train:
                template.render(train[0])
        info = {
            "n_eval": len(eval_examples),
            "n_groups": len({e.group for e in eval_examples}),
            "train_source": train_source.describe(spec) if train is not None else "none",
            "n_train": len(train) if train is not None else 0,
            "prompts": str(prompts.path),
            "notes": notes,
            "eval_ids": [e.id for e in eval_examples],
        }
        plans.append(TaskPlan(spec, prompts, eval_examples, train, units, info))
    return plans, skipped, data


def _check_same_eval_set(store: Store, cfg: EvalConfig, data: DataSource) -> None:
    """A store holds one eval set per task: refuse to mix results over different examples."""
    wanted = {"data": data.describe(), "limit": cfg.limit, "limit_seed": cfg.limit_seed}
    stored = store.get_meta("eval_set")
    if stored is not None and stored != wanted:
        raise HarnessError(
            f"{store.path} holds results for another eval set ({stored}); use another --out, or the same "
            "--data-dir/--limit/--limit-seed"
        )


def run_eval(cfg: EvalConfig, console: Console, command: str) -> Path:
    from harness.engine import Engine
    from harness.models import load_model
    from harness.report import render

    validate(cfg)
    store = Store(cfg.out)
    try:
        plans, skipped, data = plan_tasks(cfg, console)
        _check_same_eval_set(store, cfg, data)
        store.set_meta("eval_set", {"data": data.describe(), "limit": cfg.limit, "limit_seed": cfg.limit_seed})
        store.set_meta("command", command)
        config = {k: v for k, v in asdict(cfg).items() if k not in ("out",)}
        config["data"] = data.describe()
        store.set_meta("config", config)

        for spec in cfg.models:
            loaded = load_model(spec, cfg.device, cfg.dtype, cfg.trust_remote_code)
            store.put_model(
                loaded.name,
                loaded.params,
                {
                    "source": loaded.source,
                    "device": loaded.device,
                    "dtype": loaded.dtype,
                    "quantized_source": loaded.quantized_source,
                    "instruction_tuned": loaded.instruction_tuned,
                },
            )
            for name, reason in skipped:
                store.put_task(loaded.name, name, {"skipped": reason})
            engine = Engine(loaded.model, loaded.tokenizer, batch_size=cfg.batch_size)
            _run_model(loaded.name, plans, engine, store, cfg, console)
            del engine, loaded
    finally:
        store.close()
    report = render(cfg.out)
    return report


def _run_model(model: str, plans: list[TaskPlan], engine, store: Store, cfg: EvalConfig, console: Console) -> None:
    work = []
    for plan in plans:
        store.put_task(model, plan.spec.name, plan.info)
        for unit in plan.units:
            key = UnitKey(model, plan.spec.name, "prompt", unit.key)
            if not store.has_unit(key):
                work.append((plan, unit, key))
    total_units = sum(len(p.units) for p in plans)
    if not work:
        console.print(f"{model}: all {total_units} units already stored in {store.path}")
        return
    done_before = total_units - len(work)
    if done_before:
        console.print(f"{model}: resuming, {done_before} of {total_units} units already stored")
    total = sum(len(p.eval_examples) for p, _, _ in work)
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("requests"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    with Progress(
        *columns, console=console, transient=False, disable=os.environ.get("HARNESS_NO_PROGRESS") == "1"
    ) as bar:
        job = bar.add_task(model, total=total)
        finished = 0
        try:
            for plan, unit, key in work:
                bar.update(job, description=f"{model} · {plan.spec.name} · {unit.key}")
                outputs = prompt_method.run_unit(
                    unit,
                    plan.spec,
                    plan.prompts,
                    engine,
                    plan.eval_examples,
                    plan.train,
                    cfg.demo_selection,
                    progress=lambda n: bar.advance(job, n),
                )
                store.put_unit(key, outputs, {"variants": [o.variant for o in outputs]})
                finished += 1
        except KeyboardInterrupt:
            raise Interrupted(
                f"{done_before + finished} of {total_units} units of {model} are stored in {store.path}; "
                "rerun the same command to resume"
            ) from None
