"""Across sizes: how each rung of the decomposition changes with log10(parameters), with bootstrap intervals.

Every model of a store is scored on the same examples and each task's bootstrap resamples are seeded by the
example set alone, so replicate b is the same resample for every model: a slope fitted per replicate gives the
slope's interval, and differences of slopes are paired. The headline is slope(best prompt) - slope(ecological):
how much faster prompt scores grow with size than what the model can do once trained, i.e. the upward bias of a
prompt-based scaling estimate.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from harness.decompose import Decomposition, inconclusive_reason
from harness.metrics import Estimate, difference

# (name, how to read it off a decomposition); the order is the report's
QUANTITIES: list[tuple[str, Callable[[Decomposition], Estimate | None]]] = [
    ("control", lambda d: d.control),
    ("zero-shot mean", lambda d: d.zero_mean),
    ("few-shot mean", lambda d: d.few_mean),
    ("best prompt", lambda d: d.best_prompt.estimate if d.best_prompt else None),
    ("ecological", lambda d: d.ecological.estimate if d.ecological else None),
    ("elicitation gap", lambda d: d.elicitation_gap),
    ("attempt k=0", lambda d: d.attempts["zero-shot"][0] if "zero-shot" in d.attempts else None),
    ("task recognition", lambda d: d.task_recognition),
    ("task learning", lambda d: d.task_learning),
]
HEADLINE = ("best prompt", "ecological")
# Shown only where abstract-label demos ran (not a default variant), so a store without them renders as before.
RECOGNITION = ("task recognition", "task learning")


@dataclass
class Point:
    model: str
    params: int
    estimate: Estimate


def slope(points: list[Point]) -> Estimate | None:
    """Least-squares slope of the value against log10(parameters), per bootstrap replicate too; None with fewer
    than two distinct sizes."""
    x = np.log10([p.params for p in points])
    if len(points) < 2 or np.ptp(x) == 0:
        return None
    xc = x - x.mean()
    weights = xc / (xc**2).sum()
    value = float(weights @ np.array([p.estimate.value for p in points]))
    samples = weights @ np.stack([p.estimate.samples for p in points])
    return Estimate(value, samples, min(p.estimate.n for p in points))


def family(model: str) -> str:
    """The model family: the name without its size suffix (smollm2-135m -> smollm2, qwen2.5-coder-1.5b -> qwen2.5-coder)."""
    name = model.rstrip("/").split("/")[-1].lower()
    return re.sub(r"[-_]?\d+(\.\d+)?[mbk]$", "", name) or name


@dataclass
class TaskScaling:
    task: str
    points: dict[str, list[Point]]  # quantity -> a point per model that has it
    slopes: dict[str, Estimate | None]
    headline: Estimate | None  # slope(best prompt) - slope(ecological), over the valid models only
    valid_models: list[str]  # models whose rung is valid here (both sides beat the best constant, converged)
    n_models: int  # models with this task


def task_scaling(task: str, per_model: list[tuple[str, int, Decomposition]]) -> TaskScaling:
    points: dict[str, list[Point]] = {}
    for name, read in QUANTITIES:
        found = [(m, p, read(d)) for m, p, d in per_model]
        points[name] = [Point(m, p, e) for m, p, e in found if e is not None and not math.isnan(e.value)]
    slopes = {name: slope(points[name]) for name, _ in QUANTITIES}
    # The headline is read only where the comparison is valid: a model whose best prompt or ecological score does
    # not beat the best constant answer, or whose trained unit did not converge, says nothing about either slope.
    valid = [m for m, _, d in per_model if inconclusive_reason(d) is None]
    headline = None
    prompt_points = [p for p in points[HEADLINE[0]] if p.model in valid]
    ecological_points = [p for p in points[HEADLINE[1]] if p.model in valid]
    if {p.model for p in prompt_points} == {p.model for p in ecological_points}:  # the same models on both sides
        headline = difference(slope(prompt_points), slope(ecological_points))
    return TaskScaling(task, points, slopes, headline, valid, len(per_model))
