"""Weak-to-strong results from a `harness w2s` store: scores, the performance gap recovered and its verdict.

Scores are accuracy on val, per example averaged over the seeds all sides ran. The performance gap recovered
(Burns et al. 2023) is PGR = (weak-to-strong - weak) / (strong ceiling - weak), computed replicate by replicate on
one set of bootstrap resamples of the val examples, so its interval is paired. It is undefined, with the reason,
unless the ceiling beats the best constant answer and the weak model significantly (paired bootstrap, p <
SIGNIFICANCE): a gap that may be zero cannot be recovered in part. Reads the store only (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.decompose import SIGNIFICANCE, Ratio, beats, ratio
from harness.markdown import p_text
from harness.metrics import Estimate, Resampler, correct_vector, difference, p_value
from harness.store import Record, Store, UnitName

KIND = "w2s"  # meta["kind"] of a w2s store, and meta[KIND] its settings
METHOD = "probe"  # the ecological method both models train (the store's method column)
WEAK, W2S, CEILING, WEAK_LABELS = "weak", "w2s", "ceiling", "weak-labels"  # unit variants


def confidence_variant(alpha: float) -> str:
    """The variant of a weak-to-strong unit trained with the auxiliary confidence loss of weight alpha."""
    return f"{W2S}-conf{alpha:g}"


@dataclass
class GapRecovered:
    """One weak-to-strong comparison on one task: the three scores, the best constant, and PGR (None: undefined)."""

    weak: Estimate
    w2s: Estimate
    ceiling: Estimate
    constant: Estimate
    pgr: Ratio | None
    why_undefined: str = ""

    @property
    def n(self) -> int:
        return self.weak.n


def best_constant(gold: np.ndarray, rs: Resampler) -> Estimate:
    """The accuracy of giving one label to every example, for the label that scores best (ties: the lowest)."""
    scores = [rs.mean((gold == c).astype(np.float64)) for c in sorted(set(gold.tolist()))]
    return max(scores, key=lambda e: e.value)


def gap_recovered(
    weak: np.ndarray, w2s: np.ndarray, ceiling: np.ndarray, gold: np.ndarray, rs: Resampler
) -> GapRecovered:
    """PGR from per-example correctness (0/1, or a mean over seeds) of the three sides and the gold labels."""
    e_weak, e_w2s, e_ceiling = rs.mean(weak), rs.mean(w2s), rs.mean(ceiling)
    constant = best_constant(gold, rs)
    result = GapRecovered(e_weak, e_w2s, e_ceiling, constant, None)
    for floor, name in ((constant, "the best constant answer"), (e_weak, "the weak model")):
        if not beats(e_ceiling, floor):
            result.why_undefined = (
                f"the strong ceiling ({_pct(e_ceiling)}) is not significantly above {name} ({_pct(floor)}; paired "
                f"{p_text(p_value(difference(e_ceiling, floor)))}) at n={e_ceiling.n}"
            )
            return result
    found = ratio(difference(e_w2s, e_weak), difference(e_ceiling, e_weak), "the gap (ceiling - weak)")
    if found is None or found.estimate is None:
        result.why_undefined = found.why_undefined if found else "no gap"
        return result
    result.pgr = found
    return result


def _pct(e: Estimate) -> str:
    return f"{e.value * 100:.1f}%"


@dataclass
class TaskW2S:
    """One task of a w2s store: a comparison per weak-to-strong variant (plain, with the confidence loss)."""

    task: str
    gaps: dict[str, GapRecovered] = field(default_factory=dict)  # variant -> comparison
    gap_seeds: dict[str, list[int]] = field(default_factory=dict)  # variant -> the seeds its comparison averages
    weak_label_acc: list[float] = field(default_factory=list)  # per seed: accuracy of the weak labels on B
    n_labelled: int = 0  # examples of B (per seed)
    alphas: dict[str, float] = field(default_factory=dict)  # variant -> confidence-loss weight
    unsettled: dict[str, list[int]] = field(default_factory=dict)  # variant -> seeds whose rounds did not converge


def load(store: Store) -> list[TaskW2S]:
    """Every task of the store with all three sides stored for at least one common seed."""
    s = store.get_meta(KIND) or {}
    weak_model, strong_model = s.get("weak"), s.get("strong")
    out = []
    for task in store.get_meta("tasks") or []:
        weak = _by_variant(store.records(weak_model, task)) if weak_model else {}
        strong = _by_variant(store.records(strong_model, task)) if strong_model else {}
        weak_seeds = set(weak.get(WEAK, {})) & set(strong.get(CEILING, {}))
        variants = sorted(v for v in strong if v == W2S or v.startswith(W2S + "-"))
        result = TaskW2S(task)
        for variant in variants:
            seeds = sorted(weak_seeds & set(strong[variant]))
            if not seeds:
                continue
            result.gap_seeds[variant] = seeds
            first = weak[WEAK][seeds[0]]
            rs = Resampler([r.group for r in first])
            gold = np.array([r.gold[0] for r in first])
            result.gaps[variant] = gap_recovered(
                _seed_mean(weak[WEAK], seeds), _seed_mean(strong[variant], seeds),
                _seed_mean(strong[CEILING], seeds), gold, rs,
            )  # fmt: skip
        labels = weak.get(WEAK_LABELS, {})
        result.weak_label_acc = [float(correct_vector(labels[s]).mean()) for s in sorted(labels)]
        result.n_labelled = len(next(iter(labels.values()))) if labels else 0
        for (method, unit), info in store.unit_infos(strong_model, task).items() if strong_model else []:
            if method == METHOD and "confidence_loss" in info:
                name = UnitName.parse(unit)
                result.alphas[name.variant] = info["confidence_loss"]
                if not info.get("converged", True):
                    result.unsettled.setdefault(name.variant, []).append(name.seed)
        out.append(result)
    return out


def _by_variant(records: dict[tuple, list[Record]]) -> dict[str, dict[int, list[Record]]]:
    """variant -> seed -> records (sorted by example id) of the store's probe units."""
    out: dict[str, dict[int, list[Record]]] = {}
    for (method, variant, _, _, seed), recs in records.items():
        if method == METHOD:
            out.setdefault(variant, {})[seed] = recs
    return out


def _seed_mean(by_seed: dict[int, list[Record]], seeds: list[int]) -> np.ndarray:
    return np.mean([correct_vector(by_seed[s]) for s in seeds], axis=0)


def verdict(gap: GapRecovered) -> str:
    """One line: PGR with its interval and where weak-to-strong sits between the weak model and the ceiling, or
    why PGR is undefined."""
    if gap.pgr is None:
        return f"PGR undefined: {gap.why_undefined}"
    e = gap.pgr.estimate
    lo, hi = e.ci
    interval = (
        f" [{lo * 100:.0f}, {hi * 100:.0f}]"
        if gap.pgr.interval
        else " (no interval: the gap is near 0 in too many resamples)"
    )
    over_weak = difference(gap.w2s, gap.weak)
    under_ceiling = difference(gap.ceiling, gap.w2s)
    return (
        f"weak-to-strong recovers {e.value * 100:.0f}%{interval} of the gap: {_side(over_weak, 'above', 'below')} the "
        f"weak model ({p_text(p_value(over_weak))}) and {_side(under_ceiling, 'below', 'above')} the strong ceiling "
        f"({p_text(p_value(under_ceiling))}), n={gap.n}"
    )


def _side(d: Estimate, positive: str, negative: str) -> str:
    if p_value(d) >= SIGNIFICANCE:
        return "not distinguishable from"
    return f"significantly {positive if d.value > 0 else negative}"
