"""The cross-size part of the report: which models, caveats, the headline slope difference, slopes, plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import plots
from harness import report_figures as figures
from harness.analysis import TaskResult
from harness.decompose import SIGNIFICANCE, Decomposition, beats, decompose
from harness.markdown import count, p_text, params_text, table
from harness.metrics import mean_estimate, p_value
from harness.model_catalog import KNOWN_MODELS
from harness.report_decomposition import ATTEMPT_WORDS, by_verdict, generates, signed
from harness.scaling import HEADLINE, QUANTITIES, RECOGNITION, TaskScaling, family, slope, task_scaling

PLOTTED = ("control", "zero-shot mean", "best prompt", "ecological")


def caveats(models: list[tuple[str, int, dict]]) -> list[str]:
    out = []
    families = sorted({family(m) for m, _, _ in models})
    if len(families) > 1:
        out.append(
            f"Mixed families ({', '.join(families)}): a slope mixes size with differences in architecture, "
            "training data and tokenizer."
        )
    tuned = [m for m, _, info in models if info.get("instruction_tuned")]
    base = [m for m, _, info in models if info.get("instruction_tuned") is False]
    if tuned and base:
        out.append(
            f"Instruction-tuned ({', '.join(tuned)}) and base ({', '.join(base)}) models are mixed: instruction "
            "tuning alone can raise zero-shot attempt rates, independent of size."
        )
    for m, params, _ in models:
        known = KNOWN_MODELS.get(m)
        if known and abs(params - known.published_params) > 0.05 * known.published_params:
            out.append(
                f"{m} runs with {params_text(params)} parameters where its model card says "
                f"{params_text(known.published_params)}: its GGUF stores the output head apart from the input "
                "embeddings, which the card counts once. Slopes use the count as run."
            )
    quantized = [m for m, _, info in models if info.get("quantized_source")]
    if quantized:
        out.append(
            f"Weights de-quantized from GGUF ({', '.join(quantized)}): quantization error is part of every score "
            "of these models."
        )
    return out


def decompositions_by_task(models: list[tuple[str, int, dict]], results: list[TaskResult]) -> dict[str, list]:
    """task -> [(model, parameters, its decomposition)] for the models given, in results' order."""
    params = {m: p for m, p, _ in models}
    by_task: dict[str, list] = {}
    for r in results:
        if r.estimates and r.model in params:
            by_task.setdefault(r.task, []).append((r.model, params[r.model], decompose(r)))
    return by_task


def section(models: list[tuple[str, int, dict]], results: list[TaskResult], out: Path, plot: Path) -> list[str]:
    """Markdown lines of the across-sizes section; empty with fewer than two models."""
    if len(models) < 2:
        return []
    by_task = decompositions_by_task(models, results)
    scalings = [task_scaling(task, rows) for task, rows in sorted(by_task.items()) if len(rows) > 1]

    trained = sorted({key[0] for r in results for key in r.estimates} - {"prompt", "baseline"})
    # the finding first: the summary in numbers and the per-model verdicts, then who the models are
    per_model = verdicts(models, by_task)
    measured = [s for s in scalings if s.headline is not None]
    summary = headline_summary(measured) + validity(scalings) + verdict_trend(per_model)
    summary += precision(measured, results) + not_evaluated(results, [m for m, _, _ in models])
    summary += recognition_trend(scalings)
    lines = ["## Across sizes", "", summary, ""]
    lines += [*verdicts_by_model(per_model, trained), ""]
    lines += table(
        ["model", "params", "source", "instruction-tuned", "de-quantized"],
        [
            [
                m,
                params_text(p),
                str(info.get("source", "–")),
                {True: "yes", False: "no"}.get(info.get("instruction_tuned"), "unknown"),
                "yes" if info.get("quantized_source") else "no",
            ]
            for m, p, info in models
        ],
    )
    lines.append("")
    lines += [f"- {c}" for c in caveats(models)]
    lines.append("")
    lines += [
        "Slopes in points per tenfold increase in parameters (least squares on log10 parameters), with 95% "
        "bootstrap intervals: every model is scored on the same examples, so each resample fits one slope. "
        "`prompt - ecological` is slope(best prompt) - slope(ecological), both picked on train per model: "
        "the upward bias of a prompt-based scaling estimate.",
        "",
    ]
    # recognition and learning are read together, where abstract-label demos ran on two sizes (random labels alone
    # give recognition; a store without abstract labels renders as it did before they existed)
    learning = any(s.slopes["task learning"] is not None for s in scalings)
    names = [n for n, _ in QUANTITIES if learning or n not in RECOGNITION]
    rows = []
    for s in scalings:
        p = f" ({p_text(p_value(s.headline))})" if s.headline else ""
        rows.append([s.task, *(signed(s.slopes[n]) for n in names), signed(s.headline) + p])
    lines += table(["task", *names, "prompt - ecological"], rows)
    floors = {task: (rows[0][2].chance, rows[0][2].floor) for task, rows in by_task.items()}  # same examples
    named = {kind: plot.with_name(f"{plot.stem}-{kind}{plot.suffix}") for kind in ("attempts", "gap", "slopes")}
    if draw(scalings, out / plot, PLOTTED, "score (%), 95% interval", floors):
        lines += ["", f"![scores against size]({plot.as_posix()})"]
    if draw_attempts(by_task, out / named["attempts"]):
        lines += ["", f"![attempt rate across the ladder against size]({named['attempts'].as_posix()})"]
    if draw(scalings, out / named["gap"], ("elicitation gap",), "ecological - best prompt (points)"):
        lines += ["", f"![elicitation gap against size]({named['gap'].as_posix()})"]
    if draw_slopes(scalings, out / named["slopes"]):
        lines += ["", f"![per-task slopes, best prompt vs ecological]({named['slopes'].as_posix()})"]
    recognition = plot.with_name(plot.stem + "-recognition" + plot.suffix)
    if learning and draw(scalings, out / recognition, RECOGNITION, "gain (points)"):
        lines += ["", f"![task recognition and task learning against size]({recognition.as_posix()})"]
    lines.append("")
    return lines


@dataclass
class ModelVerdicts:
    """One model's tasks with a measured elicitation gap, by verdict, and those that beat the best constant answer."""

    model: str
    params: int
    measured: list[Decomposition]
    by: dict[str, list[str]]  # understates / overstates / same -> tasks
    beat: dict[str, list[str]]  # best_prompt / ecological -> tasks where it beats the best constant answer


def verdicts(models: list[tuple[str, int, dict]], by_task: dict[str, list]) -> list[ModelVerdicts]:
    """Per model, smallest first."""
    out = []
    for model, params, _ in sorted(models, key=lambda m: m[1]):
        found = [d for per_model in by_task.values() for m, _, d in per_model if m == model]
        measured = sorted((d for d in found if d.elicitation_gap is not None), key=lambda d: d.task)
        beat = {
            rung: [d.task for d in measured if getattr(d, rung) and beats(getattr(d, rung).estimate, d.floor)]
            for rung in ("best_prompt", "ecological")
        }
        out.append(ModelVerdicts(model, params, measured, by_verdict(measured), beat))
    return out


def verdicts_by_model(per_model: list[ModelVerdicts], trained: list[str]) -> list[str]:
    """The table of `verdicts`: on which tasks the best prompt under- or over-states the trained ceiling."""
    rows = []
    for v in per_model:
        if not v.measured:
            rows.append([v.model, params_text(v.params), "–", "–", "–", "–", "–", "–"])
            continue
        gaps = [d.elicitation_gap.value * 100 for d in v.measured]  # type: ignore[union-attr]
        rows.append(
            [
                v.model,
                params_text(v.params),
                *(listed(tasks) for tasks in v.by.values()),
                f"{np.median(gaps):+.1f} ({min(gaps):+.1f} to {max(gaps):+.1f})",
                f"{listed(v.beat['best_prompt'])} / {listed(v.beat['ecological'])}",
            ]
        )
    return [
        "Does the best prompt under- or over-state what each model can do? Counted over tasks by the paired "
        "bootstrap test of the elicitation gap (ecological - best prompt, both picked on train; Holm-corrected over "
        f"a model's conclusive tasks, p < {SIGNIFICANCE}). A task is inconclusive unless the best prompt and the "
        "ecological method both significantly beat the best constant answer and the ecological unit converged. "
        f"Ecological here is the best of: {', '.join(trained) or 'no trained method'}. The last column counts the "
        "tasks where the best prompt, and the ecological method, significantly beat the best constant answer "
        "(the same test): below it a score says little about the task.",
        "",
        *table(
            [
                "model",
                "params",
                "prompt understates",
                "prompt overstates",
                "no significant difference",
                "inconclusive",
                "median gap (range)",
                "beat best constant: prompt / ecological",
            ],
            rows,
        ),
    ]


def listed(tasks: list[str]) -> str:
    return f"{len(tasks)}" + (f" ({', '.join(tasks)})" if tasks else "")


def verdict_trend(per_model: list[ModelVerdicts]) -> str:
    """One sentence: how the verdicts change from the smallest model to the largest."""
    found = [v for v in per_model if v.measured]
    if len(found) < 2:
        return ""

    def counts(tasks_of) -> str:
        return ", ".join(str(len(tasks_of(v))) for v in found)

    return (
        f" From the smallest model to the largest ({', '.join(v.model for v in found)}), the best prompt significantly "
        f"understates the trained ceiling on {counts(lambda v: v.by['understates'])} tasks and overstates it on "
        f"{counts(lambda v: v.by['overstates'])} (of {counts(lambda v: v.measured)} measured); it beats the best "
        f"constant answer on {counts(lambda v: v.beat['best_prompt'])}, the ecological method on "
        f"{counts(lambda v: v.beat['ecological'])}."
    )


def validity(scalings: list[TaskScaling]) -> str:
    """How many (model, task) pairs the slope difference could use."""
    if not scalings:
        return ""
    valid = sum(len(s.valid_models) for s in scalings)
    total = sum(s.n_models for s in scalings)
    short = [s.task for s in scalings if s.headline is None]
    return (
        f" The slope difference uses only the models whose comparison is valid on a task (best prompt and ecological "
        f"method both significantly above the best constant answer, trained unit converged): {valid} of {total} "
        f"(model, task) pairs; {count(len(short), 'task')} had fewer than two valid sizes"
        + (f" ({', '.join(short)})" if short else "")
        + "."
    )


def recognition_trend(scalings: list[TaskScaling]) -> str:
    """Task recognition and task learning across sizes (Pan et al. 2023 found the first flat with size and the
    second growing), where abstract-label demos ran on two sizes or more; empty otherwise."""
    fitted = {n: [s.slopes[n] for s in scalings if s.slopes[n] is not None] for n in RECOGNITION}
    if not fitted["task learning"]:
        return ""
    parts = []
    for name, slopes in fitted.items():
        if slopes:  # tasks resample independently: the intervals treat the tasks as fixed
            mean = mean_estimate(slopes, same_examples=False)
            parts.append(f"{name} {signed(mean)} points per decade (mean over {count(len(slopes), 'task')})")
    return (
        " Across sizes, "
        + " and ".join(parts)
        + ": recognition is what random-label demos add over zero-shot, learning what abstract-label demos add "
        "over chance (the per-model section defines both)."
    )


def headline_summary(measured: list[TaskScaling]) -> str:
    """The headline in numbers: how much faster prompt scores grow with size than the trained ceiling."""
    if not measured:
        return (
            "**Summary.** The prompt-vs-ecological slope difference needs the best prompt and the ecological "
            "method, both significantly above the best constant answer, on at least two sizes "
            "(`--methods prompt,ptune,bitfit,probe`, several `--model`s, enough eval examples)."
        )
    # tasks resample independently, so these intervals treat the tasks as fixed
    mean = mean_estimate([s.headline for s in measured], same_examples=False)
    prompt = mean_estimate(
        [slope([p for p in s.points[HEADLINE[0]] if p.model in s.valid_models]) for s in measured], same_examples=False
    )
    ecological = mean_estimate(
        [slope([p for p in s.points[HEADLINE[1]] if p.model in s.valid_models]) for s in measured], same_examples=False
    )
    faster = [s.task for s in measured if s.headline.value > 0 and p_value(s.headline) < SIGNIFICANCE]
    slower = [s.task for s in measured if s.headline.value < 0 and p_value(s.headline) < SIGNIFICANCE]
    return (
        f"**Summary.** Averaged over {count(len(measured), 'task')}, the best prompt gains {prompt.value * 100:+.1f} "
        f"points per tenfold parameters and the ecological methods {ecological.value * 100:+.1f}: prompt-based "
        f"scaling is off by {signed(mean)} points per decade (tasks taken as fixed). Prompt scores grow "
        f"significantly faster than the trained ceiling on {count(len(faster), 'task')}"
        f"{' (' + ', '.join(faster) + ')' if faster else ''} and slower on {len(slower)}"
        f"{' (' + ', '.join(slower) + ')' if slower else ''} (paired bootstrap, p < {SIGNIFICANCE})."
    )


def precision(measured: list[TaskScaling], results: list[TaskResult]) -> str:
    """How much one task's slope difference can be trusted at this many eval examples, in numbers."""
    if not measured:
        return ""
    half_widths = [(s.headline.ci[1] - s.headline.ci[0]) * 50 for s in measured]  # type: ignore[union-attr]
    sizes = [r.info["n_eval"] for r in results if r.estimates and r.info.get("n_eval")]
    on = f" on {int(np.median(sizes))} eval examples per task (median)" if sizes else ""
    return (
        f" Measured{on}, one task's slope difference is known to ±{np.median(half_widths):.1f} points per decade "
        "(median half-width of its 95% interval)."
    )


def not_evaluated(results: list[TaskResult], models: list[str]) -> str:
    """Tasks no model was scored on (no data here, say), with the reason stored when they were skipped."""
    scored = {r.task for r in results if r.estimates}
    reasons: dict[str, str] = {}
    for r in results:
        if r.task not in scored and r.model in models:
            reasons.setdefault(r.task, r.info.get("skipped", ""))
    if not reasons:
        return ""
    return "".join(
        f" `{task}` is not evaluated for any model" + (f": {why}." if why else ".")
        for task, why in sorted(reasons.items())
    )


def _size_axis(ax, points: dict[str, int]) -> None:
    """x at log10 parameters (the slopes' scale), labelled with the models' names and sizes."""
    ordered = sorted(points.items(), key=lambda kv: kv[1])
    ax.set_xticks(
        [np.log10(p) for _, p in ordered], [f"{m}\n{params_text(p)}" for m, p in ordered], fontsize=6, rotation=30
    )
    ax.minorticks_off()


def draw(
    scalings: list[TaskScaling],
    path: Path,
    quantities: tuple[str, ...],
    unit: str,
    floors: dict[str, tuple] | None = None,
) -> bool:
    """A panel per task: the quantities against size (models named on the axis, log-spaced), with 95% intervals
    and the fitted slopes (dashed); the same y-range in every panel. `floors`: task -> (chance, best constant),
    drawn as lines, for scores in percent (0-100); without them a zero line (differences in points)."""
    shown = [s for s in scalings if any(len(s.points[n]) > 1 for n in quantities)]
    if not shown:
        return False
    fig, axes = figures.panels(len(shown), width=3.2, height=3.0)
    for i, (ax, s) in enumerate(zip(axes, shown)):
        sizes: dict[str, int] = {}
        for j, name in enumerate(quantities):
            pts = sorted(s.points[name], key=lambda p: p.params)
            if len(pts) < 2:
                continue
            x = np.log10([p.params for p in pts]) + (j - (len(quantities) - 1) / 2) * 0.012  # apart, not over
            ax.plot(x, [p.estimate.value * 100 for p in pts], "-", lw=0.8, color=f"C{j}", alpha=0.6)
            for k, p in enumerate(pts):
                sizes[p.model] = p.params
                figures.point(ax, x[k], p.estimate, f"C{j}", label=name if k == 0 and i == 0 else None, size=4)
            fitted = s.slopes[name]
            if fitted is not None:  # the table's least-squares line passes through the means
                y = np.array([p.estimate.value for p in pts]) * 100
                ends = np.array([x.min(), x.max()])
                ax.plot(ends, y.mean() + fitted.value * 100 * (ends - x.mean()), "--", lw=0.8, color=f"C{j}")
        if floors is not None:
            chance, constant = floors.get(s.task, (None, None))
            figures.references(ax, chance, constant, label=i == 0)
            figures.finish(ax, s.task, unit if i % figures.MAX_COLUMNS == 0 else None)
        else:
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_title(s.task, fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if i % figures.MAX_COLUMNS == 0:
                ax.set_ylabel(unit, fontsize=8)
        _size_axis(ax, sizes)
    axes[0].legend(fontsize=6, loc="best")
    plots.save(fig, path)
    return True


ATTEMPT_RUNGS = ("control", "zero-shot", "demos", "random-label demos", "ecological")


def _attempt(d: Decomposition, rung: str):
    """The attempt rate of one rung of a task's ladder, or None."""
    name = {"demos": f"k={d.few}", "random-label demos": f"random labels k={d.few}"}.get(rung, rung)
    for key, (rate, _) in d.attempts.items():
        if key == name or (rung == "ecological" and key.startswith("ecological")):
            return rate
    return None


def draw_attempts(by_task: dict[str, list], path: Path) -> bool:
    """A panel per task with at least two models: each rung's attempt rate (valid mass, or well-formed share)
    against size, in percent, with 95% intervals."""
    shown = [
        (task, rows) for task, rows in sorted(by_task.items()) if len(rows) > 1 and any(d.attempts for *_, d in rows)
    ]
    if not shown:
        return False
    fig, axes = figures.panels(len(shown), width=3.2, height=3.0)
    for i, (ax, (task, rows)) in enumerate(zip(axes, shown)):
        rows = sorted(rows, key=lambda row: row[1])
        for j, rung in enumerate(ATTEMPT_RUNGS):
            shift = (j - (len(ATTEMPT_RUNGS) - 1) / 2) * 0.012  # side by side, not over each other
            found = [(np.log10(p) + shift, _attempt(d, rung)) for _, p, d in rows]
            found = [(x, e) for x, e in found if e is not None]
            if len(found) < 2:
                continue
            ax.plot([x for x, _ in found], [e.value * 100 for _, e in found], "-", lw=0.8, color=f"C{j}", alpha=0.6)
            for k, (x, e) in enumerate(found):
                figures.point(ax, x, e, f"C{j}", label=rung if k == 0 and i == 0 else None, size=4)
        read_as = " / ".join(ATTEMPT_WORDS[generates(task)])
        figures.finish(
            ax, f"{task} ({read_as.split(' / ')[0]})", "attempt rate (%)" if i % figures.MAX_COLUMNS == 0 else None
        )
        _size_axis(ax, {m: p for m, p, _ in rows})
    axes[0].legend(fontsize=6, loc="best")
    plots.save(fig, path)
    return True


def draw_slopes(scalings: list[TaskScaling], path: Path) -> bool:
    """A forest plot: per task, the slope of the best prompt and of the ecological method (points per tenfold
    parameters, over every model that has each), with 95% intervals; a zero line."""
    shown = [s for s in scalings if any(s.slopes[n] is not None for n in HEADLINE)]
    if not shown:
        return False
    fig, ax = plots.subplots(figsize=(6, 0.45 * len(shown) + 1.4))
    for i, s in enumerate(reversed(shown)):
        for j, name in enumerate(HEADLINE):
            e = s.slopes[name]
            if e is None:
                continue
            lo, hi = e.ci
            y = i + (0.15 if j == 0 else -0.15)
            # the interval as a line, not as errors around the point: a percentile bootstrap interval of a slope
            # fitted over few sizes can lie wholly on one side of the estimate
            ax.hlines(y, lo * 100, hi * 100, color=f"C{j}", linewidth=1.2)
            ax.plot([e.value * 100], [y], "o", color=f"C{j}", ms=4, label=name if i == 0 else None)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(shown)), [s.task for s in reversed(shown)], fontsize=8)
    ax.set_xlabel("slope, points per tenfold parameters (95% interval)", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("per-task slopes over all models with each score (validity: see the table)", fontsize=9)
    plots.save(fig, path)
    return True
