"""A sampled template design: each eval example is scored under a seeded, balanced subset of the templates.

The full design scores every example under every template: templates x examples forward passes per (k, seed). The
sampled design gives each example about `share` x T of the T templates, and each template about `share` x n of the
n examples, so a run costs about `share` of the full grid's forward passes. What it estimates, from the
(examples x templates) score matrix with the unscored cells missing:

- each template's mean over the examples it was given: unbiased for that template's full-grid mean, because the
  examples a template gets are a uniformly random subset of the eval set (a seeded permutation of the examples);
- the mean over templates (the mean of those template means): unbiased for the full grid's mean over templates;
- the median template (the median of the template means): not linear in the cells, so not exactly unbiased, but
  little affected (on RTE at share 0.25, its mean error over designs was within 0.02 of the full grid's median);
- the best template. The maximum of the template means (`best_plugin`) carries a winner's curse: the maximum of
  noisy template means is biased upward, by about as much as the noise of each template mean lets one of them
  stand out. Each template mean rests on about share x n examples instead of n, so the sampled design's maximum is
  biased upward more than the full grid's (on RTE at share 0.25: +0.03 to +0.04 accuracy, and its interval
  covered the full grid's best in only 60-72% of designs). `best` removes the bootstrap's estimate of that bias
  (2 x maximum - the mean of the replicates' maxima) and takes the basic bootstrap interval (the replicates
  reflected about the maximum): on RTE its error averaged under 0.005, with coverage 0.91-0.92, at a larger
  spread. It is a first-order correction, not an unbiased estimator.

Intervals come from a bootstrap over examples that keeps each example's assignment (a resampled example brings
its scored templates with it), on the same resamples as every other estimate of the eval set (`Resampler`), so the
variance of the design (which templates an example happened to get) is in the interval together with the variance
of the examples. This is the simpler estimator the issue allows instead of PromptEval (Polo et al. 2024), whose IRT
model borrows strength across templates and examples; the mean here needs no model and is unbiased by design.

Pure numpy: no model, no torch. Tests: tests/test_design.py; validation on a real full grid:
benchmarks/sampled_design.py.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.errors import HarnessError
from harness.metrics import Estimate, Resampler

DESIGNS = ("full", "sampled")


def templates_per_example(n_examples: int, n_templates: int, share: float) -> float:
    """The mean number of templates an example gets: share x T, at least 1 (every example is scored)."""
    return max(n_examples, round(share * n_examples * n_templates)) / n_examples


def assign(n_examples: int, n_templates: int, share: float, seed: int | str) -> np.ndarray:
    """A balanced, seeded assignment: an (n_examples, n_templates) boolean matrix, True where a cell is scored.

    The cells scored in all are round(share x n x T) (at least n). Every example gets floor or ceil of their mean
    per example (so at least one template, and no template twice); every template gets floor or ceil of their mean
    per template. How: examples in a seeded random order take consecutive slots of a cycle through the templates in
    a seeded random order. `share` = 1 is the full grid."""
    if not 0 < share <= 1:
        raise HarnessError(f"--template-share must be in (0, 1], got {share}")
    if n_examples < 1 or n_templates < 1:
        raise HarnessError("a design needs at least one example and one template")
    rng = random.Random(f"design/{seed}")
    examples = list(range(n_examples))
    rng.shuffle(examples)
    templates = list(range(n_templates))
    rng.shuffle(templates)
    cells = max(n_examples, round(share * n_examples * n_templates))
    base, extra = divmod(cells, n_examples)
    mask = np.zeros((n_examples, n_templates), dtype=bool)
    slot = 0
    for position, i in enumerate(examples):
        m = base + (1 if position < extra else 0)
        for r in range(m):
            mask[i, templates[(slot + r) % n_templates]] = True
        slot += m
    return mask


def assigned_examples(
    example_ids: Sequence[str], templates: Sequence[str], share: float, seed: int | str
) -> dict[str, list[str]]:
    """Template name -> the ids of the examples it scores, in the given order (the caller's eval-set order).

    The assignment depends on the number of examples and templates, their order, `share` and `seed` only."""
    mask = assign(len(example_ids), len(templates), share, seed)
    return {t: [e for e, keep in zip(example_ids, mask[:, j]) if keep] for j, t in enumerate(templates)}


@dataclass
class TemplateEstimates:
    """What a design estimates from one score matrix: each template's mean, and over templates their mean, median
    and best (bias-corrected maximum; `best_plugin`: the plain maximum), each an `Estimate` on the resampler's
    replicates. See the module docstring for their bias."""

    per_template: list[Estimate]
    mean: Estimate
    median: Estimate
    best: Estimate
    best_plugin: Estimate


def estimate(scores: np.ndarray, scored: np.ndarray, rs: Resampler) -> TemplateEstimates:
    """Estimates over templates from `scores` (n_examples, n_templates) where `scored` (same shape, bool) holds.

    Unscored cells are ignored whatever they hold. The bootstrap keeps each example's row of `scored`, so the
    design's variance is in every interval. With every cell scored this is the full grid's estimate, and `mean` is
    the mean over templates of each template's mean over examples, on the same replicates."""
    scores = np.asarray(scores, dtype=np.float64)
    scored = np.asarray(scored, dtype=bool)
    if scores.shape != scored.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and scored {scored.shape} must be one (examples, templates) shape")
    if scores.shape[0] != len(rs.group_of):
        raise ValueError(f"{scores.shape[0]} examples but a resampler over {len(rs.group_of)}")
    if not scored.any(axis=0).all():
        raise ValueError("every template needs at least one scored example")
    m = scored.astype(np.float64)
    y = np.where(scored, scores, 0.0)
    values = (y * m).sum(axis=0) / m.sum(axis=0)  # (T,)
    with np.errstate(invalid="ignore", divide="ignore"):
        samples = (rs.example_weights @ (y * m)) / (rs.example_weights @ m)  # (B, T); NaN: a template resampled away
    n = len(rs.group_names)
    per_template = [Estimate(float(values[t]), samples[:, t], int(scored[:, t].sum())) for t in range(len(values))]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with every template resampled away
        mean = Estimate(float(np.mean(values)), np.nanmean(samples, axis=1), n)
    median, best = median_and_best(per_template, n)
    return TemplateEstimates(per_template, mean, median, best, _over_templates(per_template, np.nanmax, n))


def _over_templates(per_template: Sequence[Estimate], fn, n: int) -> Estimate:
    values = np.array([e.value for e in per_template])
    samples = np.stack([e.samples for e in per_template], axis=1)  # (B, T)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return Estimate(float(fn(values)), fn(samples, axis=1), n)


def median_and_best(per_template: Sequence[Estimate], n: int) -> tuple[Estimate, Estimate]:
    """The median template and the best template (corrected for the winner's curse: see the module docstring) from
    each template's estimate on shared replicates; `n` is the eval set's size."""
    median = _over_templates(per_template, np.nanmedian, n)
    plain = _over_templates(per_template, np.nanmax, n)
    # the winner's curse, corrected to first order: the replicates' maxima exceed the maximum by about as much as
    # the maximum exceeds the best template's value; reflecting them about the maximum gives the basic interval
    reflected = 2 * plain.value - plain.samples
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return median, Estimate(float(np.nanmean(reflected)), reflected, n)
