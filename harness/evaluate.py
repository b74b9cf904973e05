"""`harness eval`: plan every unit, skip those already stored, score the rest, then write the report."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

from rich.console import Console

from harness.catalog import get_task, use_task_dirs
from harness.config import PROMPT_VARIANTS, EvalConfig, TransferConfig
from harness.design import DESIGNS
from harness.device_map import DeviceMap, offloads, parse_device_map
from harness.errors import HarnessError, Interrupted
from harness.features import FeatureCache
from harness.loaders import GPT3_HINT, DataSource, load_train, resolve_train_source
from harness.lock import writer_lock
from harness.merge import absorb_ranks
from harness.methods import prompt as prompt_method
from harness.methods.base import (
    RunContext,
    TaskContext,
    TrainedMethod,
    TuningMethod,
    Unit,
    get_method,
    method_names,
    train_sizes,
    trained_method_names,
)
from harness.methods.presets import Preset, check_overrides, load_preset
from harness.models import RANDOM_INIT_SEED, random_init_copy
from harness.parallel import Part, Ranks, rank_dir, share
from harness.prefix_attention import prefix_attention_mode
from harness.progress import progress
from harness.prompts import PromptSet, load_prompts
from harness.resources import read_yaml, resource_dir
from harness.store import (
    Store,
    UnitKey,
    check_same_design,
    check_same_eval_set,
    check_same_presets,
    check_same_train_source,
)
from harness.synthetic import gpt3_folder, gpt3_tasks
from harness.tasks import Example, TaskSpec, stratified_subset


@dataclass
class TaskPlan:
    """One task of a run: what its methods see (`task`), the units they planned, and what the store keeps of it."""

    task: TaskContext
    units: list[Unit]  # every method's, in the order of --methods (untrained first, then trained)
    info: dict

    @property
    def spec(self) -> TaskSpec:
        return self.task.spec


def load_suite(name: str) -> list[str]:
    """Task names of one or more comma-separated suites (suites/<name>.yaml, or a path to a suite file)."""
    tasks: list[str] = []
    for part in [p.strip() for p in name.split(",") if p.strip()]:
        path = Path(part) if part.endswith((".yaml", ".yml")) else resource_dir("suites") / f"{part}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in resource_dir("suites").glob("*.yaml"))
            raise HarnessError(f"unknown suite '{part}' (--suite): known suites are {', '.join(known)}")
        data = read_yaml(path, "suite file") or {}
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), list):
            raise HarnessError(f"{path}: a suite needs a 'tasks' list")
        tasks += [t for t in data["tasks"] if t not in tasks]
    return tasks


# Text options of both `harness eval` and `harness transfer` (fields of EvalConfig and TransferConfig)
SHARED_TEXT_OPTIONS = (
    "device",
    "device_map",
    "dtype",
    "out",
    "data_dir",
    "train_set",
    "fewglue_dir",
    "prompts_dir",
    "presets_dir",
)


def check_given(cfg: EvalConfig | TransferConfig, extra: Sequence[tuple[str, str | None]] = ()) -> None:
    """Fail on no or an empty --model, and on a text option given as an empty string (`--out ""`): it would silently
    mean the current folder or the default. Checked in order: `extra`, the command's own (flag, value) pairs (None
    means not given), then SHARED_TEXT_OPTIONS, then each --tasks-dir."""
    if not cfg.models or any(not m.strip() for m in cfg.models):
        raise HarnessError("--model is empty: give a short name (see `harness models`), a Hub id or a local path")
    shared = [(f"--{name.replace('_', '-')}", getattr(cfg, name)) for name in SHARED_TEXT_OPTIONS]
    for flag, value in [*extra, *shared, *(("--tasks-dir", d) for d in cfg.tasks_dirs)]:
        if value is not None and not value.strip():
            raise HarnessError(f"{flag} is empty: give a value or leave the option out")


def check_device_map(cfg: EvalConfig | TransferConfig, tuned: Sequence[str]) -> DeviceMap | None:
    """The parsed --device-map (None: not given); it replaces --device, and the tuned methods (`tuned`, the run's
    ptune/bitfit) refuse a map that offloads modules (checked again on the loaded model, for a strategy)."""
    device_map = parse_device_map(cfg.device_map)
    if device_map is None:
        return None
    if cfg.device.strip().lower() != "auto":
        raise HarnessError(f"--device-map places the model itself: leave out --device {cfg.device}")
    if tuned and isinstance(device_map, dict) and offloads(device_map):
        raise HarnessError(
            f"--device-map offloads modules to cpu or disk, where {', '.join(tuned)} cannot train them in place; give "
            "a map that keeps every module on a GPU (prompts and probes take any map)"
        )
    return device_map


def validate(cfg: EvalConfig) -> None:
    """Check the options before any data, model or store is touched; each message names its flag."""
    check_given(cfg, [("--suite", cfg.suite)])
    use_task_dirs(cfg.tasks_dirs)
    if cfg.tasks is not None and not cfg.tasks:
        raise HarnessError("--tasks is empty: give comma-separated task names (see `harness tasks`)")
    if cfg.templates is not None and not cfg.templates:
        raise HarnessError("--templates is empty: give comma-separated template names (see `harness tasks`)")
    if not cfg.methods:
        raise HarnessError(f"--methods is empty: choose from {', '.join(method_names())}")
    for m in cfg.methods:
        get_method(m, "--methods")
    if not cfg.shots:
        raise HarnessError("--shots is empty: give comma-separated numbers of demos, e.g. 0,1,4")
    for k in cfg.shots:
        if k < 0:
            raise HarnessError(f"--shots must be non-negative integers, not {k}")
    if not cfg.variants:
        raise HarnessError(f"--variants is empty: choose from {', '.join(PROMPT_VARIANTS)}")
    for v in cfg.variants:
        if v not in PROMPT_VARIANTS:
            raise HarnessError(f"unknown variant '{v}' (--variants): known are {', '.join(PROMPT_VARIANTS)}")
    if "gold" not in cfg.variants:
        raise HarnessError("--variants must include gold: the other variants are read against it")
    for k in cfg.random_label_shots or []:
        if k not in cfg.shots:
            raise HarnessError(f"--random-label-shots must be a subset of --shots: {k} is not in --shots")
    if cfg.seeds < 1:
        raise HarnessError(f"--seeds must be at least 1, not {cfg.seeds}")
    if cfg.limit is not None and cfg.limit < 1:
        raise HarnessError(f"--limit must be at least 1, not {cfg.limit}")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise HarnessError(f"--batch-size must be at least 1, not {cfg.batch_size}")
    if cfg.design not in DESIGNS:
        raise HarnessError(f"--design must be {' or '.join(DESIGNS)}, not '{cfg.design}'")
    if not 0 < cfg.template_share <= 1:
        raise HarnessError(f"--template-share must be in (0, 1], not {cfg.template_share}")
    if cfg.demo_selection not in ("random", "first"):
        raise HarnessError(f"--demo-selection must be 'random' or 'first', not '{cfg.demo_selection}'")
    if cfg.train_sizes is not None and not cfg.train_sizes:
        raise HarnessError("--train-sizes is empty: give comma-separated sizes, e.g. 8,32,all")
    for n in cfg.train_sizes or []:
        if n != "all" and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
            raise HarnessError(f"--train-sizes must be integers of at least 2 or 'all', not {n}")
    for flag, methods in (
        ("--random-init-baseline", cfg.random_init_baseline),
        ("--permuted-label-check", cfg.permuted_label_check),
    ):
        trained = trained_method_names()
        for m in methods:
            if m not in trained:
                raise HarnessError(f"unknown method '{m}' ({flag}): trained methods are {', '.join(trained)}")
    if cfg.shard is not None and not 0 <= cfg.shard.index < cfg.shard.count:  # a config built in code
        raise HarnessError(f"--shard must be I/N with 1 <= I <= N, not {cfg.shard}")
    _group_mode()  # a bad $HARNESS_GROUP_UNITS fails before any model loads
    prefix_attention_mode()  # and a bad $HARNESS_PREFIX_ATTENTION
    check_overrides(cfg.overrides)
    check_device_map(cfg, tuned_methods(cfg))


def trained_methods(cfg: EvalConfig) -> list[str]:
    return [m for m in cfg.methods if get_method(m).trained]


def tuned_methods(cfg: EvalConfig) -> list[str]:
    """The run's methods that change the model's parameters in training (ptune, bitfit; not the probe)."""
    return [m for m in cfg.methods if isinstance(get_method(m), TuningMethod)]


def load_presets(cfg: EvalConfig) -> dict[str, Preset]:
    """The preset of every method asked for that has one (probes/<method>.yaml, then --set)."""
    return {
        m: load_preset(m, cfg.presets_dir, cfg.overrides) for m in cfg.methods if get_method(m).preset_class is not None
    }


def plan_trained(
    cfg: EvalConfig,
    spec: TaskSpec,
    prompts: PromptSet,
    train: list[Example] | None,
    source: str,
    presets: dict[str, Preset],
) -> tuple[list[Unit], list[str]]:
    """Units of the trained methods for one task, after checking the task can be trained on."""
    methods: list[TrainedMethod] = [get_method(m) for m in trained_methods(cfg)]
    if not methods:
        return [], []
    notes = []
    for method in list(methods):
        reason = method.not_applicable(spec)
        if reason:
            methods.remove(method)
            notes.append(reason)
    if not spec.labels and not spec.generates:
        return [], [f"trained methods not applicable: {spec.name} has no fixed label set"]
    if train is None:
        raise HarnessError(
            f"{spec.name}: --methods {','.join(m.name for m in methods)} needs a train split, and {source} has none "
            "for it (--train-set)"
        )
    available = len({e.group for e in train})
    for n in train_sizes(cfg.train_sizes, train):
        if n > available:
            raise HarnessError(
                f"train size {n} (--train-sizes) is larger than {spec.name}'s train split "
                f"({available} {'questions' if spec.grouped else 'examples'} in {source})"
            )
    task = TaskContext(cfg, spec, prompts, [], train, presets)
    return [unit for method in methods for unit in method.plan(task)], notes


def plan_tasks(
    cfg: EvalConfig, console: Console, presets: dict[str, Preset]
) -> tuple[list[TaskPlan], list[tuple[str, str]], DataSource]:
    """Load and check every task's data and templates before any model is loaded."""
    explicit = cfg.tasks is not None
    names = cfg.tasks if explicit else load_suite(cfg.suite)
    data = DataSource.from_option(cfg.data_dir)
    train_source = resolve_train_source(cfg.train_set, data, cfg.fewglue_dir)
    plans, skipped = [], []
    for name in expand_task_names(names, data, explicit, console, skipped):
        spec = get_task(name)
        if not data.has_split(spec, "val"):
            reason = data.missing(spec, "val")
            if explicit:
                raise HarnessError(f"{spec.name}: {reason}")
            console.print(f"[yellow]{spec.name}: not evaluated, {reason}[/yellow]")
            skipped.append((spec.name, reason))
            continue
        if spec.answer == "read":
            plans.append(_plan_list_probe(cfg, spec, data, presets))
            continue
        prompts = load_prompts(spec, cfg.prompts_dir)
        val = data.load(spec, "val")
        eval_examples = stratified_subset(val, cfg.limit, cfg.limit_seed)
        if not eval_examples:
            raise HarnessError(f"{spec.name}: the val split is empty")
        source = train_source.for_task(spec, data)
        train = load_train(spec, source, data)
        notes = []
        if train is None and any(k > 0 for k in cfg.shots):
            notes.append(f"no train split in {source.describe(spec)}: only zero-shot prompts were run")
        task = TaskContext(cfg, spec, prompts, eval_examples, train, presets)
        not_run = _variants_not_run(cfg, spec, prompts, train)
        for reason in not_run.values():
            console.print(f"[yellow]{reason}[/yellow]")
            notes.append(reason)
        units = [u for m in cfg.methods if not get_method(m).trained for u in get_method(m).plan(task)]
        trained, trained_notes = plan_trained(cfg, spec, prompts, train, source.describe(spec), presets)
        units += trained
        notes += trained_notes
        # Render every template on every example now (about 50 us each), so that a bad template or a row without a
        # field a template uses fails before the model loads, naming the file and line.
        for name in sorted({u.template for u in units}):
            template = prompts.get(name)
            for example in val + (train or []):
                template.render(example)
        info = {
            "n_eval": len(eval_examples),
            "n_groups": len({e.group for e in eval_examples}),
            "train_source": source.describe(spec) if train is not None else "none",
            "n_train": len(train) if train is not None else 0,
            "prompts": str(prompts.path),
            "task": spec.to_info(),
            "notes": notes,
            "eval_ids": [e.id for e in eval_examples],
        }
        if not_run:
            info["variants_not_run"] = not_run
        plans.append(TaskPlan(task, units, info))
    return plans, skipped, data


def _variants_not_run(
    cfg: EvalConfig, spec: TaskSpec, prompts: PromptSet, train: list[Example] | None
) -> dict[str, str]:
    """Variants asked for that cannot run on this task, with why (abstract labels on COPA's per-example choices):
    a note in the plan and the report, not an error."""
    asked = "prompt" in cfg.methods and "abstract_labels" in cfg.variants and train is not None
    if not asked or not any(k > 0 for k in prompt_method.random_label_shots(cfg)):
        return {}
    reason = prompt_method.abstract_labels_unavailable(spec, prompts, cfg.templates)
    return {"abstract_labels": reason} if reason else {}


def _plan_list_probe(cfg: EvalConfig, spec: TaskSpec, data: DataSource, presets: dict[str, Preset]) -> TaskPlan:
    """The presidents probe: one pass over the whole list; no templates, demos or training apply."""
    examples = data.load(spec, "val")
    notes = ["the whole list is read in one pass: --limit, --shots, --seeds and templates do not apply"]
    if trained_methods(cfg):
        notes.append("trained methods do not apply to a list read off the next-token distribution")
    task = TaskContext(cfg, spec, None, examples, None, presets)
    units = get_method("prompt").plan(task) if "prompt" in cfg.methods else []
    info = {
        "n_eval": len(examples),
        "n_groups": len(examples),
        "train_source": "none",
        "n_train": 0,
        "prompts": str(data.split_path(spec, "val")),
        "notes": notes,
        "eval_ids": [e.id for e in examples],
    }
    return TaskPlan(task, units, info)


def expand_task_names(
    names: list[str], data: DataSource, explicit: bool, console: Console, skipped: list[tuple[str, str]]
) -> list[str]:
    """`gpt3-*` stands for every GPT-3 arithmetic file found (none found: skipped, or an error when asked for)."""
    out: list[str] = []
    for name in names:
        if name != "gpt3-*":
            out.append(name)
            continue
        found = gpt3_tasks(gpt3_folder(data.folder))
        if not found:
            reason = f"no GPT-3 arithmetic files found ({GPT3_HINT})"
            if explicit:
                raise HarnessError(f"gpt3-*: {reason}")
            console.print(f"[yellow]gpt3-*: not evaluated, {reason}[/yellow]")
            skipped.append(("gpt3-*", reason))
        out += [n for n in found if n not in out]
    return out


def _check_same_eval_set(store: Store, cfg: EvalConfig, data: DataSource) -> None:
    """A store holds one eval set per task: refuse to mix results over different examples."""
    check_same_eval_set(store, eval_set_of(cfg, data), "use another --out, or the same --data-dir/--limit/--limit-seed")


def eval_set_of(cfg: EvalConfig, data: DataSource) -> dict:
    """The eval set a run asks for, as a store records it (`meta` eval_set)."""
    return {"data": data.describe(), "limit": cfg.limit, "limit_seed": cfg.limit_seed}


def design_of(cfg: EvalConfig) -> dict:
    """The prompt design a run asks for, as a store records it (`meta` design)."""
    if cfg.design == "full":
        return {"design": "full"}
    return {"design": cfg.design, "template_share": cfg.template_share}


def _check_same_design(store: Store, cfg: EvalConfig) -> None:
    check_same_design(store, design_of(cfg), "use another --out, or the same --design{share}")


def _check_same_train_source(store: Store, model: str, plan: TaskPlan) -> None:
    wanted = plan.info.get("train_source")
    check_same_train_source(store, model, plan.spec.name, wanted, "use another --out, or the same --train-set")


def _check_same_presets(store: Store, presets: dict[str, Preset]) -> None:
    wanted = {method: preset.to_dict() for method, preset in presets.items()}
    check_same_presets(store, wanted, "use another --out, or the same --set/--presets-dir")
    store.set_meta("presets", {**(store.get_meta("presets") or {}), **wanted})


def _check_same_calibration(store: Store, plan: TaskPlan, unit, info: dict) -> None:
    """A stored gold unit holds its calibrated twin or not: a run asking otherwise would leave the report's
    calibrated columns covering some templates only."""
    if not prompt_method.calibratable(unit, plan.task.prompts):
        return
    stored = "calibrated" in info.get("variants", [])
    if stored != ("calibrated" in plan.task.cfg.variants):
        raise HarnessError(
            f"{store.path} holds {plan.spec.name} gold prompts {'with' if stored else 'without'} their calibrated "
            f"variant; use another --out, or {'keep calibrated in' if stored else 'leave calibrated out of'} "
            "--variants"
        )


def run_eval(cfg: EvalConfig, console: Console, command: str) -> Path | None:
    """Evaluate cfg's models into cfg.out, then render its report; returns the report's path, or None where this
    process renders none (a --shard run, whose store is merged later; a rank other than 0). A store has one writer:
    while another live run holds cfg.out, this one is refused (HarnessError). Under torchrun or `accelerate launch`
    the job's processes split the units (harness/parallel.py)."""
    validate(cfg)
    ranks = Ranks.from_env()
    try:
        if not ranks.writer:  # its private store's lock is taken once rank 0 is ready (_open_store)
            return _run_eval(cfg, console, command, ranks)
        with writer_lock(cfg.out):
            return _run_eval(cfg, console, command, ranks)
    finally:
        ranks.close()


def _prepare_store(store: Store, cfg: EvalConfig, data: DataSource, presets: dict[str, Preset], command: str) -> None:
    """Check that the run may add to `store`, then record what it runs (eval set, design, presets, command)."""
    _check_same_eval_set(store, cfg, data)
    _check_same_presets(store, presets)
    _check_same_design(store, cfg)
    store.set_meta("design", design_of(cfg))
    store.set_meta("eval_set", eval_set_of(cfg, data))
    # a store can grow over several commands (resume, more tasks or methods): the report lists them all
    earlier = store.get_meta("commands") or [c for c in [store.get_meta("command")] if c]
    store.set_meta("commands", earlier + [command] if earlier[-1:] != [command] else earlier)
    store.set_meta("command", command)
    config = {k: v for k, v in asdict(cfg).items() if k not in ("out",)}
    config["data"] = data.describe()
    store.set_meta("config", config)


@contextmanager
def _open_store(cfg: EvalConfig, ranks: Ranks, prepare: Callable[[Store], None], console: Console) -> Iterator[Store]:
    """The store this process writes, prepared. Rank 0: OUT's (run_eval holds its lock), after merging in what the
    ranks of a killed job left there. Another rank: its private store, opened once rank 0 has done that."""
    if ranks.writer:
        store = Store(cfg.out)
        try:
            prepare(store)
            added = absorb_ranks(store, cfg.out)
            if added:
                console.print(f"{added} units stored by the other processes of an earlier job merged into {store.path}")
            ranks.barrier()
            yield store
        finally:
            store.close()
        return
    ranks.barrier()
    with writer_lock(rank_dir(cfg.out, ranks.rank)) as lock:
        store = Store(lock.parent)
        try:
            prepare(store)
            yield store
        finally:
            store.close()


def shard_plans(plans: list[TaskPlan], part: Part) -> list[TaskPlan]:
    """Every task with only the units of shard `part`: a cost-balanced split of the run's units over all tasks
    (harness/parallel.py assign), the same in every shard."""
    units = [(i, unit) for i, plan in enumerate(plans) for unit in plan.units]
    costs = [get_method(unit.method).cost(unit, plans[i].task) for i, unit in units]
    mine = share(units, costs, part)
    return [replace(plan, units=[u for j, u in mine if j == i]) for i, plan in enumerate(plans)]


def _run_eval(cfg: EvalConfig, console: Console, command: str, ranks: Ranks) -> Path | None:
    from harness.engine import Engine
    from harness.models import load_model, refuse_offloaded_training
    from harness.report import render

    presets = load_presets(cfg)
    # the other ranks plan as rank 0 does (the same plan), quietly: rank 0 says what there is to say
    plans, skipped, data = plan_tasks(cfg, console if ranks.writer else Console(quiet=True), presets)
    if cfg.shard is not None:
        plans = shard_plans(plans, cfg.shard)
    device_map = parse_device_map(cfg.device_map)
    with _open_store(cfg, ranks, lambda store: _prepare_store(store, cfg, data, presets, command), console) as store:
        for spec in cfg.models:
            loaded = load_model(spec, cfg.device, cfg.dtype, cfg.trust_remote_code, device_map)
            refuse_offloaded_training(loaded, tuned_methods(cfg))
            store.put_model(loaded.name, loaded.params, loaded.store_info())
            for name, reason in skipped:
                store.put_task(loaded.name, name, {"skipped": reason})
            engine = Engine(loaded.model, loaded.tokenizer, batch_size=cfg.batch_size)
            _run_model(loaded.name, plans, engine, store, console, ranks)
            del engine, loaded
        if ranks.writer:
            ranks.barrier()  # every other rank has run its units and closed its store
            absorb_ranks(store, cfg.out)
    if not ranks.writer:
        ranks.barrier()
        return None
    if cfg.shard is not None:
        console.print(
            f"shard {cfg.shard} stored in {cfg.out}; once every shard has run, `harness merge OUT SHARD_DIRS...` "
            "puts them together and `harness report OUT` renders the report"
        )
        return None
    return render(cfg.out)


def _run_model(
    model: str, plans: list[TaskPlan], engine, store: Store, console: Console, ranks: Ranks | None = None
) -> None:
    """Run every unit of `plans` not yet stored for `model`, each by its method (the registry's), storing each as it
    ends (small prompt units in groups, each stored as it ends: `unit_groups`); Ctrl-C drops only the units in
    flight. Among a job's ranks, rank 0 finds the units to run and each rank runs its cost-balanced share of them
    into its own store."""
    ranks = ranks or Ranks()
    pending = []  # (plan index, unit index) of every unit not stored yet: rank 0 reads them off OUT's store
    selections = []  # gold prompt units stored without train scores (--no-train-picks, an older version): add them
    for i, plan in enumerate(plans):
        if ranks.writer:
            _check_same_train_source(store, model, plan)
        store.put_task(model, plan.spec.name, plan.info)
        if not ranks.writer:
            continue
        for j, unit in enumerate(plan.units):
            key = UnitKey(model, plan.spec.name, unit.method, unit.key)
            info = store.unit_info(key)
            if info is None:
                pending.append((i, j))
                continue
            if unit.method == "prompt":
                _check_same_calibration(store, plan, unit, info)
            if unit.method == "prompt" and prompt_method.wants_selection(plan.task, unit) and "selection" not in info:
                selections.append((plan, unit, key))
    pending = ranks.broadcast(pending)
    work = [(plans[i], plans[i].units[j]) for i, j in pending]
    work = [(p, u, UnitKey(model, p.spec.name, u.method, u.key)) for p, u in work]
    total_units = sum(len(p.units) for p in plans)
    if not work and not selections:
        if ranks.writer:
            console.print(f"{model}: all {total_units} units already stored in {store.path}")
        return
    done_before = total_units - len(work)
    if done_before and ranks.writer:
        console.print(f"{model}: resuming, {done_before} of {total_units} units already stored")
    if selections:
        console.print(f"{model}: {len(selections)} stored prompt units get their train scores (template selection)")
    if ranks.size > 1:
        work = share(work, [get_method(u.method).cost(u, p.task) for p, u, _ in work], ranks.part)
        if ranks.writer:
            console.print(f"{model}: {len(pending)} units to run, split over {ranks.size} processes")
    total = sum(get_method(u.method).cost(u, p.task) for p, u, _ in work)
    total += sum(prompt_method.selection_cost(p.task) for p, _, _ in selections)
    cache = FeatureCache()
    baseline: list = []  # the random-init copy of the model and its engine, made when first needed

    def random_engine():
        if not baseline:
            from harness.engine import Engine

            copy = random_init_copy(engine.model, RANDOM_INIT_SEED)
            baseline.append(Engine(copy, engine.tokenizer, engine.batch_size))
        return baseline[0]

    who = f"rank {ranks.rank} · " if ranks.size > 1 else ""  # each rank draws its own progress lines
    with progress(console, "steps", plain=ranks.size > 1) as bar:
        job = bar.add_task(who + model, total=total)

        def context(plan: TaskPlan) -> RunContext:
            advance = lambda n: bar.advance(job, n)  # noqa: E731
            return RunContext(plan.task, model, engine, cache, advance, random_engine, RANDOM_INIT_SEED)

        try:
            for plan, unit, key in selections:
                bar.update(job, description=f"{who}{model} · {plan.spec.name} · train scores of {unit.key}")
                store.add_unit_info(key, {"selection": prompt_method.train_scores(unit, context(plan))})
            for group in unit_groups(work):
                plan, unit, key = group[0]
                more = f" and {len(group) - 1} more" if len(group) > 1 else ""
                bar.update(job, description=f"{who}{model} · {plan.spec.name} · {key.method} {unit.key}{more}")
                if len(group) == 1:
                    outputs, info = get_method(unit.method).run(unit, context(plan))
                    store.put_unit(key, outputs, info)
                    continue
                # each unit is stored as soon as its last request is scored, while the rest of the group runs
                keys = {unit: key for _, unit, key in group}
                units = [u for _, u, _ in group]
                prompt_method.run_group(units, context(plan), partial(_put_unit, store, keys), pack=pack_units())
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (harness.errors.Terminated): units in flight are dropped
            missing = sum(not store.has_unit(key) for _, _, key in work)  # exact even if it came just after a commit
            if ranks.size > 1:
                raise Interrupted(
                    f"rank {ranks.rank}: {len(work) - missing} of its {len(work)} units of {model} are stored in "
                    f"{store.path}; rerun the same command to resume"
                ) from None
            raise Interrupted(
                f"{total_units - missing} of {total_units} units of {model} are stored in {store.path}; "
                "rerun the same command to resume"
            ) from None


def _put_unit(store: Store, keys: dict, unit: Unit, outputs: list, info: dict) -> None:
    store.put_unit(keys[unit], outputs, info)


# How small prompt units run: 1 (the default) in groups whose scores are bit for bit those of one unit at a time;
# pack: in groups whose rows also share batches (faster where batches are large, a GPU's; scores move by float
# rounding, as with another --batch-size); 0: every unit on its own, the reference the tests and benchmark compare.
GROUP_UNITS_ENV = "HARNESS_GROUP_UNITS"
GROUP_UNITS_MODES = ("0", "1", "pack")


def _group_mode() -> str:
    value = os.environ.get(GROUP_UNITS_ENV, "1").strip().lower()
    if value not in GROUP_UNITS_MODES:
        raise HarnessError(f"${GROUP_UNITS_ENV} must be {', '.join(GROUP_UNITS_MODES)}, not '{value}'")
    return value


def pack_units() -> bool:
    return _group_mode() == "pack"


def unit_groups(work: list[tuple[TaskPlan, Unit, UnitKey]]) -> list[list[tuple[TaskPlan, Unit, UnitKey]]]:
    """The work in order, cut into groups scored together: consecutive small prompt units of one task
    (prompt_method.groupable), gathered until they hold GROUP_REQUESTS requests; every other unit alone."""
    if _group_mode() == "0":
        return [[item] for item in work]
    groups: list[list[tuple[TaskPlan, Unit, UnitKey]]] = []
    size = 0  # requests in the last group, while it takes more
    for plan, unit, key in work:
        small = unit.method == "prompt" and prompt_method.groupable(plan.task, unit)
        last = groups[-1] if groups else None
        if small and last and size and last[0][0] is plan and size < prompt_method.GROUP_REQUESTS:
            last.append((plan, unit, key))
        else:
            groups.append([(plan, unit, key)])
            size = 0
        if small:
            size += get_method("prompt").cost(unit, plan.task)
    return groups
