"""The sampled template design (harness/design.py) on simulated score matrices: balance, unbiasedness of the mean
over templates, and coverage of its intervals. No model."""

from __future__ import annotations

import numpy as np
import pytest

from harness.design import assign, assigned_examples, estimate, templates_per_example
from harness.errors import HarnessError
from harness.metrics import Resampler


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("n, t, share", [(277, 7, 0.25), (100, 8, 0.25), (56, 10, 0.5), (30, 4, 0.1), (9, 3, 1.0)])
def test_assignment_is_balanced(n, t, share):
    mask = assign(n, t, share, seed=3)
    per_example, per_template = mask.sum(axis=1), mask.sum(axis=0)
    assert per_example.min() >= 1
    assert per_example.max() - per_example.min() <= 1
    assert per_template.max() - per_template.min() <= 1
    assert mask.sum() == max(n, round(share * n * t))
    assert mask.sum() / n == pytest.approx(templates_per_example(n, t, share))
    if share == 1.0:
        assert mask.all()


def test_assignment_is_seeded():
    assert (assign(50, 6, 0.25, seed=1) == assign(50, 6, 0.25, seed=1)).all()
    assert not (assign(50, 6, 0.25, seed=1) == assign(50, 6, 0.25, seed=2)).all()
    ids = [f"e{i}" for i in range(20)]
    by_template = assigned_examples(ids, ["a", "b", "c", "d"], 0.5, seed="rte")
    assert sorted(e for es in by_template.values() for e in es) == sorted(ids * 2)
    assert all(es == [e for e in ids if e in es] for es in by_template.values())


def test_assignment_rejects_bad_share():
    for share in (0.0, -0.1, 1.5):
        with pytest.raises(HarnessError, match="--template-share"):
            assign(10, 3, share, seed=0)


def test_full_design_is_the_grid_mean():
    """With every cell scored, the mean is each template's plain mean over examples, averaged; the replicates are
    the resampler's."""
    rng = np.random.default_rng(0)
    scores = (rng.random((40, 5)) < 0.6).astype(float)
    rs = Resampler([str(i) for i in range(40)], n=200)
    est = estimate(scores, np.ones_like(scores, dtype=bool), rs)
    assert est.mean.value == pytest.approx(scores.mean())
    per_template = [rs.mean(scores[:, t]) for t in range(5)]
    assert np.allclose(est.mean.samples, np.mean([p.samples for p in per_template], axis=0))
    assert est.best_plugin.value == pytest.approx(scores.mean(axis=0).max())
    assert est.median.value == pytest.approx(np.median(scores.mean(axis=0)))


def test_unscored_cells_are_ignored():
    rng = np.random.default_rng(1)
    scores = rng.random((30, 4))
    mask = assign(30, 4, 0.5, seed=0)
    rs = Resampler([str(i) for i in range(30)], n=100)
    poisoned = np.where(mask, scores, 1e9)
    assert estimate(poisoned, mask, rs).mean.value == pytest.approx(estimate(scores, mask, rs).mean.value)


def test_sampled_mean_is_unbiased_over_designs():
    """On one fixed score matrix, the mean over many design seeds of the sampled estimate is the full grid's mean
    over templates (templates differ a lot here, so a design that favoured some would show)."""
    rng = np.random.default_rng(2)
    n, t = 120, 7
    p = _sigmoid(np.linspace(-2, 2, t)[None, :] + rng.normal(0, 1, (n, 1)))
    scores = (rng.random((n, t)) < p).astype(float)
    truth = scores.mean(axis=0).mean()
    rs = Resampler([str(i) for i in range(n)], n=10)
    values = np.array([estimate(scores, assign(n, t, 0.25, seed=s), rs).mean.value for s in range(2000)])
    standard_error = values.std() / np.sqrt(len(values))
    assert abs(values.mean() - truth) < 4 * standard_error
    assert values.std() > 0  # the designs differ


def test_sampled_intervals_cover():
    """200 simulated eval sets (examples drawn from a population, 8 templates of different difficulty), each scored
    under a share-0.25 design: the 95% interval of the mean over templates covers the population's mean over
    templates near the nominal rate, and covers that eval set's full-grid mean at least as often (the full grid's
    value differs from the sampled one by the design's variance alone)."""
    rng = np.random.default_rng(3)
    n, t, sims = 200, 8, 200
    effects = np.linspace(-1.5, 1.5, t)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # E over a standard normal example difficulty
    population = float(np.mean([(weights * _sigmoid(a + nodes)).sum() / weights.sum() for a in effects]))
    rs = Resampler([str(i) for i in range(n)], n=1000, seed=11)
    cover_population = cover_grid = 0
    widths = []
    for s in range(sims):
        p = _sigmoid(effects[None, :] + rng.normal(0, 1, (n, 1)))
        scores = (rng.random((n, t)) < p).astype(float)
        est = estimate(scores, assign(n, t, 0.25, seed=s), rs).mean
        lo, hi = est.ci
        cover_population += lo <= population <= hi
        cover_grid += lo <= scores.mean() <= hi
        widths.append(hi - lo)
    assert 0.90 <= cover_population / sims <= 0.99
    assert cover_grid / sims >= 0.95
    assert 0.05 < np.mean(widths) < 0.2  # an interval, not the whole range


def test_best_template_correction_reduces_the_winners_curse():
    """Templates of equal difficulty: the maximum of sampled template means overstates the full grid's best template
    (each rests on a quarter of the examples); the corrected `best` is closer to it on average over designs."""
    rng = np.random.default_rng(4)
    n, t = 200, 8
    scores = (rng.random((n, t)) < _sigmoid(rng.normal(0, 1, (n, 1)))).astype(float)
    target = scores.mean(axis=0).max()
    rs = Resampler([str(i) for i in range(n)], n=500)
    runs = [estimate(scores, assign(n, t, 0.25, seed=s), rs) for s in range(200)]
    plugin = np.mean([e.best_plugin.value for e in runs]) - target
    corrected = np.mean([e.best.value for e in runs]) - target
    assert plugin > 0.02  # the curse is there to correct
    assert abs(corrected) < plugin / 2


def test_a_subset_resampler_gives_the_designs_template_estimates():
    """What `harness report` computes for a sampled store (each unit's metric on `Resampler.subset`, then the mean
    over templates) is the design's estimator, replicate by replicate."""
    rng = np.random.default_rng(5)
    n, t = 60, 5
    scores = (rng.random((n, t)) < 0.5).astype(float)
    mask = assign(n, t, 0.25, seed=9)
    rs = Resampler([str(i // 2) for i in range(n)], n=300)  # groups of two examples
    design = estimate(scores, mask, rs)
    for j in range(t):
        keep = mask[:, j]
        by_unit = rs.subset(keep).mean(scores[keep, j])
        assert by_unit.value == pytest.approx(design.per_template[j].value)
        assert np.allclose(by_unit.samples, design.per_template[j].samples, equal_nan=True)
