"""Metrics over records, with bootstrap intervals.

All units of a (model, task) are scored on the same examples, so one matrix of bootstrap weights (how often each
metric group is drawn in each resample) serves them all: aggregates such as the mean over templates get their
interval from the same resamples, paired over examples.
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from harness.catalog import find_task
from harness.registry import Registry
from harness.store import Record
from harness.tasks import TaskSpec

N_BOOTSTRAP = 1000
BOOTSTRAP_SEED = 20241122
# A resampled difference this close to 0 is a tie: where both sides are constant predictors, many resampled
# differences are 0 in exact arithmetic, and float summation order alone would otherwise decide their sign.
TIE_TOLERANCE = 1e-9
Z_95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion: never zero-width at n > 0, inside [0, 1] (Wilson 1927)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass(frozen=True)
class MetricInput:
    """What a metric reads: one unit's records (or the task's records under a constant answer), the predicted
    choice of each (None where answers are generated or read), the bootstrap weights over the records' metric
    groups, the task's number of labels, and its spec (None for a task the catalog does not know)."""

    records: list[Record]
    pred: np.ndarray | None
    rs: Resampler
    n_classes: int
    task: TaskSpec | None = None


MetricFn = Callable[[MetricInput], "dict[str, Estimate]"]


@dataclass(frozen=True)
class Metric:
    """A metric as task files name it.

    `compute` gives {stored name: Estimate}, usually its own name alone. `answers`: the answer kinds
    (TaskSpec.answer) it scores. `chance`: the expected score of guessing uniformly among each example's choices
    (the chance baseline), where it has one. `of_predictions`: computed from the predicted choice, so a constant
    answer (the majority and best-constant baselines) has it too; False where it reads the choice scores
    themselves (acc_norm). `texts`: compares answer texts, not choice ids: a task naming it keeps its answers'
    texts and is scored by them (ReCoRD)."""

    name: str
    description: str
    answers: tuple[str, ...]
    compute: MetricFn
    chance: MetricFn | None = None
    of_predictions: bool = True
    texts: bool = False


# Metrics by name, as task files list them (`metrics: [...]`); the first a task lists is its headline metric. Each
# is computed from the per-example scores over answer choices (or the generated text), whichever method produced
# them. Registration order is the order a unit's metrics are computed and stored in.
METRICS: Registry[Metric] = Registry("metric", "metrics")


def register_metric(
    name: str,
    description: str,
    answers: tuple[str, ...] = ("choice",),
    chance: MetricFn | None = None,
    of_predictions: bool = True,
    texts: bool = False,
) -> Callable[[MetricFn], MetricFn]:
    """Register the decorated function as metric `name`: (MetricInput) -> {stored name: Estimate}."""

    def add(compute: MetricFn) -> MetricFn:
        METRICS.register(name, Metric(name, description, answers, compute, chance, of_predictions, texts))
        return compute

    return add


def _text_answers(task: str) -> bool:
    """Scored by comparing answer texts (token F1 and EM), not choice ids: ReCoRD's entities."""
    return texts_compared(find_task(task))


def texts_compared(spec: TaskSpec | None) -> bool:
    """A task names a metric that compares answer texts (ReCoRD's F1): its answers are scored as texts."""
    return spec is not None and any(name in METRICS and METRICS[name].texts for name in spec.metrics)


def main_metric(task: str) -> str:
    """The headline metric of a task: its first official one (MultiRC F1a, ReCoRD F1, exact match of generated
    answers), else accuracy."""
    spec = find_task(task)
    return spec.metrics[0] if spec else "acc"


def generated_correct(record: Record, task: TaskSpec | None = None) -> bool:
    """Exact match of a generated answer: the output (cut at its stop string), spaces stripped, equals the gold.

    A task with `exact_match` options (an lm-eval task) compares as lm-eval's exact_match does: nothing stripped,
    after removing `regexes_to_ignore` and, where asked, case, punctuation and digits from both sides.
    """
    if record.generated is None:
        return False
    gold = (record.gold_texts or [""])[0]
    if task is None or task.exact_match is None:
        return record.generated.strip() == gold.strip()
    return _lm_eval_normal(record.generated, task.exact_match) == _lm_eval_normal(gold, task.exact_match)


def _lm_eval_normal(text: str, options: dict) -> str:
    """A text as lm-eval 0.4.13's exact_match compares it (lm_eval/api/metrics.py exact_match_hf_evaluate)."""
    for pattern in options.get("regexes_to_ignore") or []:
        text = re.sub(pattern, "", text)
    if options.get("ignore_case"):
        text = text.lower()
    if options.get("ignore_punctuation"):
        text = text.translate(str.maketrans("", "", string.punctuation))
    if options.get("ignore_numbers"):
        text = text.translate(str.maketrans("", "", string.digits))
    return text.rstrip("\x00")  # numpy's string arrays, which lm-eval compares, drop trailing NULs


@dataclass
class Estimate:
    value: float
    samples: np.ndarray  # bootstrap replicates
    n: int  # metric groups (examples, or questions for MultiRC)
    proportion: bool = False  # a share of n independent 0/1 outcomes: its interval is Wilson's, not the bootstrap's

    @property
    def ci(self) -> tuple[float, float]:
        if self.proportion and self.n > 0:
            return wilson(round(self.value * self.n), self.n)
        ok = self.samples[~np.isnan(self.samples)]
        if not len(ok):
            return (float("nan"), float("nan"))
        lo, hi = np.percentile(ok, [2.5, 97.5])
        return float(lo), float(hi)


@overload
def difference(a: Estimate, b: Estimate) -> Estimate: ...
@overload
def difference(a: Estimate | None, b: Estimate | None) -> Estimate | None: ...
def difference(a: Estimate | None, b: Estimate | None) -> Estimate | None:
    """a - b, replicate by replicate; None when either is missing. Paired when both were computed on the same
    bootstrap resamples of the same examples; n is the smaller of the two."""
    if a is None or b is None:
        return None
    return Estimate(a.value - b.value, a.samples - b.samples, min(a.n, b.n))


def mean_estimate(estimates: Sequence[Estimate], same_examples: bool = True) -> Estimate:
    """The mean of estimates, replicate by replicate: replicate b averages every estimate's replicate b.

    A NaN value or replicate (a metric undefined there: accuracy when attempted, with no attempt) is left out of
    its mean. `same_examples`: all were scored on one example set, so n is theirs; False (tasks, pairs of tasks):
    n is their total. The mean of one estimate is that estimate (a single proportion keeps its Wilson interval).
    """
    if not estimates:
        raise ValueError("a mean of no estimates")
    if len(estimates) == 1:
        return estimates[0]
    values = np.array([e.value for e in estimates])
    samples = np.stack([e.samples for e in estimates])
    n = estimates[0].n if same_examples else sum(e.n for e in estimates)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate undefined in every estimate stays NaN
        return Estimate(float(np.nanmean(values)), np.nanmean(samples, axis=0), n)


def p_value(d: Estimate, tie_tolerance: float = TIE_TOLERANCE) -> float:
    """Two-sided bootstrap p-value of a difference: twice the smaller share of its replicates on one side of 0.

    A replicate within `tie_tolerance` of zero is a tie and counts on both sides, so the p-value does not depend
    on float summation order (the same on any machine); 0.0 counts exact zeros only."""
    s = d.samples[~np.isnan(d.samples)]
    if not len(s):
        return float("nan")
    tie = np.abs(s) <= tie_tolerance
    below, above = ((s < 0) | tie).mean(), ((s > 0) | tie).mean()
    return float(min(1.0, 2 * min(below, above)))


class Resampler:
    """Bootstrap weights over the metric groups of one example set."""

    def __init__(self, groups: list[str], n: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED):
        self.group_names = sorted(set(groups))
        index = {g: i for i, g in enumerate(self.group_names)}
        self.group_of = np.array([index[g] for g in groups])
        g = len(self.group_names)
        rng = np.random.default_rng(seed)
        self.group_weights = rng.multinomial(g, np.full(g, 1.0 / g), size=n).astype(np.float64)  # (B, G)
        self.example_weights = self.group_weights[:, self.group_of]  # (B, N)

    def subset(self, keep: np.ndarray) -> Resampler:
        """The same replicates restricted to the examples where `keep` holds (whole groups): an estimate over a
        subset of the examples (a template under a sampled design) stays paired with those over all of them."""
        sub = object.__new__(Resampler)
        groups = np.unique(self.group_of[keep])
        sub.group_names = [self.group_names[g] for g in groups]
        sub.group_of = np.searchsorted(groups, self.group_of[keep])
        sub.group_weights = self.group_weights[:, groups]
        sub.example_weights = self.example_weights[:, keep]
        return sub

    def mean(self, x: np.ndarray, mask: np.ndarray | None = None) -> Estimate:
        """Mean over examples (optionally of those where mask holds)."""
        x = x.astype(np.float64)
        m = np.ones_like(x) if mask is None else mask.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = float((x * m).sum() / m.sum()) if m.sum() else float("nan")
            samples = (self.example_weights @ (x * m)) / (self.example_weights @ m)
        # One example per group and 0/1 outcomes: a single proportion (grouped answers are not independent)
        proportion = len(self.group_names) == len(self.group_of) and bool(np.isin(x[m > 0], (0.0, 1.0)).all())
        return Estimate(value, samples, int(m.sum()) if mask is not None else len(self.group_names), proportion)

    def group_mean(self, per_group: np.ndarray) -> Estimate:
        value = float(per_group.mean())
        samples = self.group_weights @ per_group / self.group_weights.sum(axis=1)
        return Estimate(value, samples, len(per_group))

    def f1(self, pred: np.ndarray, gold: np.ndarray, positive: int) -> Estimate:
        tp, fp, fn = (
            ((pred == positive) & (gold == positive)),
            ((pred == positive) & (gold != positive)),
            ((pred != positive) & (gold == positive)),
        )

        def f1_of(t, p, n):
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(2 * t + p + n > 0, 2 * t / np.maximum(2 * t + p + n, 1e-12), 0.0)

        value = float(f1_of(tp.sum(), fp.sum(), fn.sum()))
        w = self.example_weights
        samples = f1_of(w @ tp, w @ fp, w @ fn)
        return Estimate(value, samples, len(self.group_names))

    def macro_f1(self, pred: np.ndarray, gold: np.ndarray, classes: int) -> Estimate:
        return mean_estimate([self.f1(pred, gold, c) for c in range(classes)])

    def median(self, x: np.ndarray) -> Estimate:
        value = float(np.median(x))
        counts = self.example_weights.astype(np.int64)
        order = np.argsort(x)
        xs, cs = x[order], counts[:, order]
        cum = np.cumsum(cs, axis=1)
        half = cum[:, -1] / 2.0
        # weighted median: first element whose cumulative count reaches half (lower median)
        idx = (cum < half[:, None]).sum(axis=1)
        samples = xs[np.minimum(idx, len(xs) - 1)].astype(np.float64)
        return Estimate(value, samples, len(x))


# ---------------------------------------------------------------- SQuAD-style token F1 / EM (ReCoRD's official metric)
def _normalize_answer(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def token_f1(prediction: str, gold: str) -> float:
    p, g = _normalize_answer(prediction).split(), _normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if not p or not g:
        return float(p == g)
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(_normalize_answer(prediction) == _normalize_answer(gold))


# ---------------------------------------------------------------- per-unit metrics
def predictions(records: list[Record], normalise: bool = False) -> np.ndarray:
    """Arg-max choice per record; `normalise` divides by the choice's length in characters (lm-eval's acc_norm)."""
    out = []
    for r in records:
        scores = np.array(r.logprobs)
        if normalise and r.n_chars:
            scores = scores / np.maximum(np.array(r.n_chars), 1)
        out.append(int(np.argmax(scores)))
    return np.array(out)


def choice_ranks(records: list[Record]) -> np.ndarray:
    """Each record's gold rank among its answer choices, from its scores (`logprobs`): 1 + the choices scored
    higher + those tied with it that come before it, so ties go as the arg-max breaks them and the share at rank 1
    is accuracy. With several gold choices, the best-ranked one."""
    out = []
    for r in records:
        s = np.asarray(r.logprobs, dtype=np.float64)
        out.append(min(int((s > s[g]).sum() + (s[:g] == s[g]).sum()) + 1 for g in r.gold))
    return np.array(out, dtype=np.int64)


def frequency_ranks(tokens: list[str]) -> list[tuple[float, int | None]]:
    """The frequency baseline of a list read line by line (`tokens`: each line's first token, in order): at line n,
    the first tokens of lines 1..n-1 ranked by how often they occurred, ties the most recent first (a copy of the
    line before when nothing repeats). Per line: (its token's share of the lines before it, the token's rank in
    that ranking; None where it has not occurred yet, a miss at any rank). It reads only the list, so it can win
    or lose against a model: a control, not chance."""
    out: list[tuple[float, int | None]] = []
    seen: dict[str, tuple[int, int]] = {}  # token -> (count, last line)
    for n, token in enumerate(tokens):
        if token in seen:
            ahead = sum(1 for other in seen.values() if other > seen[token])
            out.append((seen[token][0] / n, ahead + 1))
        else:
            out.append((0.0, None))
        seen[token] = (seen.get(token, (0, 0))[0] + 1, n)
    return out


def correct(records: list[Record], pred: np.ndarray) -> np.ndarray:
    return np.array([p in r.gold for p, r in zip(pred, records)], dtype=np.float64)


def correct_vector(records: list[Record], task: TaskSpec | None = None) -> np.ndarray:
    """1.0 where an example is right: exact match of a generated answer (`generated_correct`, as `task` compares
    answers), else the arg-max choice is gold."""
    if records and records[0].generated is not None:
        return np.array([generated_correct(r, task) for r in records], dtype=np.float64)
    return correct(records, predictions(records))


def accuracy(records: list[Record], task: TaskSpec | None = None) -> float:
    """The share of records that are right (`correct_vector`), without an interval: a train-side score."""
    return float(np.mean(correct_vector(records, task)))


def expected_f1(positives: int, negatives: int, p: float) -> float:
    """Exact expected F1 of the positive class when each example is called positive with probability p,
    independently: TP ~ Bin(positives, p), FP ~ Bin(negatives, p), F1 = 2TP / (TP + FP + positives)."""
    from scipy.stats import binom

    if positives == 0:
        return 0.0  # no true positive can ever be found (F1 is 0 whenever it is defined)
    tp = np.arange(positives + 1)
    fp = np.arange(negatives + 1)
    joint = np.outer(binom.pmf(tp, positives, p), binom.pmf(fp, negatives, p))
    f1 = 2 * tp[:, None] / (tp[:, None] + fp[None, :] + positives)
    return float((joint * f1).sum())


# ---------------------------------------------------------------- the metrics task files name, in the order stored
def _fixed(value: float, rs: Resampler) -> Estimate:
    """A number computed exactly, not estimated: every bootstrap replicate is the value itself."""
    return Estimate(value, np.full(rs.group_weights.shape[0], value), len(rs.group_names))


def _golds(records: list[Record]) -> np.ndarray:
    return np.array([r.gold[0] for r in records])


def _hit_chance(records: list[Record]) -> np.ndarray:
    """Each example's chance of a gold answer when guessing uniformly among its choices."""
    n_choices = np.array([len(r.logprobs) for r in records], dtype=np.float64)
    return np.array([len(r.gold) for r in records]) / n_choices


def _best_over_golds(given: MetricInput, score: Callable[[str, str], float]) -> np.ndarray:
    """Per example: the predicted choice's text scored against its best-matching gold text."""
    out = []
    for r, p in zip(given.records, given.pred):
        predicted = r.choice_texts[p] if r.choice_texts else ""
        out.append(max(score(predicted, g) for g in r.gold_texts or [""]))
    return np.array(out)


def _mean_over_choices(given: MetricInput, score: Callable[[str, str], float]) -> np.ndarray:
    """Per example: the mean over its choices of each one's text scored against the best-matching gold text."""
    out = []
    for r in given.records:
        golds = r.gold_texts or [""]
        out.append(np.mean([max(score(c, g) for g in golds) for c in r.choice_texts or [""]]))
    return np.array(out)


def _acc_chance(given: MetricInput) -> dict[str, Estimate]:
    return {"acc": given.rs.mean(_hit_chance(given.records))}


@register_metric("acc", "accuracy: the arg-max choice is a gold one", chance=_acc_chance)
def _acc(given: MetricInput) -> dict[str, Estimate]:
    return {"acc": given.rs.mean(correct(given.records, given.pred))}


@register_metric(
    "acc_norm",
    "accuracy with each choice's log-likelihood divided by its length in characters (lm-eval's)",
    of_predictions=False,
)
def _acc_norm(given: MetricInput) -> dict[str, Estimate]:
    return {"acc_norm": given.rs.mean(correct(given.records, predictions(given.records, normalise=True)))}


def _macro_f1_chance(given: MetricInput) -> dict[str, Estimate]:
    """Exact expectation under binomial guessing: each label's F1 with p = 1 / choices, averaged over labels."""
    gold, k = _golds(given.records), len(given.records[0].logprobs)
    per_label = [expected_f1(int((gold == c).sum()), int((gold != c).sum()), 1 / k) for c in range(given.n_classes)]
    return {"macro_f1": _fixed(float(np.mean(per_label)), given.rs)}


@register_metric("macro_f1", "the mean over labels of each label's F1", chance=_macro_f1_chance)
def _macro_f1(given: MetricInput) -> dict[str, Estimate]:
    return {"macro_f1": given.rs.macro_f1(given.pred, _golds(given.records), given.n_classes)}


def _f1a_chance(given: MetricInput) -> dict[str, Estimate]:
    """Exact expectation of the positive label's F1 when each answer is called positive with p = 1/2."""
    gold = _golds(given.records)
    return {"f1a": _fixed(expected_f1(int((gold == 1).sum()), int((gold != 1).sum()), 0.5), given.rs)}


@register_metric("f1a", "F1 of the positive label over all answers (MultiRC's F1a)", chance=_f1a_chance)
def _f1a(given: MetricInput) -> dict[str, Estimate]:
    return {"f1a": given.rs.f1(given.pred, _golds(given.records), positive=1)}


def _f1_chance(given: MetricInput) -> dict[str, Estimate]:
    return {"f1": given.rs.mean(_mean_over_choices(given, token_f1))}


@register_metric(
    "f1", "SQuAD-style token F1 of the chosen answer text against the best gold (ReCoRD)", chance=_f1_chance, texts=True
)
def _f1(given: MetricInput) -> dict[str, Estimate]:
    return {"f1": given.rs.mean(_best_over_golds(given, token_f1))}


def _em_chance(given: MetricInput) -> dict[str, Estimate]:
    if texts_compared(given.task):
        return {"em": given.rs.mean(_mean_over_choices(given, exact_match))}
    # a group's answers all right: the product over its answers of each one's chance
    per_group = np.ones(len(given.rs.group_names))
    for g, h in zip(given.rs.group_of, _hit_chance(given.records)):
        per_group[g] *= h
    return {"em": given.rs.group_mean(per_group)}


@register_metric(
    "em",
    "exact match: a generated answer equals the gold; a grouped task's questions with every answer right; "
    "with f1, the SQuAD-normalised match of an answer text",
    answers=("choice", "generate"),
    chance=_em_chance,
)
def _em(given: MetricInput) -> dict[str, Estimate]:
    if given.pred is None:  # generated answers
        hit = np.array([generated_correct(r, given.task) for r in given.records], dtype=np.float64)
        return {"em": given.rs.mean(hit)}
    if texts_compared(given.task):
        return {"em": given.rs.mean(_best_over_golds(given, exact_match))}
    per_group = np.ones(len(given.rs.group_names))
    for g, h in zip(given.rs.group_of, correct(given.records, given.pred)):
        per_group[g] = min(per_group[g], h)
    return {"em": given.rs.group_mean(per_group)}


def _ranks(given: MetricInput) -> np.ndarray:
    return np.array([r.gold_rank for r in given.records], dtype=np.float64)


@register_metric("top1", "a list's next line: the correct first token ranks first", answers=("read",))
def _top1(given: MetricInput) -> dict[str, Estimate]:
    return {"top1": given.rs.mean((_ranks(given) == 1).astype(np.float64))}


@register_metric("top10", "a list's next line: the correct first token is in the top 10", answers=("read",))
def _top10(given: MetricInput) -> dict[str, Estimate]:
    return {"top10": given.rs.mean((_ranks(given) <= 10).astype(np.float64))}


@register_metric("p_correct", "a list's next line: the probability of the correct first token", answers=("read",))
def _p_correct(given: MetricInput) -> dict[str, Estimate]:
    return {"p_correct": given.rs.mean(np.exp(np.array([r.logprobs[0] for r in given.records])))}


def frequency_scores(records: list[Record], rs: Resampler) -> dict[str, Estimate]:
    """The frequency baseline (`frequency_ranks`) of a list's records, in line order: top-1 and top-10 hit rates and
    the mean share its ranking gives the correct first token (`p_correct`), with the records' resamples."""
    found = frequency_ranks([(r.choice_texts or [""])[0] for r in records])
    ranks = np.array([np.inf if rank is None else rank for _, rank in found])
    return {
        "top1": rs.mean((ranks == 1).astype(np.float64)),
        "top10": rs.mean((ranks <= 10).astype(np.float64)),
        "p_correct": rs.mean(np.array([p for p, _ in found])),
    }


DEFAULT_METRICS = {"choice": ("acc",), "generate": ("em",), "read": ("top1",)}  # a task the catalog does not know


def named_metrics(given: MetricInput, answer: str, use: Callable[[Metric], MetricFn | None]) -> dict[str, Estimate]:
    """The metrics the task names (each checked against the registry) that score `answer`s, each computed by
    `use(metric)` (its `compute` or its `chance`; None: not this one), in registration order: the stored order does
    not depend on the order a task file lists them in."""
    spec = given.task
    names = spec.metrics if spec else DEFAULT_METRICS[answer]
    wanted = {METRICS.get(name, f"task {spec.name}" if spec else "").name for name in names}
    out: dict[str, Estimate] = {}
    for name, metric in METRICS.items():
        fn = use(metric)
        if name in wanted and answer in metric.answers and fn is not None:
            out.update(fn(given))
    return out


def task_metrics(
    task: str, records: list[Record], pred: np.ndarray, rs: Resampler, n_classes: int
) -> dict[str, Estimate]:
    """The metrics a task names for one set of predicted choices (a unit's, or a constant answer's)."""
    given = MetricInput(records, pred, rs, n_classes, find_task(task))
    return named_metrics(given, "choice", lambda m: m.compute if m.of_predictions else None)


def diagnostics(records: list[Record], pred: np.ndarray, rs: Resampler) -> dict[str, Estimate]:
    """Did the model attempt the task (mass on valid first tokens), and how well when it did."""
    if not records or records[0].valid_mass is None:
        return {}
    hit = correct(records, pred)
    top1 = np.array([bool(r.top1_valid) for r in records])
    ranks = np.array([r.gold_rank if r.gold_rank is not None else np.nan for r in records], dtype=np.float64)
    out = {
        "attempt_rate": rs.mean(np.array([r.valid_mass for r in records])),
        "top1_valid": rs.mean(top1.astype(np.float64)),
        "acc_when_attempted": rs.mean(hit, mask=top1),
    }
    if not np.isnan(ranks).any():
        out["median_gold_rank"] = rs.median(ranks)
    return out


def generated_diagnostics(spec: TaskSpec | None, records: list[Record], rs: Resampler) -> dict[str, Estimate]:
    """The attempt rate (a well-formed answer: a number, a list of numbers) and exact match when attempted; the
    gold answer's mean log-likelihood (nats) and median first-token rank."""
    pattern = re.compile(spec.answer_pattern if spec and spec.answer_pattern else r".+")
    hit = np.array([generated_correct(r, spec) for r in records], dtype=np.float64)
    formed = np.array([bool(pattern.fullmatch((r.generated or "").strip())) for r in records])
    out = {
        "attempt_rate": rs.mean(formed.astype(np.float64)),
        "top1_valid": rs.mean(formed.astype(np.float64)),
        "acc_when_attempted": rs.mean(hit, mask=formed),
        "gold_logprob": rs.mean(np.array([r.logprobs[0] for r in records])),
    }
    ranks = [r.gold_rank for r in records]
    if None not in ranks:
        out["median_gold_rank"] = rs.median(np.array(ranks, dtype=np.float64))
    return out


def unit_metrics(task: str, variant: str, records: list[Record], rs: Resampler, n_classes: int) -> dict[str, Estimate]:
    """Everything stored for one unit: the metrics its task names, then the diagnostics its answers allow (a
    list read off the next-token distribution: the correct token's median rank; generated answers:
    `generated_diagnostics`; choices: acc_norm where the answers' lengths are kept, and `diagnostics`)."""
    spec = find_task(task)
    compute = lambda m: m.compute  # noqa: E731
    if spec is not None and spec.answer == "read":
        out = named_metrics(MetricInput(records, None, rs, n_classes, spec), "read", compute)
        out["median_gold_rank"] = rs.median(np.array([r.gold_rank for r in records], dtype=np.float64))
        return out
    if records and records[0].generated is not None:
        out = named_metrics(MetricInput(records, None, rs, n_classes, spec), "generate", compute)
        return out | generated_diagnostics(spec, records, rs)
    pred = predictions(records)
    out = task_metrics(task, records, pred, rs, n_classes)
    if variant != "calibrated" and records and records[0].n_chars and not texts_compared(spec):
        out.update(METRICS["acc_norm"].compute(MetricInput(records, pred, rs, n_classes, spec)))
    out.update(diagnostics(records, pred, rs))
    return out


def chance_scores(task: str, records: list[Record], rs: Resampler, n_classes: int) -> dict[str, Estimate]:
    """The expected score of guessing uniformly among each example's choices, computed, not sampled: each named
    metric's `chance`.

    Accuracy (and ReCoRD's F1/EM, a mean over examples): the mean over examples of each one's expectation, so it
    has resampled values like any mean. MultiRC's F1 over answers and CB's macro-F1 are exact expectations under
    binomial guessing (one class's F1 with p = 1 / choices), a fixed number with no interval.
    """
    given = MetricInput(records, None, rs, n_classes, find_task(task))
    return named_metrics(given, "choice", lambda m: m.chance)


def baselines(task: str, records: list[Record], rs: Resampler, n_classes: int) -> dict[str, dict[str, Estimate]]:
    """Chance (the expected score of uniform random guessing, computed: `chance_scores`), majority-label scores,
    and the best constant answer: the one choice that, given for every example, scores best on the task's main
    metric. For accuracy that is the majority label; for MultiRC's F1 over answers it is "yes" to every answer,
    which a prompt that only ever says yes matches.

    A generated answer has no fixed set to guess from: its chance score is taken as 0 and it has no majority.
    """
    spec = find_task(task)
    if spec is not None and spec.answer == "read":
        # a uniform guess over the vocabulary scores about 0 and there is no label to be a majority; what a list's
        # own repeats give is the control: the frequency baseline, on the first tokens as the model split them
        return {"frequency": frequency_scores(records, rs)}
    if records and records[0].generated is not None:
        zero = Estimate(0.0, np.zeros(rs.group_weights.shape[0]), len(rs.group_names))
        return {"chance": {main_metric(task): zero}}
    chance = chance_scores(task, records, rs, n_classes)
    out = {"chance": chance}
    if not _text_answers(task):
        labels = Counter(r.gold[0] for r in records if r.gold)
        majority = labels.most_common(1)[0][0]
        constants = {c: task_metrics(task, records, np.full(len(records), c), rs, n_classes) for c in sorted(labels)}
        out["majority"] = constants[majority]
        main = main_metric(task)
        out["constant"] = max(constants.values(), key=lambda metrics: metrics[main].value)  # ties: the lowest label
    return out
