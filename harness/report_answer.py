"""What the report supports (the store's own `about.md`, at the top of the report), and per model and task the
answer to the harness's question (does the best prompt under- or over-state the trained ceiling?) with its n,
or `inconclusive` and why."""

from __future__ import annotations

from pathlib import Path

from harness.analysis import TaskResult
from harness.decompose import SIGNIFICANCE, Decomposition, decompose, inconclusive_reason, verdicts
from harness.markdown import fmt, p_text, table
from harness.metrics import p_value
from harness.report_decomposition import signed
from harness.resources import read_text

ABOUT = "about.md"  # written by whoever ran the store: what the report supports and how strongly
VERDICT_TEXT = {
    "understates": "prompting **understates**",
    "overstates": "prompting **overstates**",
    "same": "no significant difference",
}


def about(out: Path) -> list[str]:
    """The store's `about.md`, verbatim, or nothing."""
    path = out / ABOUT
    if not path.is_file():
        return []
    return [read_text(path).strip(), ""]  # a non-UTF-8 file is a one-line error naming it


def _choice(d: Decomposition, which: str) -> str:
    choice = d.best_prompt if which == "prompt" else d.ecological
    if choice is None:
        return "–"
    text = f"{fmt(choice.estimate)} ({choice.label})"
    if which == "ecological" and d.ecological_converged is False:
        text += " NOT CONVERGED"
    return text


def _verdict(d: Decomposition, found: dict[str, str]) -> str:
    why = inconclusive_reason(d)
    if why is not None:
        return f"inconclusive: {why}"
    return VERDICT_TEXT[found[d.task]]


def _gap(d: Decomposition) -> str:
    if d.elicitation_gap is None:
        return "–"
    return f"{signed(d.elicitation_gap)} ({p_text(p_value(d.elicitation_gap))})"


def model_answer(model: str, results: list[TaskResult]) -> list[str]:
    """One table for one model: a row per task with a best prompt or a trained method."""
    decompositions = [decompose(r) for r in results]
    shown = [d for d in decompositions if d.best_prompt is not None or d.ecological is not None]
    if not shown:
        return []
    found = verdicts(decompositions)
    sizes = sorted({d.ecological.key[2] for d in shown if d.ecological is not None})
    rows = [
        [
            d.task,
            str(d.elicitation_gap.n if d.elicitation_gap else (d.chance.n if d.chance else "–")),
            fmt(d.floor, ci=False),
            _choice(d, "prompt"),
            _choice(d, "ecological"),
            _gap(d),
            _verdict(d, found) if d.elicitation_gap is not None else "inconclusive: no trained method run",
        ]
        for d in shown
    ]
    conclusive = sum(1 for d in shown if d.elicitation_gap is not None and inconclusive_reason(d) is None)
    read_at = f"read at the largest train size run (n={'/'.join(map(str, sizes))})" if sizes else "none run"
    return [
        f"**{model}**: a verdict on {conclusive} of {len(shown)} tasks; ecological {read_at}.",
        "",
        *table(
            ["task", "n", "best constant", "best prompt", "ecological", "gap, points (raw p)", "answer"],
            rows,
        ),
        "",
    ]


def section(models: list[str], results: list[TaskResult]) -> list[str]:
    """The answer table of every model that has one."""
    tables = [line for m in models for line in model_answer(m, [r for r in results if r.model == m and r.estimates])]
    if not tables:
        return []
    return [
        "## The answer",
        "",
        "Does the best prompt (template, k and calibration picked on train) understate or overstate what the model "
        "can do, against the best trained method (picked on train)? A verdict needs both to beat the best constant "
        "answer significantly and the trained unit to have converged; verdicts are Holm-corrected over a model's "
        f"conclusive tasks (paired bootstrap, p < {SIGNIFICANCE}). Scores in percent with 95% intervals, `n` eval "
        "examples (questions for MultiRC).",
        "",
        *tables,
    ]
