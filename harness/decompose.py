"""Guess vs do: split a (model, task)'s prompt score into what naming the task, the demos and training add.

Ladder: chance -> control prompt -> zero-shot -> few-shot -> ecological (the best trained method). Beside it, after
Pan et al. 2023, task recognition (random-label few-shot - zero-shot) and task learning (abstract-label few-shot -
chance), where those variants ran. Every choice
of a "best" (template, k, method) is made on train data: prompt units carry their accuracy on train examples
outside their demos (`selection` in the unit info), trained units their held-out or cross-validated train
accuracy. Eval data only scores. All estimates of a task share one set of bootstrap resamples, so differences
are paired over examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.analysis import AGGREGATES, ALL, TaskResult
from harness.methods import TRAINED_METHODS, is_control_task, is_random_init
from harness.metrics import Estimate, difference, main_metric, p_value
from harness.store import UnitName

# A ratio is undefined, not a huge number, when its denominator is under 2 points or its interval holds 0; and
# undefined when the denominator is negative: a share of a loss (demos that lower the score) reads as its opposite.
MIN_DENOMINATOR = 0.02
MAX_UNDEFINED_REPLICATES = 0.05  # a ratio's interval needs its denominator defined in 95% of the resamples


@dataclass
class Choice:
    """A configuration picked on train: its eval score, what it is, and the train score that picked it."""

    estimate: Estimate
    label: str
    train_score: float
    key: tuple  # (variant, k, template) of a prompt; (method, variant, train n) of a trained method


@dataclass
class Ratio:
    """A share; `estimate` is None unless the denominator is positive and clear of 0 (`why_undefined` then says
    what it is, in points)."""

    estimate: Estimate | None
    why_undefined: str = ""
    interval: bool = True  # False when too many resamples have a near-zero denominator
    denominator: Estimate | None = None


@dataclass
class Decomposition:
    task: str
    metric: str
    few: int | None  # the largest k run
    chance: Estimate | None = None
    majority: Estimate | None = None
    constant: Estimate | None = None  # the best score of giving one answer to every example
    control: Estimate | None = None
    zero_mean: Estimate | None = None
    few_mean: Estimate | None = None
    calibrated_zero: Estimate | None = None
    calibrated_few: Estimate | None = None
    random_labels_few: Estimate | None = None
    abstract_labels_few: Estimate | None = None  # gold demo labels shown as symbols, the query scored on them
    task_recognition: Estimate | None = None  # random-label few-shot - zero-shot (Pan et al. 2023's TR, as a gain)
    task_learning: Estimate | None = None  # abstract-label few-shot - chance (their TL, as a gain over guessing)
    zero_selected: Choice | None = None
    few_selected: Choice | None = None
    best_prompt: Choice | None = None
    ecological: Choice | None = None
    elicitation_gap: Estimate | None = None
    guess_share: Ratio | None = None
    demo_format_share: Ratio | None = None
    spread_zero: Estimate | None = None  # best - worst template at k=0 (no interval)
    spread_share_of_gap: Ratio | None = None
    attempts: dict[str, tuple[Estimate | None, Estimate | None]] = field(default_factory=dict)  # variant -> (rate, acc)
    ecological_converged: bool | None = None  # every seed of the ecological unit converged; None: not iterative
    ecological_capped: list[str] = field(default_factory=list)  # trained units of this task that hit their cap
    zero_templates: tuple[str, ...] = ()  # the gold templates scored at k=0: what `zero_mean` averages over

    @property
    def floor(self) -> Estimate | None:
        """What a score must beat to say anything: the best constant answer, else chance (generated answers)."""
        return self.constant if self.constant is not None else self.chance


SIGNIFICANCE = 0.05


def beats(score: Estimate | None, baseline: Estimate | None) -> bool:
    """Is the score significantly above the baseline (paired bootstrap, p < SIGNIFICANCE)? False when either is
    missing: a baseline that was not computed is not beaten."""
    gap = difference(score, baseline)
    return gap is not None and gap.value > 0 and p_value(gap) < SIGNIFICANCE


def inconclusive_reason(d: Decomposition) -> str | None:
    """Why no verdict can be read off this task's elicitation gap; None when one can.

    A verdict needs both the best prompt and the ecological method to significantly beat the best constant
    answer, and the ecological unit to have converged (a unit stopped by its step or time cap measured the budget,
    not the ceiling)."""
    if d.elicitation_gap is None:
        return "no elicitation gap (needs prompt train scores and a trained method)"
    n = d.elicitation_gap.n
    if d.floor is None:
        return "no best constant answer to beat"
    if d.ecological_converged is False:
        return "ecological unit hit its step or time cap (not converged)"
    weak = weak_rungs(d)
    if weak:
        return f"{' and '.join(weak)} not above the best constant answer at n={n}"
    return None


def weak_rungs(d: Decomposition) -> list[str]:
    """Which of the best prompt and the ecological method do not significantly beat the best constant answer."""
    return [
        name
        for name, choice in (("best prompt", d.best_prompt), ("ecological", d.ecological))
        if choice is None or not beats(choice.estimate, d.floor)
    ]


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), in the order given."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdicts(decompositions: list[Decomposition]) -> dict[str, str]:
    """task -> understates / overstates / same / inconclusive, for the tasks with a measured gap.

    Among the conclusive tasks the gaps' p-values are Holm-corrected together (one family per model), so a count
    of significant verdicts across tasks holds at the 5% family-wise level."""
    out: dict[str, str] = {}
    conclusive = []
    for d in decompositions:
        if d.elicitation_gap is None:
            continue
        if inconclusive_reason(d) is not None:
            out[d.task] = "inconclusive"
        else:
            conclusive.append(d)
    for d, p in zip(conclusive, holm([p_value(d.elicitation_gap) for d in conclusive])):  # type: ignore[arg-type]
        if p >= SIGNIFICANCE:
            out[d.task] = "same"
        else:
            out[d.task] = "understates" if d.elicitation_gap.value > 0 else "overstates"  # type: ignore[union-attr]
    return out


def ratio(num: Estimate | None, den: Estimate | None, den_name: str) -> Ratio | None:
    if num is None or den is None:
        return None
    lo, hi = den.ci
    if den.value < MIN_DENOMINATOR or lo <= 0:
        shown = f"{den.value * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}] points"
        return Ratio(None, f"{den_name} is {shown}, not positive and clear of 0", denominator=den)
    with np.errstate(invalid="ignore", divide="ignore"):
        defined = den.samples >= MIN_DENOMINATOR
        samples = np.where(defined, num.samples / np.where(defined, den.samples, 1.0), np.nan)
    interval = bool(defined.mean() >= 1 - MAX_UNDEFINED_REPLICATES)
    return Ratio(Estimate(num.value / den.value, samples, num.n), interval=interval, denominator=den)


def _template_estimate(result: TaskResult, variant: str, k: int, template: str, metric: str) -> Estimate | None:
    """A template's score, averaged over demo seeds where there are several."""
    e = result.estimates.get(("prompt", variant, k, template, ALL, metric))
    return e if e is not None else result.estimates.get(("prompt", variant, k, template, 0, metric))


def _template_mean(result: TaskResult, variant: str, k: int, metric: str) -> Estimate | None:
    """The analysis's mean over templates (and seeds) of a prompt variant at k."""
    return result.estimates.get(("prompt", variant, k, "mean", ALL, metric))


def _prompt_train_scores(result: TaskResult) -> dict[tuple[str, int, str], float]:
    """(variant, k, template) -> train accuracy (mean over seeds) of the gold and calibrated prompts."""
    sums: dict[tuple[str, int, str], list[float]] = {}
    for (method, key), info in result.unit_infos.items():
        selection = info.get("selection") if method == "prompt" else None
        if not selection:
            continue
        unit = UnitName.parse(key)
        for variant, name in (("gold", "acc"), ("calibrated", "calibrated_acc")):
            if name in selection:
                sums.setdefault((variant, unit.number, unit.template), []).append(selection[name])
    return {k: float(np.mean(v)) for k, v in sums.items()}


def _select_prompt(result: TaskResult, metric: str, scores: dict, variants: tuple[str, ...], shots) -> Choice | None:
    """The (variant, k, template) with the best train score among those asked; ties go to the first in order."""
    candidates = sorted((key for key in scores if key[0] in variants and key[1] in shots), key=lambda x: (x[1], x))
    best = max(candidates, key=lambda key: scores[key], default=None)
    if best is None:
        return None
    variant, k, template = best
    estimate = _template_estimate(result, variant, k, template, metric)
    if estimate is None:
        return None
    label = f"{template}, k={k}" + (", calibrated" if variant == "calibrated" else "")
    return Choice(estimate, label, scores[best], best)


def _trained_train_scores(result: TaskResult) -> dict[tuple[str, str, int], float]:
    """(method, variant, train n) -> train-side accuracy, mean over seeds: held-out accuracy of a tuned method,
    cross-validated accuracy at the chosen layer of a probe."""
    sums: dict[tuple[str, str, int], list[float]] = {}
    for (method, key), info in result.unit_infos.items():
        if method not in TRAINED_METHODS:
            continue
        unit = UnitName.parse(key)
        if is_control_task(unit.variant) or is_random_init(unit.variant):
            continue  # a sanity check and a baseline, never the ecological rung
        score = max(info["cv_curve"]) if "cv_curve" in info else info.get("holdout_acc")
        if score is not None:
            sums.setdefault((method, unit.variant, unit.number), []).append(score)
    return {k: float(np.mean(v)) for k, v in sums.items()}


def _select_trained(result: TaskResult, metric: str) -> Choice | None:
    """The best trained method at the largest train size, by its train-side accuracy."""
    scores = _trained_train_scores(result)
    if not scores:
        return None
    largest = max(n for _, _, n in scores)
    candidates = sorted(k for k in scores if k[2] == largest)
    best = max(candidates, key=lambda key: scores[key])
    method, variant, n = best
    estimate = result.estimates.get((method, variant, n, "mean", ALL, metric))
    if estimate is None:
        return None
    return Choice(estimate, f"{variant}, n={n}", scores[best], best)  # variants name themselves: p-tuning, bitfit


def _converged(result: TaskResult, key: tuple) -> bool | None:
    """Did every seed of a trained (method, variant, train n) converge? None for the probe (its fit is not iterative
    training); False for a tuned unit that records no convergence (stores written before it was recorded)."""
    method, variant, n = key
    flags = [
        info["converged"]
        for (m, unit), info in result.unit_infos.items()
        if m == method
        and (name := UnitName.parse(unit)).variant == variant
        and name.size == f"n{n}"
        and "converged" in info
    ]
    if flags:
        return all(flags)
    # a tuned method's unit from before convergence was recorded ran a fixed step budget: not shown to converge
    return False if method in ("ptune", "bitfit") else None


def decompose(result: TaskResult) -> Decomposition:
    metric = main_metric(result.task)
    levels = sorted({k[2] for k in result.estimates if k[0] == "prompt" and k[1] == "gold"})
    few = max((k for k in levels if k > 0), default=None)
    d = Decomposition(result.task, metric, few)
    d.chance = result.estimates.get(("baseline", "chance", 0, "-", "-", metric))
    d.majority = result.estimates.get(("baseline", "majority", 0, "-", "-", metric))
    d.constant = result.estimates.get(("baseline", "constant", 0, "-", "-", metric))
    d.control = _template_mean(result, "control", 0, metric)
    d.zero_mean = _template_mean(result, "gold", 0, metric)
    d.zero_templates = tuple(
        sorted({k[3] for k in result.estimates if k[:3] == ("prompt", "gold", 0) and k[3] not in AGGREGATES})
    )
    d.calibrated_zero = _template_mean(result, "calibrated", 0, metric)
    if few is not None:
        d.few_mean = _template_mean(result, "gold", few, metric)
        d.calibrated_few = _template_mean(result, "calibrated", few, metric)
        d.random_labels_few = _template_mean(result, "random_labels", few, metric)
        d.abstract_labels_few = _template_mean(result, "abstract_labels", few, metric)
    # Task recognition: what demos give when their labels carry no mapping (random), over naming the task alone;
    # task learning: what demos give when only their mapping can (the labels are symbols), over guessing.
    d.task_recognition = difference(d.random_labels_few, d.zero_mean)
    d.task_learning = difference(d.abstract_labels_few, d.chance)

    scores = _prompt_train_scores(result)
    d.zero_selected = _select_prompt(result, metric, scores, ("gold",), {0})
    if few is not None:
        d.few_selected = _select_prompt(result, metric, scores, ("gold",), {few})
    d.best_prompt = _select_prompt(result, metric, scores, ("gold", "calibrated"), set(levels))
    d.ecological = _select_trained(result, metric)
    if d.ecological is not None:
        d.ecological_converged = _converged(result, d.ecological.key)
    if d.ecological and d.best_prompt:
        d.elicitation_gap = difference(d.ecological.estimate, d.best_prompt.estimate)

    d.guess_share = ratio(difference(d.zero_mean, d.control), difference(d.few_mean, d.control), "few-shot - control")
    d.demo_format_share = ratio(
        difference(d.random_labels_few, d.zero_mean), difference(d.few_mean, d.zero_mean), "few-shot - zero-shot"
    )
    spread = result.estimates.get(("prompt", "gold", 0, "spread", ALL, metric))
    if spread is not None:
        d.spread_zero = spread
        d.spread_share_of_gap = ratio(spread, d.elicitation_gap, "the elicitation gap")
        if d.spread_share_of_gap is not None:
            d.spread_share_of_gap.interval = False  # a spread over templates has no interval (see analysis)

    variants = [("control", "control", 0), ("zero-shot", "gold", 0)]
    if few is not None:
        variants += [(f"k={few}", "gold", few), (f"random labels k={few}", "random_labels", few)]
        variants.append((f"abstract labels k={few}", "abstract_labels", few))
    for name, variant, k in variants:
        rate = _template_mean(result, variant, k, "attempt_rate")
        if rate is not None:
            d.attempts[name] = (rate, _template_mean(result, variant, k, "acc_when_attempted"))
    if d.ecological is not None:  # a tuned method scores the same verbalizer, so it has an attempt rate too
        method, variant, n = d.ecological.key
        rate = result.estimates.get((method, variant, n, "mean", ALL, "attempt_rate"))
        if rate is not None:
            acc = result.estimates.get((method, variant, n, "mean", ALL, "acc_when_attempted"))
            d.attempts[f"ecological ({d.ecological.label})"] = (rate, acc)
    return d
