"""The guess-vs-do part of a model's report: a summary in numbers, the ladder, the decomposition, attempts."""

from __future__ import annotations

import math

import numpy as np

from harness.analysis import TaskResult
from harness.catalog import find_task
from harness.decompose import (
    SIGNIFICANCE,
    Choice,
    Decomposition,
    Ratio,
    beats,
    decompose,
    inconclusive_reason,
    verdicts,
)
from harness.markdown import count, fmt, p_text, table
from harness.metrics import Estimate, p_value

VERDICTS = ("understates", "overstates", "same", "inconclusive")


def _points(v: float) -> str:
    return f"{round(v * 100, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"


def signed(e: Estimate | None) -> str:
    """A signed difference or slope in points, with its interval."""
    if e is None:
        return "–"
    lo, hi = e.ci
    return f"{_points(e.value)} [{_points(lo)}, {_points(hi)}]"


def _choice(c: Choice | None, what: str) -> str:
    if c is None:
        return f"– (no {what})"
    return f"{fmt(c.estimate)} ({c.label}; train {c.train_score * 100:.0f})"


def _ratio(r: Ratio | None) -> str:
    if r is None:
        return "–"
    if r.estimate is None:  # the denominator in points, briefly: the legend names it and says why
        return f"undefined (denominator {signed(r.denominator)})"
    lo, hi = r.estimate.ci
    if not r.interval or math.isnan(lo):
        return f"{r.estimate.value:.2f} (no interval)"
    return f"{r.estimate.value:.2f} [{lo:.2f}, {hi:.2f}]"


def _gap(d: Decomposition) -> str:
    if d.elicitation_gap is None:
        return "–"
    text = f"{signed(d.elicitation_gap)} ({p_text(p_value(d.elicitation_gap))}, n={d.elicitation_gap.n})"
    why = inconclusive_reason(d)
    return text + (f"; inconclusive: {why}" if why else "")


def by_verdict(measured: list[Decomposition]) -> dict[str, list[str]]:
    """understates / overstates / same / inconclusive -> the tasks with that verdict (Holm-corrected, see
    `decompose.verdicts`)."""
    found = verdicts(measured)
    return {v: [d.task for d in measured if found.get(d.task) == v] for v in VERDICTS}


def summary(decompositions: list[Decomposition]) -> list[str]:
    """A few sentences in numbers: does prompting under- or over-state the capability, and on which tasks."""
    measured = [d for d in decompositions if d.elicitation_gap is not None]
    if not measured:
        return [
            "**Summary.** No elicitation gap could be measured: it needs the prompt method's train scores and at "
            "least one trained method (`--methods prompt,ptune,bitfit,probe`)."
        ]
    by = by_verdict(measured)
    gaps = [d.elicitation_gap.value * 100 for d in measured]  # type: ignore[union-attr]
    why = {d.task: inconclusive_reason(d) for d in measured}
    parts = [
        f"**Summary.** Against the best trained method, the best prompt (both picked on train) understates the "
        f"model's capability on {len(by['understates'])} of {count(len(measured), 'task')}"
        + (f" ({', '.join(by['understates'])})" if by["understates"] else "")
        + f", overstates it on {len(by['overstates'])}"
        + (f" ({', '.join(by['overstates'])})" if by["overstates"] else "")
        + f", and is not significantly different on {len(by['same'])}"
        + (f" ({', '.join(by['same'])})" if by["same"] else "")
        + f" (paired bootstrap, Holm-corrected over the conclusive tasks, p < {SIGNIFICANCE})."
        + (
            f" Inconclusive on {len(by['inconclusive'])}: "
            + "; ".join(f"{t} ({why[t]})" for t in by["inconclusive"])
            + "."
            if by["inconclusive"]
            else ""
        )
        + f" The elicitation gap is {np.median(gaps):+.1f} points in the median task (from {min(gaps):+.1f} to "
        f"{max(gaps):+.1f})."
    ]
    constant = [d.task for d in decompositions if d.best_prompt and not beats(d.best_prompt.estimate, d.floor)]
    if constant:
        parts.append(
            f" On {count(len(constant), 'task')} ({', '.join(constant)}) the best prompt does not significantly beat "
            "the best constant answer, so its score there says little about the task."
        )
    shares = [d.guess_share.estimate.value for d in decompositions if d.guess_share and d.guess_share.estimate]
    if shares:
        parts.append(
            f" Where the demos' gain over the control prompt is clear of zero ({count(len(shares), 'task')}), naming the task "
            f"zero-shot gave a median {np.median(shares):.2f} of it."
        )
    return ["".join(parts)]


def section(results: list[TaskResult]) -> list[str]:
    """Markdown lines of the guess-vs-do section for one model's tasks."""
    decompositions = [decompose(r) for r in results]
    few = max((d.few for d in decompositions if d.few is not None), default=None)
    abstract = any(d.abstract_labels_few is not None for d in decompositions)  # stores without them read as before
    lines = ["### Guess vs do", ""]
    lines += summary(decompositions)
    lines += [
        "",
        "The ladder, in percent with 95% intervals; `mean`, `calibrated` and `random labels` are means over "
        "templates and demo seeds. `picked on train`: the template with the best accuracy on 16 train examples "
        "outside its demos (its train accuracy after `train`); `best prompt`: the same pick over zero-shot and "
        "the largest k, calibrated or not; `ecological`: the trained method with the best held-out (tuned) or "
        "cross-validated (probe) train accuracy. Eval data is never used to pick. `best constant`: the best score of "
        'giving one answer to every example (the majority label for accuracy; "yes" to every answer for MultiRC\'s F1).',
        "",
    ]
    header = [
        "task",
        "metric",
        "n",
        "chance",
        "best constant",
        "control",
        "zero-shot mean",
        "zero-shot picked on train",
    ]
    header.append("calibrated k=0")
    if few is not None:
        header += [f"k={few} mean", f"k={few} picked on train", f"calibrated k={few}", f"random labels k={few}"]
        header += [f"abstract labels k={few}"] if abstract else []
    header += ["best prompt picked on train", "ecological"]
    rows = []
    for d in decompositions:
        n = d.chance or d.zero_mean or d.constant
        row = [
            d.task,
            d.metric,
            str(n.n) if n else "–",
            fmt(d.chance, ci=False),
            fmt(d.constant, ci=False),
            fmt(d.control),
            fmt(d.zero_mean),
        ]
        row += [_choice(d.zero_selected, "train scores"), fmt(d.calibrated_zero)]
        if few is not None:
            row += [fmt(d.few_mean), _choice(d.few_selected, "train scores"), fmt(d.calibrated_few)]
            row.append(fmt(d.random_labels_few))
            row += [fmt(d.abstract_labels_few)] if abstract else []
        ecological = _choice(d.ecological, "trained method")
        if d.ecological_converged is False:
            ecological += " NOT CONVERGED"
        row += [_choice(d.best_prompt, "train scores"), ecological]
        rows.append(row)
    lines += table(header, rows)
    lines += [
        "",
        "`elicitation gap` = ecological - best prompt, in points, with its paired bootstrap p-value: how much "
        "prompting understates (+) or overstates (-) what the model can do. `guess share` = (zero-shot - control) / "
        "(few-shot - control): the part of the demos' gain that naming the task already gives. `demo-format share` = "
        "(random-label few-shot - zero-shot) / (few-shot - zero-shot): the part of the demos' gain that survives "
        "random labels, i.e. came from the format. Means over templates; a ratio is shown only where its denominator "
        "is positive and clear of 0 (at least 2 points, interval above 0): otherwise `undefined`, with the "
        "denominator in points. `spread`: best - worst template at k=0, and its size relative to the gap.",
        "",
    ]
    rows = [
        [
            d.task,
            _gap(d),
            _ratio(d.guess_share),
            _ratio(d.demo_format_share),
            fmt(d.spread_zero, ci=False),
            _ratio(d.spread_share_of_gap),
        ]
        for d in decompositions
    ]
    lines += table(["task", "elicitation gap", "guess share", "demo-format share", "spread k=0", "spread / gap"], rows)
    lines += recognition_and_learning(results, decompositions, few)
    lines += [
        "",
        "Does it attempt the task? `valid mass`: probability mass on the first tokens of the valid answers at the "
        "answer slot, and `acc when top-1 valid`: accuracy where the unconstrained next token starts a valid "
        "answer (choice tasks); `well-formed`: share of generated answers matching the answer pattern, and `em "
        "when well-formed`: their exact match (generated answers).",
        "",
    ]
    rows = [
        [d.task, variant, fmt(rate), fmt(acc), "; ".join(ATTEMPT_WORDS[generates(d.task)])]
        for d in decompositions
        for variant, (rate, acc) in d.attempts.items()
    ]
    lines += table(["task", "prompt", "attempt", "score when attempted", "read as"], rows)
    return lines


def _gain(e: Estimate | None) -> str:
    """A gain in points with its interval and its paired bootstrap p-value against no gain."""
    return "–" if e is None else f"{signed(e)} ({p_text(p_value(e))})"


def recognition_and_learning(
    results: list[TaskResult], decompositions: list[Decomposition], few: int | None
) -> list[str]:
    """Task recognition vs task learning (after Pan et al. 2023), where abstract-label demos were run or asked for
    and skipped; no lines otherwise, so a store without them renders as it always did."""
    skipped = {r.task: r.info.get("variants_not_run", {}).get("abstract_labels") for r in results}
    if few is None or not any(d.abstract_labels_few is not None or skipped[d.task] for d in decompositions):
        return []
    lines = [
        "",
        f"Task recognition vs task learning (after Pan et al. 2023), at k={few}, means over templates and demo seeds. "
        "`task recognition` = random-label few-shot - zero-shot: what demos whose labels are random (their inputs, "
        "format and label words, no input-label mapping) add to naming the task. `task learning` = abstract-label "
        "few-shot - chance: the demos keep their gold labels but every answer is a neutral symbol (foo, bar, ...; "
        "one seeded mapping per demo set, the same for every template) and the query is scored on the same "
        "symbols, so only a model that learns the mapping from the demos beats chance (each template keeps its "
        "wording, which may name the real answers, as in 'True or False?', where Pan et al. used minimal "
        "templates). Pan et al. read the two "
        "settings' accuracies themselves; here each is a gain, in points, with its 95% paired bootstrap interval "
        "and p-value. A model that always gives one symbol is at chance only on average over mappings: on a "
        "skewed label set one mapping can score the majority label's share, so read task learning against the "
        "best constant answer too.",
        "",
    ]
    rows = []
    for d, r in zip(decompositions, results):
        learning = _gain(d.task_learning)
        if d.abstract_labels_few is None and skipped[r.task]:
            learning = f"not run: {skipped[r.task].split(': ', 1)[-1]}"
        rows.append(
            [
                d.task,
                fmt(d.zero_mean),
                fmt(d.random_labels_few),
                _gain(d.task_recognition),
                fmt(d.chance, ci=False),
                fmt(d.constant, ci=False),
                fmt(d.abstract_labels_few),
                learning,
            ]
        )
    header = ["task", "zero-shot mean", f"random labels k={few}", "task recognition", "chance", "best constant"]
    return lines + table(header + [f"abstract labels k={few}", "task learning"], rows)


# answer kind (generated?) -> the names of its attempt rate and of its score when attempted
ATTEMPT_WORDS = {False: ("valid mass", "acc when top-1 valid"), True: ("well-formed", "em when well-formed")}


def generates(task: str) -> bool:
    """Does the task generate its answers (an attempt is a well-formed answer), rather than choose one (an attempt
    is mass on the valid answers)?"""
    spec = find_task(task)
    return spec is not None and spec.generates
