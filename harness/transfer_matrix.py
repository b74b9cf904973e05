"""The transfer matrix from a store: gains with bootstrap intervals, asymmetries, clustering, per-model summary.

Scores are per-example correctness (accuracy; exact match for generated answers), averaged over training seeds
per example first. Each target task has its own bootstrap resamples of its eval examples (seeded by the task's
name, the same for every model), so:
- gain(A -> B) = mean over B's examples of [score after A then B] - [score after B alone], paired over examples;
- an asymmetry gain(A -> B) - gain(B -> A) compares two independent example sets, replicate by replicate;
- a mean over pairs, or a difference between models, averages the replicates pair by pair.

Where B was also trained alone at several sizes (`--target-sizes`), the effective data transferred (Hernandez et
al. 2021) reads a cell in examples of B: D_T(A -> B) = the size at which B alone matches the score after A then B,
minus the D_F = target_n examples of B both were trained on (harness/data_equivalent.py: log-size interpolation,
first crossing), on B's same resamples.

Where each source was also trained on its answers shuffled (`--shuffled-sources`), the gain from shuffled A is the
format-only control, and transfer beyond format = gain(A) - gain(shuffled A), paired on B's same resamples.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from harness.data_equivalent import DataEquivalent, data_equivalent
from harness.metrics import BOOTSTRAP_SEED, Estimate, Resampler, correct_vector, difference
from harness.store import Record, Store

# What a `harness transfer` store holds (harness/transfer.py writes it, this module reads it):
METHOD = "transfer"  # the store's method column; the trained method is in meta["transfer"]
KIND = "transfer"  # meta["kind"]: `harness report` renders a transfer report for such a store
# --shuffled-sources: the source trained on A's sample with its answers shuffled is variant SHUFFLED_SOURCE, and
# B after it `from:A` + SHUFFLED
SHUFFLED = "~shuffled"
SHUFFLED_SOURCE = "source-shuffled"


@dataclass
class ModelTransfer:
    """One model's transfer results; tasks in run order. Missing cells (an unfinished run) are absent."""

    model: str
    params: int
    tasks: list[str]
    only: dict[str, Estimate] = field(default_factory=dict)  # score on B after training on B alone
    source: dict[str, Estimate] = field(default_factory=dict)  # score on A after the long training on A
    after: dict[tuple[str, str], Estimate] = field(default_factory=dict)  # (A, B): score on B after A then B
    gain: dict[tuple[str, str], Estimate] = field(default_factory=dict)  # (A, B): after - only, paired
    seeds: dict[str, int] = field(default_factory=dict)  # B -> training seeds in its `only` cell
    kept_steps: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # A -> (kept step, steps run) per seed
    target_n: int | None = None  # D_F: the examples of B in `only` and every pair
    curve: dict[str, dict[int, Estimate]] = field(default_factory=dict)  # B -> size -> score of B alone at that size
    transferred: dict[tuple[str, str], DataEquivalent] = field(default_factory=dict)  # (A, B): D_T, where B learns
    # B -> B alone's score at its largest size minus at its smallest, paired over B's eval examples: D_T is read off
    # B's curve only where this rise's interval is above 0 (a flat or falling curve matches any score at any size)
    rise: dict[str, Estimate] = field(default_factory=dict)
    # --shuffled-sources: A's score after training on its shuffled answers; the gain on B from that state; and
    # transfer beyond format = gain(A) - gain(shuffled A), paired over B's examples and the seeds of all three
    shuffled_source: dict[str, Estimate] = field(default_factory=dict)
    shuffled_gain: dict[tuple[str, str], Estimate] = field(default_factory=dict)
    beyond_format: dict[tuple[str, str], Estimate] = field(default_factory=dict)

    def untrained_sources(self) -> list[str]:
        """Sources whose every seed kept the untrained state (no held-out gain): their rows equal B alone."""
        return [a for a in self.tasks if self.kept_steps.get(a) and all(k == 0 for k, _ in self.kept_steps[a])]

    def learns(self, b: str) -> bool:
        """Does B alone score significantly more at its largest size than at its smallest? Only then does its curve
        convert a score into examples of B."""
        return b in self.rise and self.rise[b].ci[0] > 0

    def off_diagonal(self) -> list[tuple[str, str]]:
        return [(a, b) for (a, b) in self.gain if a != b]


def resampler(task: str, groups: list[str]) -> Resampler:
    """Bootstrap weights of one task's eval set: seeded by its name, so every model and pair reuses them."""
    return Resampler(groups, seed=BOOTSTRAP_SEED + zlib.crc32(task.encode()))


def gain_estimate(after: np.ndarray, only: np.ndarray, rs: Resampler) -> Estimate:
    """Mean paired difference (after - only) over the same examples, with its bootstrap replicates."""
    return rs.mean(after - only)


def asymmetries(result: ModelTransfer) -> list[tuple[str, str, Estimate]]:
    """(A, B, gain(A -> B) - gain(B -> A)) for every pair measured both ways, largest |difference| first; A -> B
    is the direction that gains more."""
    out = []
    for i, a in enumerate(result.tasks):
        for b in result.tasks[i + 1 :]:
            if (a, b) in result.gain and (b, a) in result.gain:
                d = difference(result.gain[(a, b)], result.gain[(b, a)])
                out.append((a, b, d) if d.value >= 0 else (b, a, difference(result.gain[(b, a)], result.gain[(a, b)])))
    return sorted(out, key=lambda t: (-abs(t[2].value), t[0], t[1]))


def gain_array(result: ModelTransfer) -> np.ndarray:
    """Gains as a (source, target) array in task order; NaN where a cell is missing."""
    g = np.full((len(result.tasks), len(result.tasks)), np.nan)
    for (a, b), e in result.gain.items():
        g[result.tasks.index(a), result.tasks.index(b)] = e.value
    return g


def cluster(tasks: list[str], gains: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Average-linkage clustering of tasks from the symmetric part of the gain matrix.

    Two tasks are close when they help each other: the distance is max(S) - S[i, j] over the off-diagonal cells
    of S = (G + G^T) / 2, so the pair with the largest mutual transfer merges first. Returns the scipy linkage
    matrix and the tasks in dendrogram order.
    """
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if len(tasks) < 2 or np.isnan(gains).any():
        raise ValueError("clustering needs a complete matrix of at least two tasks")
    sym = (gains + gains.T) / 2
    off = ~np.eye(len(tasks), dtype=bool)
    distance = np.where(off, sym[off].max() - sym, 0.0)
    link = linkage(squareform(distance, checks=False), method="average")
    return link, [tasks[i] for i in leaves_list(link)]


def load(store: Store) -> list[ModelTransfer]:
    """Every model's transfer results in the store."""
    order = store.get_meta("tasks") or []
    target_n = (store.get_meta("transfer") or {}).get("target_n")
    out = []
    for model, params, _ in store.models():
        tasks = [t for t in order if t in store.tasks(model)]
        result = ModelTransfer(model, params, tasks)
        by_variant: dict[str, dict[str, dict[int, list[Record]]]] = {}  # variant -> target -> seed -> records
        alone: dict[str, dict[int, dict[int, list[Record]]]] = {}  # target -> size -> seed -> B-alone records
        pair_sizes = set()
        for b in tasks:
            for (method, variant, _, size, seed), records in store.records(model, b).items():
                if method != METHOD:
                    continue
                if variant == "only":
                    alone.setdefault(b, {}).setdefault(size, {})[seed] = records
                else:
                    by_variant.setdefault(variant, {}).setdefault(b, {})[seed] = records
                    pair_sizes |= {size} if variant.startswith("from:") else set()
        sizes = {n for per_size in alone.values() for n in per_size}
        # D_F: the run's --target-n; a store without settings (made by hand): the pairs' size, else B alone's one
        result.target_n = target_n or min(pair_sizes or sizes or {0}) or None
        for b in tasks:
            infos = store.unit_infos(model, b)
            kept = [
                (i["best_step"], i["steps_run"])
                for (m, u), i in infos.items()
                if m == METHOD and u.startswith("source/")
            ]
            if kept:
                result.kept_steps[b] = kept
            only = alone.get(b, {}).get(result.target_n)  # type: ignore[arg-type]
            source = by_variant.get("source", {}).get(b)
            shuffled_source = by_variant.get(SHUFFLED_SOURCE, {}).get(b)
            reference = only or source or shuffled_source
            if reference is None:
                continue
            first = next(iter(reference.values()))
            rs = resampler(b, [r.group for r in first])
            if source:
                result.source[b] = rs.mean(_seed_mean(source))
            if shuffled_source:
                result.shuffled_source[b] = rs.mean(_seed_mean(shuffled_source))
            if not only:
                continue
            only_vec = _seed_mean(only)
            result.only[b], result.seeds[b] = rs.mean(only_vec), len(only)
            result.curve[b] = {n: rs.mean(_seed_mean(by_seed)) for n, by_seed in sorted(alone[b].items())}
            if len(result.curve[b]) > 1:
                sizes = sorted(result.curve[b])
                result.rise[b] = difference(result.curve[b][sizes[-1]], result.curve[b][sizes[0]])
            for a in tasks:
                after = by_variant.get(f"from:{a}", {}).get(b)
                seeds = sorted(set(after or ()) & set(only))
                if not seeds:
                    continue
                after_vec = _seed_mean({s: after[s] for s in seeds})
                paired_only = _seed_mean({s: only[s] for s in seeds})  # the same seeds on both sides
                result.after[(a, b)] = rs.mean(after_vec)
                result.gain[(a, b)] = gain_estimate(after_vec, paired_only, rs)
                if result.learns(b):
                    result.transferred[(a, b)] = effective_data(result.curve[b], result.after[(a, b)], result.target_n)
                _format_control(result, a, b, after, by_variant.get(f"from:{a}{SHUFFLED}", {}).get(b), only, rs)
        out.append(result)
    return out


def _format_control(
    result: ModelTransfer,
    a: str,
    b: str,
    after: dict[int, list[Record]],
    shuffled: dict[int, list[Record]] | None,
    only: dict[int, list[Record]],
    rs: Resampler,
) -> None:
    """The gain on B from shuffled A, and gain(A) - gain(shuffled A) = mean(after A - after shuffled A): B alone
    cancels when both gains pair the same seeds, so the difference is taken over the seeds all three ran."""
    seeds = sorted(set(shuffled or ()) & set(only))
    if not seeds:
        return
    result.shuffled_gain[(a, b)] = gain_estimate(
        _seed_mean({s: shuffled[s] for s in seeds}), _seed_mean({s: only[s] for s in seeds}), rs
    )
    common = sorted(set(seeds) & set(after))
    if common:
        result.beyond_format[(a, b)] = gain_estimate(
            _seed_mean({s: after[s] for s in common}), _seed_mean({s: shuffled[s] for s in common}), rs
        )


def effective_data(curve: dict[int, Estimate], after: Estimate, target_n: int | None) -> DataEquivalent:
    """D_T: the size at which B alone (`curve`: size -> score) first reaches the score after A then B, minus the
    target_n examples of B that both saw; negative where A hurts. Replicate by replicate on B's resamples."""
    sizes = sorted(curve)
    return data_equivalent(sizes, [curve[n] for n in sizes], after, offset=target_n or 0)


def _seed_mean(by_seed: dict[int, list[Record]]) -> np.ndarray:
    """Per-example correctness averaged over seeds (records of every seed are sorted by example id)."""
    return np.mean([correct_vector(by_seed[s]) for s in sorted(by_seed)], axis=0)
