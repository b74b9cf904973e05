"""The report's first screen: per model, and across sizes, what the evidence supports and how strongly, counted
over tasks from the claims of harness/claims.py (a claim is answered only where its interval supports it)."""

from __future__ import annotations

from harness import claims as c
from harness.analysis import TaskResult
from harness.claims import UNKNOWN, Claim
from harness.decompose import Decomposition, decompose, verdicts
from harness.markdown import params_text, table
from harness.metrics import mean_estimate
from harness.report_decomposition import generates
from harness.report_scaling import decompositions_by_task
from harness.scaling import family, task_scaling

HEADING = "## What the evidence supports"
ORDER = ("yes", "understates", "overstates", "same", "helped", "format effect", "hurt", "no", UNKNOWN)
ANSWERED = ("interval above 0", "interval below 0", "interval holds 0", "interval within +-2")  # read off a slope
MAX_NAMED = 3  # a group of up to this many tasks is named; a larger one gives the range of its values


def _n(d: Decomposition) -> int | None:
    found = [e for e in (d.chance, d.zero_mean, d.constant) if e is not None]
    if d.ecological is not None:
        found.append(d.ecological.estimate)
    return found[0].n if found else None


def _value(claim: Claim, rate: bool, intervals: bool) -> str:
    if rate:
        return f"{claim.value * 100:.1f}%"
    if intervals and claim.interval:
        return claim.interval
    return f"{round(claim.value * 100, 1) + 0.0:+.1f}"


def _named(tasks: list[str]) -> str:
    return ", ".join(tasks) if len(tasks) <= MAX_NAMED else f"{len(tasks)} tasks"


def tally(found: dict[str, Claim], rate: bool = False, words: dict[str, str] | None = None, intervals=False) -> str:
    """One cell: the tasks counted by answer, each group with its values (per task when few, else their range) or,
    for `cannot be told yet`, its reasons. `rate`: values are rates (in %), else differences (in points), with
    their intervals where `intervals`."""
    words = words or {}
    groups: dict[str, list[tuple[str, Claim]]] = {}
    for task, claim in found.items():
        groups.setdefault(claim.answer, []).append((task, claim))
    parts = []
    for answer in sorted(groups, key=lambda a: ORDER.index(a) if a in ORDER else len(ORDER)):
        members = groups[answer]
        text = f"{words.get(answer, answer)} on {len(members)}"
        if answer == UNKNOWN:
            reasons: dict[str, list[str]] = {}
            for task, claim in members:
                reasons.setdefault(claim.reason, []).append(task)
            if len(reasons) == 1 and len(members) > MAX_NAMED:
                text += f" ({next(iter(reasons))})"
            else:
                text += " (" + "; ".join(f"{why}: {_named(tasks)}" for why, tasks in reasons.items()) + ")"
        else:
            valued = [(t, cl) for t, cl in members if cl.value is not None]
            if valued and len(members) <= MAX_NAMED:
                text += " (" + ", ".join(f"{t} {_value(cl, rate, intervals)}" for t, cl in valued) + ")"
            elif valued:
                low = min(valued, key=lambda x: x[1].value)[1]
                high = max(valued, key=lambda x: x[1].value)[1]
                low_text, high_text = _value(low, rate, False), _value(high, rate, False)
                text += f" ({low_text})" if low_text == high_text else f" ({low_text} to {high_text})"
        parts.append(text)
    return "; ".join(parts) or "–"


def model_row(model: str, results: list[TaskResult]) -> list[str] | None:
    """A model's row: its tasks and their n, then each claim counted over its tasks; None with nothing scored."""
    decompositions = [decompose(r) for r in results if r.estimates]
    shown = [d for d in decompositions if d.zero_mean is not None or d.ecological is not None]
    if not shown:
        return None
    found = verdicts(decompositions)
    prompted = [d for d in shown if d.zero_mean is not None]
    ns = sorted({n for d in shown if (n := _n(d)) is not None})
    sizes = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}" if ns else "–"

    def per_task(claim) -> dict[str, Claim]:
        return {d.task: claim(d) for d in prompted}

    def rate(d: Decomposition, name: str) -> Claim:
        return c.attempts(d.attempts[name][0] if name in d.attempts else None, generates(d.task))

    return [
        model,
        f"{len(shown)} (n = {sizes})",
        tally(per_task(lambda d: rate(d, "zero-shot")), rate=True) if prompted else "–",
        tally(per_task(lambda d: rate(d, f"k={d.few}")), rate=True) if prompted else "–",
        tally(per_task(c.format_taught)) if prompted else "–",
        tally(per_task(c.mapping_taught)) if prompted else "–",
        tally({d.task: c.prompting_vs_ceiling(d, found.get(d.task)) for d in shown}),
    ]


def across_sizes(models: list[tuple[str, int, dict]], results: list[TaskResult]) -> list[str]:
    """One line: the zero-shot attempt rate's slope per task, and the prompt-vs-trained slope difference, with the
    caveats that a slope across these models carries."""
    if len(models) < 2:
        return []
    by_task = decompositions_by_task(models, results)
    slopes, bias, slope_values = {}, {}, {}
    for task, rows in sorted(by_task.items()):
        if len(rows) < 2:
            continue
        s = task_scaling(task, rows)
        prompted = [(m, d) for m, _, d in rows if d.zero_mean is not None]
        if len(prompted) > 1:
            slopes[task] = c.attempt_slope(s.slopes["attempt k=0"], {m: d.zero_templates for m, d in prompted})
            if s.slopes["attempt k=0"] is not None:
                slope_values[task] = s.slopes["attempt k=0"]
        bias[task] = c.scaling_bias(s.headline, len(s.valid_models), s.n_models)
    if not slopes and not bias:
        return []
    ordered = sorted(models, key=lambda m: m[1])
    span = " to ".join(f"{m} ({params_text(p)})" for m, p, _ in (ordered[0], ordered[-1]))
    notes = []
    if len({family(m) for m, _, _ in models}) > 1:
        notes.append("families differ")
    tuned = {info.get("instruction_tuned") for _, _, info in models}
    if {True, False} <= tuned:
        notes.append("instruction-tuned and base models mixed")
    caveat = f"; {' and '.join(notes)}, so a slope is not size alone" if notes else ""
    text = f"**Across sizes** ({len(models)} models, {span}{caveat}), in points per tenfold parameters. "
    if slopes:
        words = {"yes": "rises", "no": "does not rise"}
        text += f"Zero-shot attempt rate: {tally(slopes, words=words, intervals=True)}"
        comparable = [e for task, e in slope_values.items() if slopes[task].reason in ANSWERED]
        if len(comparable) > MAX_NAMED:  # the per-task intervals are not listed: their mean's is
            mean = mean_estimate(comparable, same_examples=False)
            text += f", mean over these {len(comparable)} tasks {c.points(mean)}"
        text += ". "
    if bias:
        words = {"yes": "faster", "no": "not faster"}
        text += f"Best prompt vs trained ceiling, which grows faster: {tally(bias, words=words, intervals=True)}."
    return [text.rstrip(), ""]


def section(models: list[tuple[str, int, dict]], results: list[TaskResult]) -> list[str]:
    """The first screen: a table with a row per model, a legend, then one line across sizes."""
    rows = [row for m, _, _ in models if (row := model_row(m, [r for r in results if r.model == m]))]
    if not rows:
        return []
    few = sorted({d.few for r in results if r.estimates and (d := decompose(r)).few is not None})
    demos = f"k={few[0]}" if len(few) == 1 else "the largest k"
    lines = [HEADING, ""]
    lines += table(
        [
            "model",
            "tasks (eval n)",
            "attempts zero-shot",
            f"attempts with demos ({demos})",
            "demos teach the format",
            "demos teach the mapping",
            "prompting vs the trained ceiling",
        ],
        rows,
    )
    lines += [
        "",
        "Counts of tasks; a claim is answered only where its 95% interval (bootstrap over eval examples) supports "
        "it. *Attempts*: more than half the next-token mass on the valid answers (generated answers: more than "
        "half well-formed), mean over templates. *Format*: random-label demos raise the attempt rate over "
        "zero-shot (points). *Mapping*: gold demos beat the same demos with random labels (points). *Trained "
        "ceiling*: the answer below (both sides must beat the best constant answer; gap in points).",
        "",
    ]
    return lines + across_sizes(models, results)
