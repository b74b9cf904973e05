"""From stored records to the tidy summary: per-unit metrics, baselines and aggregates over templates and seeds.

Reads only records (the one language of all methods), never a model.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.catalog import find_task, remember
from harness.design import median_and_best
from harness.methods import RANDOM_INIT_SUFFIX, is_control_task, is_random_init
from harness.metrics import Estimate, Resampler, baselines, difference, mean_estimate, unit_metrics
from harness.store import Record, Store
from harness.tasks import TaskSpec

COLUMNS = [
    "model",
    "params",
    "task",
    "method",
    "variant",
    "shots",
    "template",
    "seed",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n",
]
ALL = "all"  # template/seed value of rows aggregated over templates or seeds
# template values of rows aggregated over templates (median and best: a sampled design's, harness/design.py)
AGGREGATES = ("mean", "min", "max", "spread", "median", "best")
SEED_RESAMPLE_SEED = 7  # seeds drawn with replacement in each bootstrap replicate: intervals cover seeds too


@dataclass
class TaskResult:
    """Everything the report needs about one (model, task)."""

    model: str
    task: str
    info: dict
    rows: list[dict]
    estimates: dict[tuple, Estimate]  # (method, variant, shots, template, seed, metric) -> estimate
    unit_infos: dict[tuple[str, str], dict] = field(default_factory=dict)  # (method, unit key) -> stored info
    design: str = "full"  # the prompt design (harness/design.py): sampled, a template's scores are over a share


def _row(model, params, task, method, variant, shots, template, seed, metric, est: Estimate) -> dict:
    lo, hi = est.ci
    return dict(
        model=model,
        params=params,
        task=task,
        method=method,
        variant=variant,
        shots=shots,
        template=template,
        seed=seed,
        metric=metric,
        value=est.value,
        ci_low=lo,
        ci_high=hi,
        n=est.n,
    )


def _mean_over_seeds(estimates: list[Estimate]) -> Estimate:
    """Mean over seeds whose interval covers seeds as well as examples: each bootstrap replicate averages a
    draw of the seeds with replacement, each seed's replicate being the same example resample."""
    if len(estimates) == 1:
        return estimates[0]
    plain = mean_estimate(estimates)
    samples = np.stack([e.samples for e in estimates])  # (seeds, B)
    rng = np.random.default_rng(SEED_RESAMPLE_SEED)
    draws = rng.integers(0, len(estimates), size=(len(estimates), samples.shape[1]))
    picked = np.take_along_axis(samples, draws, axis=0)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Estimate(plain.value, np.nanmean(picked, axis=0), plain.n)


def analyse_task(store: Store, model: str, params: int, task: str) -> TaskResult | None:
    info = store.task_info(model, task) or {}
    if "task" in info:  # the spec as it was run (older stores: the task files of today)
        remember(TaskSpec.from_info(task, info["task"]))
    units = store.records(model, task)
    if not units:
        return TaskResult(model, task, info, [], {})
    spec = find_task(task)
    n_classes = len(spec.labels) if spec else 0
    official = set(spec.metrics) if spec else set()
    # The reference records (golds for baselines, the example set): any unit whose labels are the task's own.
    # (A control task's labels are a permutation of the task's, so its label counts would do as well.)
    first: list[Record] = next(
        (recs for (_, variant, *_), recs in units.items() if not is_control_task(variant)),
        next(iter(units.values())),
    )
    sampled = (store.get_meta("design") or {}).get("design") == "sampled"
    if sampled:  # a prompt unit scored a share of the examples: the eval set is all of them together
        merged = {
            r.example_id: r for (_, variant, *_), recs in units.items() if not is_control_task(variant) for r in recs
        }
        first = [merged[i] for i in sorted(merged)]
    ids = [r.example_id for r in first]
    rs = Resampler([r.group for r in first])
    position = {i: n for n, i in enumerate(ids)}
    est: dict[tuple, Estimate] = {}
    rows: list[dict] = []

    def add(method, variant, shots, template, seed, metrics: dict[str, Estimate]):
        for metric, e in metrics.items():
            est[(method, variant, shots, template, seed, metric)] = e
            rows.append(_row(model, params, task, method, variant, shots, template, seed, metric, e))

    for kind, metrics in baselines(task, first, rs, n_classes).items():
        add("baseline", kind, 0, "-", "-", metrics)

    # per unit
    per_unit: dict[tuple, dict[str, Estimate]] = {}
    for (method, variant, template, shots, seed), records in units.items():
        unit_rs = rs
        if [r.example_id for r in records] != ids:
            if not sampled:
                continue  # a unit over another example set cannot be compared (the store guards against this)
            # the design's share of the examples, on the same replicates (harness/design.py)
            keep = np.zeros(len(ids), dtype=bool)
            keep[[position[r.example_id] for r in records]] = True
            unit_rs = rs.subset(keep)
        metrics = unit_metrics(task, variant, records, unit_rs, n_classes)
        per_unit[(method, variant, template, shots, seed)] = metrics
        add(method, variant, shots, template, seed, metrics)

    # aggregates: per template over seeds, then over templates (mean, min, max, spread)
    groups: dict[tuple, dict[str, list[dict[str, Estimate]]]] = defaultdict(lambda: defaultdict(list))
    for (method, variant, template, shots, _seed), metrics in per_unit.items():
        groups[(method, variant, shots)][template].append(metrics)
    for (method, variant, shots), by_template in sorted(groups.items()):
        template_means = {
            t: {m: _mean_over_seeds([u[m] for u in seeds]) for m in seeds[0]}
            for t, seeds in sorted(by_template.items())
        }
        if any(len(seeds) > 1 for seeds in by_template.values()):
            for t, metrics in template_means.items():
                add(method, variant, shots, t, ALL, metrics)
        names = set.intersection(*(set(m) for m in template_means.values()))
        mean = {m: mean_estimate([tm[m] for tm in template_means.values()]) for m in sorted(names)}
        if sampled:  # the design's estimates over templates, each over every example of the eval set
            n = len(rs.group_names)
            mean = {m: Estimate(e.value, e.samples, n) for m, e in mean.items()}
            for m in sorted(names & official):
                median, best = median_and_best([tm[m] for tm in template_means.values()], n)
                add(method, variant, shots, "median", ALL, {m: median})
                add(method, variant, shots, "best", ALL, {m: best})
        add(method, variant, shots, "mean", ALL, mean)
        if len(template_means) > 1:
            # Extremes over templates, for the official metrics only. No interval: a percentile bootstrap
            # of a max or min is biased and can exclude the estimate itself.
            for m in sorted(names & official):
                values = {t: tm[m] for t, tm in template_means.items()}
                lo_t = min(values, key=lambda t: values[t].value)
                hi_t = max(values, key=lambda t: values[t].value)
                no_ci = np.full(len(rs.group_weights), np.nan)
                n = values[lo_t].n
                add(method, variant, shots, "min", ALL, {m: Estimate(values[lo_t].value, no_ci, n)})
                add(method, variant, shots, "max", ALL, {m: Estimate(values[hi_t].value, no_ci, n)})
                add(
                    method,
                    variant,
                    shots,
                    "spread",
                    ALL,
                    {m: Estimate(values[hi_t].value - values[lo_t].value, no_ci, n)},
                )
    # selectivity of each trained method: its score minus its random-init baseline's, the same method on the
    # re-initialised model (paired over examples: the same bootstrap resamples). The permuted-label control
    # task is at chance by construction, so it is no baseline: its rows stay, under `<variant>-control`, as a
    # sanity check only.
    for (method, variant, shots, template, seed, metric), e in list(est.items()):
        if is_control_task(variant) or is_random_init(variant):
            continue
        base = est.get((method, variant + RANDOM_INIT_SUFFIX, shots, template, seed, metric))
        if template == "mean" and metric in official and base is not None:
            add(method, variant, shots, template, seed, {f"selectivity_{metric}": difference(e, base)})
    return TaskResult(model, task, info, rows, est, store.unit_infos(model, task), "sampled" if sampled else "full")


def analyse(store: Store) -> tuple[pd.DataFrame, list[TaskResult]]:
    results = []
    for model, params, _ in store.models():
        for task in store.tasks(model):
            result = analyse_task(store, model, params, task)
            if result is not None:
                results.append(result)
    rows = [row for r in results for row in r.rows]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame, results
