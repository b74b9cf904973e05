"""`harness transfer`: train on task A, then briefly on task B, and score B; compare with training on B alone.

Per model and seed the run has three kinds of unit, each stored on its own (a rerun skips the stored ones):
- `source` (task A): train on `source_n` examples of A (a quarter held out for early stopping), score A's eval
  set; the trained state (biases or soft prompt) is saved as safetensors under OUT/states/, so every pair that
  starts from A reuses it, also after an interruption;
- `only` (task B): from the untrained state, train on `target_n` examples of B for `target_steps`, score B;
- `from:A` (task B): from A's state, the same brief training on the same `target_n` examples, score B.
With `--target-sizes`, `only` units also train B alone at those sizes (a seeded, label-stratified sample of B's
train split each; the same steps and learning rate): B's learning curve, which reads a gain in examples of B.
They add units and never change the others, so they are not among the store's settings.
With `--shuffled-sources`, each source also trains as `source-shuffled` on A's same sample with its answers
permuted across the examples (`shuffled_sample`), and every B runs from that state as `from:A~shuffled`: the gain
of a source that has A's inputs and answer format but no input-answer mapping, the format-only control. These too
add units and are not among the settings.
The gain of A on B is `from:A` - `only`, paired over B's eval examples; the effective data transferred is the size
at which B alone matches `from:A`, minus `target_n` (harness/transfer_matrix.py).
Source and target samples are disjoint, so the diagonal (A -> A) is A's specific skill with more data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console

from harness.catalog import get_task, use_task_dirs
from harness.config import TransferConfig
from harness.device_map import parse_device_map
from harness.errors import HarnessError, Interrupted
from harness.evaluate import check_device_map, check_given
from harness.filenames import slug
from harness.loaders import DataSource, load_train, resolve_train_source
from harness.lock import writer_lock
from harness.methods.base import (
    TuningMethod,
    control_examples,
    get_method,
    method_names,
    split_holdout,
    trained_template,
)
from harness.methods.presets import TrainingPreset, check_overrides, load_preset
from harness.methods.training import train_and_score
from harness.progress import progress
from harness.prompts import load_prompts
from harness.store import Record, Store, UnitKey, VariantRecords, claim_for_command
from harness.synthetic import ANSWER_FIELDS
from harness.tasks import Example, SampledTask, stratified_subset
from harness.transfer_matrix import KIND, METHOD, SHUFFLED, SHUFFLED_SOURCE


class TransferTask(SampledTask):
    def samples(self, source_n: int, target_n: int, seed: int) -> tuple[list[Example], list[Example]]:
        """(source sample, target sample) of this task for one seed: seeded, label-stratified, disjoint."""
        target, source = self.disjoint_samples(target_n, source_n, seed)
        return source, target

    def shuffled_sample(self, source_n: int, target_n: int, seed: int) -> list[Example]:
        """The source sample with its gold answers permuted across its examples (seeded by task and seed): the
        same inputs, answer format and answer distribution, no input-answer mapping (the control task of
        harness/methods/base.py: labels, or a generated task's answer fields together)."""
        sample, _ = self.samples(source_n, target_n, seed)
        fields = ANSWER_FIELDS if self.spec.generates else ()
        return control_examples(sample, seed, f"transfer/{self.spec.name}", fields)


@dataclass(frozen=True)
class TransferUnit:
    kind: str  # source | only | pair
    target: str  # the task trained last and scored (A itself for a source unit)
    seed: int
    source: str | None = None  # A, for pair units
    size: int | None = None  # an `only` unit's train size when not --target-n (--target-sizes)
    shuffled: bool = False  # a source unit, or a pair's source, trained on A's sample with answers shuffled

    @property
    def variant(self) -> str:
        if self.kind == "source":
            return SHUFFLED_SOURCE if self.shuffled else "source"
        return "only" if self.kind == "only" else f"from:{self.source}{SHUFFLED if self.shuffled else ''}"

    def key(self, model: str, cfg: TransferConfig) -> UnitKey:
        sizes = f"n{cfg.source_n}" if self.kind == "source" else f"n{self.size or cfg.target_n}"
        if self.kind == "pair":
            sizes = f"n{cfg.source_n}+{cfg.target_n}"
        return UnitKey(model, self.target, METHOD, f"{self.variant}/{sizes}/s{self.seed}")


def validate(cfg: TransferConfig) -> None:
    """Check the options before any data, model or store is touched; each message names its flag."""
    check_given(cfg)
    use_task_dirs(cfg.tasks_dirs)
    tuned = [m for m in method_names() if isinstance(get_method(m), TuningMethod)]
    if cfg.method not in tuned:
        raise HarnessError(f"unknown method '{cfg.method}' (--method): transfer trains {' or '.join(tuned)}")
    if len(cfg.tasks) < 2:
        raise HarnessError("--tasks needs at least two tasks to transfer between")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise HarnessError("--tasks lists a task twice")
    for flag, value, least in [
        ("--source-n", cfg.source_n, 4),
        ("--target-n", cfg.target_n, 1),
        ("--source-steps", cfg.source_steps, 1),
        ("--target-steps", cfg.target_steps, 1),
        ("--source-eval-every", cfg.source_eval_every, 1),
        ("--seeds", cfg.seeds, 1),
        *(("--target-sizes", n, 1) for n in cfg.target_sizes),
    ]:
        if value < least:
            raise HarnessError(f"{flag} must be at least {least}, not {value}")
    if cfg.limit is not None and cfg.limit < 1:
        raise HarnessError(f"--limit must be at least 1, not {cfg.limit}")
    if cfg.target_lr is not None and not cfg.target_lr > 0:
        raise HarnessError(f"--target-lr must be positive, not {cfg.target_lr}")
    check_overrides(cfg.overrides)
    check_device_map(cfg, [cfg.method])


def plan(cfg: TransferConfig, preset: TrainingPreset) -> tuple[list[TransferTask], DataSource]:
    """Load and check every task's data and template before a model is loaded."""
    data = DataSource.from_option(cfg.data_dir)
    source = resolve_train_source(cfg.train_set, data, cfg.fewglue_dir)
    tasks = []
    for name in cfg.tasks:
        spec = get_task(name)
        if not spec.labels and not spec.generates:
            raise HarnessError(f"{spec.name} (--tasks): transfer trains on labels or generated answers; it has neither")
        if not data.has_split(spec, "val"):
            raise HarnessError(f"{spec.name} (--tasks): no val split at {data.split_path(spec, 'val')}")
        task_source = source.for_task(spec, data)
        train_examples = load_train(spec, task_source, data)
        if train_examples is None:
            raise HarnessError(f"{spec.name} (--tasks): {task_source.describe(spec)} has no train split (--train-set)")
        available = len({e.group for e in train_examples})
        if max(cfg.target_sizes, default=0) > available:
            raise HarnessError(
                f"{spec.name}: --target-sizes {max(cfg.target_sizes)} is more than the {available} train examples "
                f"of {task_source.describe(spec)}"
            )
        if cfg.source_n + cfg.target_n > available:
            raise HarnessError(
                f"{spec.name}: --source-n {cfg.source_n} + --target-n {cfg.target_n} needs that many train "
                f"examples (the samples are disjoint); {task_source.describe(spec)} has {available}"
            )
        prompts = load_prompts(spec, cfg.prompts_dir)
        template = trained_template(spec, prompts, preset)
        eval_examples = stratified_subset(data.load(spec, "val"), cfg.limit, cfg.limit_seed)
        template.render(eval_examples[0])  # a bad template fails now, naming its file, before the model loads
        tasks.append(TransferTask(spec, template, eval_examples, train_examples))
    return tasks, data


def settings(cfg: TransferConfig, preset: TrainingPreset, data: DataSource) -> dict:
    """What a store's transfer results depend on: a rerun with other settings would mix incomparable numbers."""
    return {
        "method": cfg.method,
        "variant": _variant(cfg, preset),
        "preset": preset.to_dict(),
        "source_n": cfg.source_n,
        "target_n": cfg.target_n,
        "source_steps": cfg.source_steps,
        "target_steps": cfg.target_steps,
        "target_lr": cfg.target_lr or preset.learning_rate,
        "source_eval_every": cfg.source_eval_every,
        "limit": cfg.limit,
        "limit_seed": cfg.limit_seed,
        "data": data.describe(),
        "train_set": cfg.train_set,
    }


def _variant(cfg: TransferConfig, preset: TrainingPreset) -> str:
    """The one variant transfer trains: the method's first (ptune: its preset's first, prompt tuning)."""
    return get_method(cfg.method).variants(preset)[0]


def run_transfer(cfg: TransferConfig, console: Console, command: str) -> Path:
    """Run cfg's transfer units into cfg.out, then render its report; returns the report's path. A store has one
    writer: while another live run holds cfg.out, this one is refused (HarnessError)."""
    validate(cfg)
    with writer_lock(cfg.out):
        return _run_transfer(cfg, console, command)


def _run_transfer(cfg: TransferConfig, console: Console, command: str) -> Path:
    from harness.models import load_model, refuse_offloaded_training
    from harness.report_transfer import render

    preset = load_preset(cfg.method, cfg.presets_dir, cfg.overrides)
    tasks, data = plan(cfg, preset)
    store = Store(cfg.out)
    try:
        foreign = "holds `harness eval` results; give `harness transfer` its own --out"
        claim_for_command(store, KIND, settings(cfg, preset, data), command, [t.spec.name for t in tasks], foreign)
        device_map = parse_device_map(cfg.device_map)
        for spec in cfg.models:
            loaded = load_model(spec, cfg.device, cfg.dtype, cfg.trust_remote_code, device_map)
            refuse_offloaded_training(loaded, [cfg.method])
            store.put_model(loaded.name, loaded.params, loaded.store_info())
            for t in tasks:
                store.put_task(loaded.name, t.spec.name, {"n_eval": len(t.eval_examples), "template": t.template.name})
            Runner(loaded.name, loaded.model, loaded.tokenizer, tasks, cfg, preset, store).run(console)
            del loaded
    finally:
        store.close()
    return render(cfg.out)


def state_path(out: str | Path, model: str, variant: str, task: str, source_n: int, seed: int) -> Path:
    return Path(out) / "states" / slug(model) / variant / f"{task}-n{source_n}-s{seed}.safetensors"


class Runner:
    """Runs one model's missing units, sources first so that each source state is trained once."""

    def __init__(
        self, model_name, model, tokenizer, tasks: list[TransferTask], cfg, preset: TrainingPreset, store: Store
    ):
        self.name, self.model, self.tokenizer = model_name, model, tokenizer
        self.tasks, self.cfg, self.preset, self.store = tasks, cfg, preset, store
        self.variant = _variant(cfg, preset)

    def units(self) -> list[TransferUnit]:
        out = []
        names = [t.spec.name for t in self.tasks]
        for seed in range(self.cfg.seeds):
            out += [TransferUnit("only", b, seed) for b in names]
            extra = sorted(set(self.cfg.target_sizes) - {self.cfg.target_n})
            out += [TransferUnit("only", b, seed, size=n) for b in names for n in extra]
            for a in names:
                out.append(TransferUnit("source", a, seed))
                out += [TransferUnit("pair", b, seed, source=a) for b in names]
            if self.cfg.shuffled_sources:  # after the others: a store run without them resumes into them
                for a in names:
                    out.append(TransferUnit("source", a, seed, shuffled=True))
                    out += [TransferUnit("pair", b, seed, source=a, shuffled=True) for b in names]
        return out

    def run(self, console: Console) -> None:
        units = self.units()
        todo = [u for u in units if not self.store.has_unit(u.key(self.name, self.cfg))]
        if not todo:
            console.print(f"{self.name}: all {len(units)} transfer units already stored in {self.store.path}")
            return
        if len(todo) < len(units):
            console.print(f"{self.name}: resuming, {len(units) - len(todo)} of {len(units)} units already stored")
        with progress(console, "units") as bar:
            job = bar.add_task(self.name, total=len(todo))
            try:
                for unit in todo:
                    bar.update(job, description=f"{self.name} · {unit.target} · {unit.variant} s{unit.seed}")
                    self.run_unit(unit)
                    bar.advance(job)
            except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (harness.errors.Terminated): the unit in flight is dropped
                done = sum(self.store.has_unit(u.key(self.name, self.cfg)) for u in units)  # exact, from the store
                raise Interrupted(
                    f"{done} of {len(units)} transfer units of {self.name} are stored in {self.store.path}; "
                    "rerun the same command to resume"
                ) from None

    def task(self, name: str) -> TransferTask:
        return next(t for t in self.tasks if t.spec.name == name)

    def run_unit(self, unit: TransferUnit) -> None:
        target = self.task(unit.target)
        source_sample, target_sample = target.samples(self.cfg.source_n, self.cfg.target_n, unit.seed)
        if unit.size is not None:  # B alone at another size: its own seeded, label-stratified sample of B's train
            target_sample = stratified_subset(target.train, unit.size, unit.seed)
        started = time.perf_counter()
        if unit.kind == "source":
            if unit.shuffled:
                source_sample = target.shuffled_sample(self.cfg.source_n, self.cfg.target_n, unit.seed)
            records, info, state = self._train_and_score(target, source_sample, None, unit.seed, brief=False)
            self._save_state(unit.target, unit.seed, state, unit.shuffled)
        else:
            state = self._source_state(unit.source, unit.seed, unit.shuffled) if unit.kind == "pair" else None
            records, info, _ = self._train_and_score(target, target_sample, state, unit.seed, brief=True)
        info["seconds"] = round(time.perf_counter() - started, 1)
        n = self.cfg.source_n if unit.kind == "source" else unit.size or self.cfg.target_n
        outputs = [VariantRecords(unit.variant, target.template.name, n, unit.seed, records)]
        self.store.put_unit(unit.key(self.name, self.cfg), outputs, info)

    def _source_state(self, task: str, seed: int, shuffled: bool = False) -> list[torch.Tensor]:
        """A's trained state (shuffled: the shuffled-answer source's): from its file, or trained again
        (deterministic) if the file is gone."""
        from safetensors.torch import load_file

        path = self._state_path(task, seed, shuffled)
        if not path.is_file():
            t, n, target_n = self.task(task), self.cfg.source_n, self.cfg.target_n
            sample = t.shuffled_sample(n, target_n, seed) if shuffled else t.samples(n, target_n, seed)[0]
            _, _, state = self._train_and_score(t, sample, None, seed, brief=False, score=False)
            self._save_state(task, seed, state, shuffled)
        tensors = load_file(str(path))
        return [tensors[f"p{i}"] for i in range(len(tensors))]

    def _state_path(self, task: str, seed: int, shuffled: bool) -> Path:
        name = f"{task}{SHUFFLED}" if shuffled else task
        return state_path(self.cfg.out, self.name, self.variant, name, self.cfg.source_n, seed)

    def _save_state(self, task: str, seed: int, state: list[torch.Tensor], shuffled: bool = False) -> None:
        from safetensors.torch import save_file

        path = self._state_path(task, seed, shuffled)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        save_file({f"p{i}": t.contiguous() for i, t in enumerate(state)}, str(partial))
        partial.replace(path)  # a state file is complete or absent

    def _train_and_score(
        self,
        task: TransferTask,
        sample: list[Example],
        start: list[torch.Tensor] | None,
        seed: int,
        brief: bool,
        score: bool = True,
    ) -> tuple[list[Record], dict, list[torch.Tensor]]:
        """Train from `start` (None: the untrained state) on `sample` and score the task's eval set.

        The long source phase holds out a quarter of its sample for early stopping and the kept state; the brief
        target phase runs `target_steps` on all of its few examples and keeps the last state."""
        cfg = self.cfg
        if brief:
            preset = replace(
                self.preset, max_steps=cfg.target_steps, learning_rate=cfg.target_lr or self.preset.learning_rate
            )
            fit, held = sample, []
        else:
            preset = replace(self.preset, max_steps=cfg.source_steps, eval_every=cfg.source_eval_every)
            fit, held = split_holdout(sample, preset.holdout, seed)
        evals = task.eval_examples if score else []
        run = train_and_score(
            self.model,
            self.tokenizer,
            cfg.method,
            self.variant,
            preset,
            task.template,
            task.spec,
            fit,
            held,
            evals,
            seed,
            start,
        )
        info = {
            "trained_params": run.n_params,
            "n_fit": len(fit),
            "n_holdout": len(held),
            "steps_run": run.result.steps_run,
            "best_step": run.result.best_step,
            "train_seconds": round(run.result.seconds, 1),
            "eval_seconds": round(run.eval_seconds, 1),
        }
        if held:
            info |= {"holdout_loss": run.result.holdout_loss, "holdout_curve": run.result.curve}
        return run.records, info, run.state
