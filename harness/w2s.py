"""`harness w2s`: weak-to-strong generalization (Burns et al. 2023), with the probe as each model's ecological method.

Per task and seed, the train split gives two disjoint, seeded, label-stratified samples: A (--weak-n) and B
(--strong-n). Four kinds of unit, each stored on its own (model, task, method `probe`, `variant/template/n<size>/s<seed>`),
so a rerun skips the stored ones:
- `weak` (weak model): a probe fit on A's gold labels, layer chosen by cross-validation on A; it scores val and
  labels B. Its scores on B are stored too, as variant `weak-labels` with B's gold, so the labels' accuracy is known.
  B is held out from A: the weak model labels examples it never trained on, as a supervisor would.
- `w2s` (strong model): the same probe fit on B with the weak labels (the weak model's predicted class), its layer
  chosen by cross-validation against those labels: no gold label of B is used.
- `w2s-conf<alpha>` (strong model, with --confidence-loss ALPHA): as `w2s`, with Burns et al.'s auxiliary confidence
  loss (harness/methods/confidence_loss.py) at the same layer.
- `ceiling` (strong model): the probe fit on B's gold labels: what the strong model reaches with good supervision.
All score the same val examples; harness/w2s_analysis.py computes the performance gap recovered from the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from harness.catalog import get_task, use_task_dirs
from harness.config import W2SConfig
from harness.errors import HarnessError, Interrupted
from harness.features import FeatureCache
from harness.loaders import DataSource, load_train, resolve_train_source
from harness.lock import writer_lock
from harness.methods.base import trained_template
from harness.methods.confidence_loss import confidence_fit_predict
from harness.methods.presets import check_overrides, load_preset
from harness.methods.probe import ProbePreset, choose_layer, features, fit_predict
from harness.methods.probing import class_records, preset_layers
from harness.progress import progress
from harness.prompts import load_prompts
from harness.store import Store, UnitKey, UnitName, VariantRecords, claim_for_command
from harness.tasks import Example, SampledTask, stratified_subset
from harness.w2s_analysis import CEILING, KIND, METHOD, W2S, WEAK, WEAK_LABELS, confidence_variant


class W2STask(SampledTask):
    def samples(self, weak_n: int, strong_n: int, seed: int) -> tuple[list[Example], list[Example]]:
        """(A, B) for one seed: seeded, label-stratified, disjoint metric groups."""
        return self.disjoint_samples(weak_n, strong_n, seed)


@dataclass(frozen=True)
class W2SUnit:
    variant: str  # weak | w2s | w2s-conf<alpha> | ceiling
    task: str
    seed: int

    @property
    def on_weak_model(self) -> bool:
        return self.variant == WEAK

    def key(self, cfg: W2SConfig, template: str) -> UnitKey:
        model, n = (cfg.weak, cfg.weak_n) if self.on_weak_model else (cfg.strong, cfg.strong_n)
        return UnitKey(model, self.task, METHOD, str(UnitName(self.variant, template, f"n{n}", self.seed)))


def validate(cfg: W2SConfig) -> None:
    """Check the options before any data, model or store is touched; each message names its flag."""
    from harness.models import check_model_name

    for flag, value in [("--weak", cfg.weak), ("--strong", cfg.strong)]:
        if not value.strip():
            raise HarnessError(f"{flag} is empty: give a short name (see `harness models`), a Hub id or a local path")
        check_model_name(value, flag)
    if _same_model(cfg.weak, cfg.strong):
        raise HarnessError(f"--weak and --strong name the same model ({cfg.strong}): weak-to-strong needs two models")
    for flag, value in [("--out", cfg.out), ("--data-dir", cfg.data_dir), ("--presets-dir", cfg.presets_dir)]:
        if value is not None and not value.strip():
            raise HarnessError(f"{flag} is empty: give a value or leave the option out")
    use_task_dirs(cfg.tasks_dirs)
    if cfg.method != METHOD:
        raise HarnessError(f"unknown method '{cfg.method}' (--method): w2s trains {METHOD} (linear probes) so far")
    if not cfg.tasks:
        raise HarnessError("--tasks is empty: give comma-separated task names (see `harness tasks`)")
    if len(set(cfg.tasks)) != len(cfg.tasks):
        raise HarnessError("--tasks lists a task twice")
    for flag, value, least in [("--weak-n", cfg.weak_n, 4), ("--strong-n", cfg.strong_n, 4), ("--seeds", cfg.seeds, 1)]:
        if value < least:
            raise HarnessError(f"{flag} must be at least {least}, not {value}")
    if cfg.limit is not None and cfg.limit < 1:
        raise HarnessError(f"--limit must be at least 1, not {cfg.limit}")
    if cfg.confidence_loss is not None and not 0 < cfg.confidence_loss < 1:
        raise HarnessError(f"--confidence-loss must be in (0, 1), not {cfg.confidence_loss}")
    check_overrides(cfg.overrides)


def _same_model(a: str, b: str) -> bool:
    """The same name, or two spellings of one local folder or file."""
    pa, pb = Path(a.strip()).expanduser(), Path(b.strip()).expanduser()
    return a.strip() == b.strip() or (pa.exists() and pb.exists() and pa.resolve() == pb.resolve())


def plan(cfg: W2SConfig, preset: ProbePreset) -> tuple[list[W2STask], DataSource]:
    """Load and check every task's data and template before a model is loaded."""
    data = DataSource.from_option(cfg.data_dir)
    source = resolve_train_source(cfg.train_set, data, cfg.fewglue_dir)
    tasks = []
    for name in cfg.tasks:
        spec = get_task(name)
        if not spec.labels or spec.generates:
            raise HarnessError(f"{spec.name} (--tasks): w2s probes for class labels; this task has none")
        if not data.has_split(spec, "val"):
            raise HarnessError(f"{spec.name} (--tasks): {data.missing(spec, 'val')}")
        task_source = source.for_task(spec, data)
        train = load_train(spec, task_source, data)
        if train is None:
            raise HarnessError(f"{spec.name} (--tasks): {task_source.describe(spec)} has no train split (--train-set)")
        available = len({e.group for e in train})
        if cfg.weak_n + cfg.strong_n > available:
            raise HarnessError(
                f"{spec.name}: --weak-n {cfg.weak_n} + --strong-n {cfg.strong_n} needs that many train examples "
                f"(the samples are disjoint); {task_source.describe(spec)} has {available}"
            )
        prompts = load_prompts(spec, cfg.prompts_dir)
        template = trained_template(spec, prompts, preset)
        eval_examples = stratified_subset(data.load(spec, "val"), cfg.limit, cfg.limit_seed)
        for example in eval_examples + train:
            template.render(example)  # a bad template fails now, naming its file, before a model loads
        tasks.append(W2STask(spec, template, eval_examples, train))
    return tasks, data


def settings(cfg: W2SConfig, preset: ProbePreset, data: DataSource) -> dict:
    """What a store's w2s results depend on: a rerun with other settings would mix incomparable numbers. The
    confidence loss is not among them: each alpha is a unit variant of its own, added to the store."""
    return {
        "weak": cfg.weak,
        "strong": cfg.strong,
        "method": cfg.method,
        "preset": preset.to_dict(),
        "weak_n": cfg.weak_n,
        "strong_n": cfg.strong_n,
        "limit": cfg.limit,
        "limit_seed": cfg.limit_seed,
        "data": data.describe(),
        "train_set": cfg.train_set,
    }


def units(cfg: W2SConfig, tasks: list[W2STask]) -> list[W2SUnit]:
    """Weak units first: every strong unit that learns from weak labels reads them from the store."""
    strong = [W2S, CEILING] + ([confidence_variant(cfg.confidence_loss)] if cfg.confidence_loss else [])
    names = [t.spec.name for t in tasks]
    return [W2SUnit(WEAK, t, s) for t in names for s in range(cfg.seeds)] + [
        W2SUnit(v, t, s) for t in names for s in range(cfg.seeds) for v in strong
    ]


def run_w2s(cfg: W2SConfig, console: Console, command: str) -> Path:
    """Run cfg's missing units into cfg.out, then render its report; returns the report's path. A store has one
    writer: while another live run holds cfg.out, this one is refused (HarnessError)."""
    validate(cfg)
    with writer_lock(cfg.out):
        return _run_w2s(cfg, console, command)


def _run_w2s(cfg: W2SConfig, console: Console, command: str) -> Path:
    from harness.report_w2s import render

    preset = load_preset(METHOD, cfg.presets_dir, cfg.overrides)
    tasks, data = plan(cfg, preset)
    store = Store(cfg.out)
    try:
        foreign = "holds results of another command; give `harness w2s` its own --out"
        claim_for_command(store, KIND, settings(cfg, preset, data), command, [t.spec.name for t in tasks], foreign)
        Runner(cfg, tasks, preset, store).run(console)
    finally:
        store.close()
    return render(cfg.out)


class Runner:
    """Runs the missing units: the weak model's first (it is loaded only if one is missing), then the strong's."""

    def __init__(self, cfg: W2SConfig, tasks: list[W2STask], preset: ProbePreset, store: Store):
        self.cfg, self.preset, self.store = cfg, preset, store
        self.tasks = {t.spec.name: t for t in tasks}
        self.cache = FeatureCache()

    def key(self, unit: W2SUnit) -> UnitKey:
        return unit.key(self.cfg, self.tasks[unit.task].template.name)

    def run(self, console: Console) -> None:
        planned = units(self.cfg, list(self.tasks.values()))
        todo = [u for u in planned if not self.store.has_unit(self.key(u))]
        if not todo:
            console.print(f"all {len(planned)} w2s units already stored in {self.store.path}")
            return
        if len(todo) < len(planned):
            console.print(f"resuming, {len(planned) - len(todo)} of {len(planned)} w2s units already stored")
        with progress(console, "units") as bar:
            job = bar.add_task("w2s", total=len(todo))
            try:
                for on_weak, model in ((True, self.cfg.weak), (False, self.cfg.strong)):
                    mine = [u for u in todo if u.on_weak_model == on_weak]
                    if not mine:
                        continue
                    name, engine = self._load(model)
                    for unit in mine:
                        bar.update(job, description=f"{name} · {unit.task} · {unit.variant} s{unit.seed}")
                        self.run_unit(unit, name, engine)
                        bar.advance(job)
                    del engine
            except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (harness.errors.Terminated): the unit in flight is dropped
                done = sum(self.store.has_unit(self.key(u)) for u in planned)
                raise Interrupted(
                    f"{done} of {len(planned)} w2s units are stored in {self.store.path}; rerun the same command to "
                    "resume"
                ) from None

    def _load(self, spec: str):
        from harness.engine import Engine
        from harness.models import load_model

        loaded = load_model(spec, self.cfg.device, self.cfg.dtype, self.cfg.trust_remote_code)
        self.store.put_model(loaded.name, loaded.params, loaded.store_info())
        for t in self.tasks.values():
            self.store.put_task(loaded.name, t.spec.name, {"n_eval": len(t.eval_examples), "template": t.template.name})
        return loaded.name, Engine(loaded.model, loaded.tokenizer)

    def _features(self, engine, model: str, task: W2STask, split: str, examples: list[Example]) -> np.ndarray:
        x, _ = features(self.cache, engine, model, task.spec.name, task.template, split, self.preset.pooling, examples)
        return x

    def run_unit(self, unit: W2SUnit, model: str, engine) -> None:
        started = time.perf_counter()
        task = self.tasks[unit.task]
        a, b = task.samples(self.cfg.weak_n, self.cfg.strong_n, unit.seed)
        sample = a if unit.on_weak_model else b
        x = self._features(engine, model, task, "train", sample)
        x_val = self._features(engine, model, task, "val", task.eval_examples)
        labels = self._labels(unit, task, sample)
        n_classes = len(task.spec.labels)
        layers = preset_layers(self.preset.layers, x.shape[1], METHOD, model)
        layer, cv_curve = choose_layer(self.preset, x, labels, [e.group for e in sample], unit.seed, n_classes, layers)
        info = {
            "model": model,
            "layer": layer,
            "layers": layers,
            "cv_curve": cv_curve,
            "n_fit": len(sample),
            "labels": "gold" if unit.variant in (WEAK, CEILING) else f"{self.cfg.weak}'s predictions",
        }
        if unit.variant.startswith(W2S + "-"):  # the confidence loss, at the layer the weak labels chose
            fit = confidence_fit_predict(
                x[:, layer], labels, x_val[:, layer], n_classes, self.cfg.confidence_loss, self.preset.C,
                self.preset.max_iter, self.preset.cv_folds,
            )  # fmt: skip
            val_logp = fit.log_proba
            info |= {"confidence_loss": self.cfg.confidence_loss, "rounds": fit.rounds, "converged": fit.converged}
            info["overruled_weak_labels"] = fit.overruled
        else:
            val_logp = fit_predict(self.preset, x[:, layer], labels, x_val[:, layer], n_classes)
        outputs = [
            VariantRecords(
                unit.variant, task.template.name, len(sample), unit.seed, class_records(task.eval_examples, val_logp)
            )
        ]
        if unit.on_weak_model:
            x_b = self._features(engine, model, task, "train", b)
            b_logp = fit_predict(self.preset, x[:, layer], labels, x_b[:, layer], n_classes)
            outputs.append(
                VariantRecords(WEAK_LABELS, task.template.name, len(sample), unit.seed, class_records(b, b_logp))
            )
            info["weak_label_acc"] = float((b_logp.argmax(1) == np.array([e.label for e in b])).mean())
        info["seconds"] = round(time.perf_counter() - started, 1)
        self.store.put_unit(self.key(unit), outputs, info)

    def _labels(self, unit: W2SUnit, task: W2STask, sample: list[Example]) -> np.ndarray:
        """Gold labels for the weak model and the ceiling; the weak model's predicted classes on B (from the store)
        for the units that learn from it."""
        if unit.variant in (WEAK, CEILING):
            return np.array([e.label for e in sample])
        weak = self.store.records(self.cfg.weak, unit.task)
        by_id = {
            r.example_id: int(np.argmax(r.logprobs))
            for (method, variant, _, _, seed), records in weak.items()
            if method == METHOD and variant == WEAK_LABELS and seed == unit.seed
            for r in records
        }
        missing = [e.id for e in sample if e.id not in by_id]
        if missing:
            raise HarnessError(
                f"{self.store.path}: the weak labels of {unit.task} seed {unit.seed} lack {len(missing)} examples of "
                "B (a store from another train split?); use another --out"
            )
        return np.array([by_id[e.id] for e in sample])
