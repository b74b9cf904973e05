"""Write <out>/summary.csv, <out>/report.md, its browser page report.html and the plots from the store alone (no
model is loaded).

Re-rendering the same store gives byte-identical files: no timestamps, fixed ordering, fixed bootstrap seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from harness import plots
from harness import report_answer as answer
from harness import report_decomposition as decomposition
from harness import report_figures as figures
from harness import report_presidents as presidents
from harness import report_ranks as ranks
from harness import report_scaling as scaling
from harness import report_screen as screen
from harness import report_worth as worth
from harness.analysis import AGGREGATES, ALL, TaskResult, analyse
from harness.decompose import decompose
from harness.filenames import slug
from harness.markdown import fmt, params_text, table
from harness.methods import CONTROL_SUFFIX, RANDOM_INIT_SUFFIX, TRAINED_METHODS, is_control_task, is_random_init
from harness.metrics import Estimate, main_metric
from harness.report_curves import plot_learning_curves
from harness.report_html import write_report
from harness.store import Store, UnitName


def fmt_rank(e: Estimate | None) -> str:
    if e is None:
        return "–"
    lo, hi = e.ci
    return f"{e.value:.0f} [{lo:.0f}, {hi:.0f}]"


def _shot_levels(result: TaskResult) -> list[int]:
    return sorted({k[2] for k in result.estimates if k[0] == "prompt" and k[1] == "gold"})


def _get(result: TaskResult, method, variant, shots, template, metric, seed=ALL) -> Estimate | None:
    return result.estimates.get((method, variant, shots, template, seed, metric))


def _agg(result: TaskResult, variant: str, shots: int, template: str, metric: str) -> Estimate | None:
    """An aggregate over templates; with a single template the aggregate is that template."""
    e = _get(result, "prompt", variant, shots, template, metric)
    if e is None and template in ("mean", "min", "max"):
        e = _get(result, "prompt", variant, shots, "mean", metric)
    return e


def eval_n(result: TaskResult) -> str:
    """The number of eval metric groups (examples; questions for MultiRC) every score of a task is over."""
    metric = main_metric(result.task)
    ns = {e.n for k, e in result.estimates.items() if k[-1] == metric and k[0] != "baseline" and k[3] != "mean"}
    if result.design == "sampled":  # a template's scores are over its share of the examples; the task's over all
        ns = {e.n for k, e in result.estimates.items() if k[-1] == metric and k[0] != "baseline" and k[3] == "mean"}
    ns = ns or {e.n for k, e in result.estimates.items() if k[-1] == metric}
    return "/".join(str(n) for n in sorted(ns)) if ns else "–"


def task_rows(result: TaskResult) -> tuple[list[str], list[str]]:
    """One row of the scores table and one of the diagnostics table."""
    metric = main_metric(result.task)
    levels = _shot_levels(result)
    few = max(levels) if levels else 0
    one = 1 if 1 in levels else None
    zero_mean = _agg(result, "gold", 0, "mean", metric)
    zero_min, zero_max = _agg(result, "gold", 0, "min", metric), _agg(result, "gold", 0, "max", metric)
    zero = fmt(zero_mean)
    if zero_min is not None and zero_max is not None and zero_mean is not None:
        zero += f" ({fmt(zero_min, ci=False)}–{fmt(zero_max, ci=False)})"
    scores = [
        result.task,
        metric,
        eval_n(result),
        fmt(_get(result, "baseline", "chance", 0, "-", metric, seed="-"), ci=False),
        fmt(_get(result, "baseline", "majority", 0, "-", metric, seed="-"), ci=False),
        fmt(_agg(result, "control", 0, "mean", metric)),
        zero,
        fmt(_agg(result, "gold", one, "mean", metric)) if one else "–",
        fmt(_agg(result, "gold", few, "mean", metric)) if few else "–",
        fmt(_agg(result, "calibrated", 0, "mean", metric)),
        fmt(_agg(result, "calibrated", few, "mean", metric)) if few else "–",
        fmt(_agg(result, "random_labels", few, "mean", metric)) if few else "–",
    ]
    diagnostics = [
        result.task,
        fmt(_agg(result, "gold", 0, "mean", "attempt_rate")),
        fmt(_agg(result, "gold", 0, "mean", "top1_valid")),
        fmt(_agg(result, "gold", 0, "mean", "acc_when_attempted")),
        fmt(_agg(result, "gold", few, "mean", "attempt_rate")) if few else "–",
        fmt(_agg(result, "gold", few, "mean", "acc_when_attempted")) if few else "–",
        fmt_rank(_agg(result, "gold", 0, "mean", "median_gold_rank")),
        fmt(_get(result, "prompt", "gold", 0, "spread", metric), ci=False),
        fmt(_get(result, "prompt", "gold", few, "spread", metric), ci=False) if few else "–",
    ]
    return scores, diagnostics


def _trained_variants(result: TaskResult) -> list[tuple[str, str, int]]:
    """(method, variant, train size) of the trained methods present, task variants only."""
    found = {
        (k[0], k[1], k[2])
        for k in result.estimates
        if k[0] in TRAINED_METHODS and not is_control_task(k[1]) and not is_random_init(k[1]) and k[3] == "mean"
    }
    return sorted(found, key=lambda x: (TRAINED_METHODS.index(x[0]), x[1], x[2]))


def _unit_infos(result: TaskResult, method: str, variant: str, shots: int, control: bool = False) -> list[dict]:
    stored = variant + CONTROL_SUFFIX if control else variant
    return [
        info
        for (m, key), info in sorted(result.unit_infos.items())
        if m == method and (name := UnitName.parse(key)).variant == stored and name.size == f"n{shots}"
    ]


def trained_rows(result: TaskResult) -> list[list[str]]:
    """A row per trained method variant and train size: score, control task, selectivity, parameters trained."""
    metric = main_metric(result.task)
    rows = []
    for method, variant, n in _trained_variants(result):
        infos = _unit_infos(result, method, variant, n)
        detail = "–"
        if infos and method == "probe":
            layers = sorted({i.get("layer") for i in infos})
            detail = "layer " + ", ".join(str(x) for x in layers) + " (CV on train)"
            compression = [i["compression"] for i in infos if "compression" in i]
            if compression:
                base = [i["compression"] for i in _unit_infos(result, method, variant + RANDOM_INIT_SUFFIX, n)]
                detail += f"; MDL compression {'/'.join(f'{c:.2f}' for c in compression)}"
                detail += f" (random-init {'/'.join(f'{c:.2f}' for c in base)})" if base else ""
        elif infos and method == "ccs":
            layers = sorted({i.get("layer") for i in infos})
            detail = "layer " + ", ".join(str(x) for x in layers) + " (train accuracy); no label in the fit"
            detail += "; CCS loss " + "/".join(f"{i['loss']:.3f}" for i in infos)
            detail += f"; sign flipped on train labels in {sum(i['sign_flipped'] for i in infos)} of {len(infos)}"
        elif infos:
            best = [i.get("best_step") for i in infos]
            run = [i.get("steps_run") for i in infos]
            detail = f"best step {'/'.join(map(str, best))} of {'/'.join(map(str, run))}"
            flags = [i["converged"] for i in infos if "converged" in i]
            if flags and not all(flags):
                detail += f"; NOT CONVERGED ({flags.count(False)} of {len(flags)} hit a cap; no verdict)"
            elif flags:
                detail += "; converged"
        params = f"{infos[0]['trained_params']:,}" if infos and "trained_params" in infos[0] else "–"
        rows.append(
            [
                result.task,
                method,
                variant,
                str(n),
                str(len(infos)),
                eval_n(result),
                fmt(_get(result, method, variant, n, "mean", metric)),
                fmt(_get(result, method, variant + RANDOM_INIT_SUFFIX, n, "mean", metric)),
                fmt(_get(result, method, variant, n, "mean", f"selectivity_{metric}")),
                fmt(_get(result, method, variant + CONTROL_SUFFIX, n, "mean", metric)),
                params,
                detail,
            ]
        )
    return rows


def template_table(result: TaskResult) -> list[str]:
    metric = main_metric(result.task)
    levels = _shot_levels(result)
    templates = sorted(
        {k[3] for k in result.estimates if k[0] == "prompt" and k[1] == "gold" and k[3] not in AGGREGATES}
    )
    rows = []
    for t in templates:
        cells = [t]
        for k in levels:
            e = _get(result, "prompt", "gold", k, t, metric) or _get(result, "prompt", "gold", k, t, metric, seed=0)
            cells.append(fmt(e))
        rows.append(cells)
    controls = sorted({k[3] for k in result.estimates if k[1] == "control" and k[3] not in AGGREGATES})
    for t in controls:
        rows.append(
            [f"{t} (control)", fmt(_get(result, "prompt", "control", 0, t, metric, seed=0))] + ["–"] * (len(levels) - 1)
        )
    return table(["template"] + [f"k={k}" for k in levels], rows)


def plot_spread(results: list[TaskResult], path: Path, title: str) -> None:
    """Per task: each template's score at each k (mean over seeds) with its 95% interval; chance, the best
    constant answer and the control prompt marked."""
    shown = [r for r in results if r.estimates]
    crowded = len(shown) > 8  # many tasks (the arithmetic suite): narrower columns, slanted one-line labels
    size = (0.7 * len(shown) + 2, 4.8) if crowded else (max(6, 1.6 * len(shown)), 4.2)
    fig, ax = plots.subplots(figsize=size)
    for x, result in enumerate(shown):
        metric = main_metric(result.task)
        levels = _shot_levels(result)
        for j, k in enumerate(levels):
            found = []
            for key, e in result.estimates.items():
                method, variant, shots, template, seed, m = key
                if (method, variant, shots, m) == ("prompt", "gold", k, metric) and template not in AGGREGATES:
                    if seed == ALL or (
                        seed == 0 and (method, variant, shots, template, ALL, m) not in result.estimates
                    ):
                        found.append(e)
            found.sort(key=lambda e: e.value)
            slot = 0.8 / max(len(levels), 1)  # each k its share of the task's column; templates side by side in it
            for i, e in enumerate(found):
                within = (i / (len(found) - 1) - 0.5) * slot * 0.8 if len(found) > 1 else 0.0
                offset = (j - (len(levels) - 1) / 2) * slot + within
                figures.point(ax, x + offset, e, f"C{j}", label=f"k={k}" if x == 0 and i == 0 else None, size=3)
        references = [
            (_get(result, "baseline", "chance", 0, "-", metric, seed="-"), "grey", "dashed", "chance"),
            (_get(result, "baseline", "constant", 0, "-", metric, seed="-"), "black", "dotted", "best constant"),
            (_agg(result, "control", 0, "mean", metric), "red", "dashdot", "control"),
        ]
        for estimate, color, style, label in references:
            if estimate:
                ax.hlines(
                    estimate.value * 100,
                    x - 0.4,
                    x + 0.4,
                    colors=color,
                    linestyles=style,
                    label=label if x == 0 else None,
                )
    if crowded:
        labels = [f"{r.task} ({main_metric(r.task)})" for r in shown]
        ax.set_xticks(range(len(shown)), labels, rotation=50, ha="right", fontsize=8)
    else:
        ax.set_xticks(range(len(shown)), [f"{r.task}\n({main_metric(r.task)})" for r in shown])
    ax.set_ylabel("score (%), one point per template, 95% interval")
    ax.set_ylim(-3, 103)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    plots.save(fig, path)


# ---------------------------------------------------------------------------------------------------- sections
@dataclass
class ReportContext:
    """What every section of report.md reads: the output folder, the open store and its analysed results."""

    out: Path
    store: Store
    results: list[TaskResult]
    models: list[tuple[str, int, dict]]  # (name, parameters, info), as the store lists them

    @property
    def scored_tasks(self) -> list[TaskResult]:
        """Every task but the presidents probe (which has its own section)."""
        return [r for r in self.results if r.task != presidents.TASK]


Section = Callable[[ReportContext], list[str]]


def title(ctx: ReportContext) -> list[str]:
    return ["# harness report", ""]


def about_section(ctx: ReportContext) -> list[str]:
    """`about.md`, verbatim: what the report supports, in its author's words."""
    return answer.about(ctx.out)


def screen_section(ctx: ReportContext) -> list[str]:
    """The first screen: per model and across sizes, what the evidence supports (harness/report_screen.py)."""
    # a report of the presidents list alone has no choice task: its first screen is the list's answer
    return screen.section(ctx.models, ctx.scored_tasks) or presidents.screen(screen.HEADING, ctx.models, ctx.results)


def answer_section(ctx: ReportContext) -> list[str]:
    """The answer table per model (harness/report_answer.py)."""
    return answer.section([m for m, _, _ in ctx.models], ctx.scored_tasks)


def produced_by(ctx: ReportContext) -> list[str]:
    """The command (or commands, in order) that wrote the store."""
    commands = ctx.store.get_meta("commands") or [c for c in [ctx.store.get_meta("command")] if c]
    if len(commands) == 1:
        return ["Produced by:", "", "```", str(commands[0]), "```", ""]
    if commands:
        return [
            "Produced by these commands, in order, into one results store (each resumes and adds):",
            "",
            "```",
            *map(str, commands),
            "```",
            "",
        ]
    return []


def data_settings(ctx: ReportContext) -> list[str]:
    """The eval data, its limit and the bootstrap, from the stored config."""
    config = ctx.store.get_meta("config") or {}
    if not config:
        return []
    return [
        f"Data: {config.get('data')}; eval split: val; limit: {config.get('limit') or 'all'} "
        f"(seeded, label-stratified; seed {config.get('limit_seed', 0)}); demo selection: {config.get('demo_selection')}; "
        f"bootstrap: 1000 resamples of examples (questions for MultiRC), 95% percentile intervals.",
        "",
        *design_line(ctx.store.get_meta("design")),
    ]


def design_line(design: dict | None) -> list[str]:
    """Which prompt design produced the prompt numbers: said only where a store records one (older stores and
    every full-design report before designs existed read as they did)."""
    if not design:
        return []
    if design.get("design") != "sampled":
        return ["Prompt design: full: every gold, calibrated and random-label prompt scored every eval example.", ""]
    return [
        f"Prompt design: sampled (--template-share {design['template_share']}): each eval example was scored "
        "under a seeded, balanced subset of the templates, about that share of them, in the gold, calibrated and "
        "random-label prompts; control prompts and trained methods scored every example. Every prompt number "
        "(per template, mean over templates, worst and best) is this design's estimate: a template's score is over "
        "its share of the examples, the mean over templates is unbiased for the full grid's, and its interval "
        "includes the design's variance (harness/design.py); worst and best are plain extremes, stretched by the "
        "smaller samples (summary.csv's `median` and `best` rows carry intervals, `best` corrected for the "
        "winner's curse).",
        "",
    ]


def legend(ctx: ReportContext) -> list[str]:
    return [
        "Scores are percentages. `zero-shot` is the mean over templates with its 95% interval, then (worst–best "
        "template). Few-shot columns are means over templates and demo seeds. `control` prompts carry no task "
        "information; `calibrated` is contextual calibration with a content-free input; `random labels` uses the "
        "same demos with random labels. Whether the model attempts the task is read per answer kind: `valid mass` "
        "is the probability mass on the first tokens of the valid answers (choice tasks), `top-1 valid` how often "
        "the unconstrained next token starts a valid answer and `acc when top-1 valid` the accuracy on those "
        "examples; `well-formed` is the share of generated answers that match the task's answer pattern and `em "
        "when well-formed` their exact match (generated answers). `gold rank` is the median full-vocabulary rank "
        "of the gold answer's first token; `spread` = best - worst template.",
        "",
    ]


def scaling_section(ctx: ReportContext) -> list[str]:
    """Across the models of one family (harness/report_scaling.py)."""
    return scaling.section(ctx.models, ctx.scored_tasks, ctx.out, Path(plots.PLOTS) / "scaling.png")


def worth_across_sizes(ctx: ReportContext) -> list[str]:
    """Does a bigger model's prompt stand for more examples (harness/report_worth.py)? Read with the cross-size
    section, whose subsection it is."""
    return worth.across_sizes(ctx.models, ctx.scored_tasks, ctx.out)


def ranks_section(ctx: ReportContext) -> list[str]:
    """Where the gold answer ranks among the choices, per model and task (harness/report_ranks.py)."""
    return ranks.section(ctx.store, ctx.models, ctx.scored_tasks, ctx.out, Path(plots.PLOTS) / "gold-rank.png")


def presidents_section(ctx: ReportContext) -> list[str]:
    """The presidents probe (harness/report_presidents.py)."""
    return presidents.section(ctx.store, ctx.models, ctx.results, ctx.out, Path(plots.PLOTS) / "presidents.png")


@dataclass
class ModelContext:
    """What a per-model section reads: the report's context and one model's task results (presidents aside)."""

    report: ReportContext
    model: str
    params: int
    info: dict

    @cached_property
    def results(self) -> list[TaskResult]:
        return [r for r in self.report.scored_tasks if r.model == self.model]

    @cached_property
    def scored(self) -> list[TaskResult]:
        return [r for r in self.results if r.estimates]

    @cached_property
    def skipped(self) -> list[TaskResult]:
        return [r for r in self.results if not r.estimates]

    @cached_property
    def prompted(self) -> list[TaskResult]:
        """The tasks the prompt method ran on."""
        return [r for r in self.scored if _shot_levels(r)]

    @property
    def few(self) -> int:
        """The largest number of demos any prompted task was run with."""
        return max(k for r in self.prompted for k in _shot_levels(r))

    @cached_property
    def trained(self) -> list[list[str]]:
        """The rows of the trained-methods table."""
        return [row for r in self.scored for row in trained_rows(r)]


ModelSection = Callable[[ModelContext], list[str]]


def model_heading(m: ModelContext) -> list[str]:
    info = m.info
    return [
        f"## {m.model}",
        "",
        f"{params_text(m.params)} parameters; {info.get('source', '')}; device {info.get('device')}, {info.get('dtype')}.",
        "",
    ]


def decomposition_section(m: ModelContext) -> list[str]:
    """Prompted tasks: the decomposition of the prompt-trained gap (harness/report_decomposition.py)."""
    return decomposition.section(m.prompted) + [""] if m.prompted else []


def ladder_plot_section(m: ModelContext) -> list[str]:
    """The ladder as a figure: a panel per task, every rung with its interval (harness/report_figures.py)."""
    plot = Path(plots.PLOTS) / f"{slug(m.model)}-ladder.png"
    found = [decompose(r) for r in m.scored]
    if not figures.plot_ladder(found, m.report.out / plot, f"{m.model}: the ladder, per task"):
        return []
    return [f"![the ladder per task]({plot.as_posix()})", ""]


def shots_plot_section(m: ModelContext) -> list[str]:
    """The attempt rate and the score when attempted against the number of demos (harness/report_figures.py)."""
    plot = Path(plots.PLOTS) / f"{slug(m.model)}-attempts-by-shots.png"
    if not m.prompted or not figures.plot_attempts_by_shots(
        m.prompted, m.report.out / plot, f"{m.model}: attempt rate and score when attempted against demos"
    ):
        return []
    return ["", f"![attempt rate against demos]({plot.as_posix()})"]


def scores_section(m: ModelContext) -> list[str]:
    """One row per task: reference points, then the prompt's scores where it ran (trained methods only: the
    reference points alone)."""
    if not m.prompted:
        if not m.scored:
            return []
        return ["### Scores", ""] + table(
            ["task", "metric", "n", "chance", "majority"], [task_rows(r)[0][:5] for r in m.scored]
        )
    few = m.few
    return ["### Scores", ""] + table(
        [
            "task",
            "metric",
            "n",
            "chance",
            "majority",
            "control",
            "zero-shot",
            "one-shot",
            f"few-shot (k={few})",
            "calibrated k=0",
            f"calibrated k={few}",
            f"random labels k={few}",
        ],
        [task_rows(r)[0] for r in m.prompted],
    )


def attempts_section(m: ModelContext) -> list[str]:
    """Prompted tasks: does the model attempt the task, and how well when it does. "Attempt" is read per answer
    kind, under its own name: the mass on valid answers (choices), the share of well-formed answers (generated)."""
    if not m.prompted:
        return []
    few = m.few
    choice = [task_rows(r)[1] for r in m.prompted if not decomposition.generates(r.task)]
    generated = [task_rows(r)[1] for r in m.prompted if decomposition.generates(r.task)]
    lines = ["", "### Does it attempt the task?", ""]
    if choice:
        lines += table(
            [
                "task",
                "valid mass k=0",
                "top-1 valid k=0",
                "acc when top-1 valid k=0",
                f"valid mass k={few}",
                f"acc when top-1 valid k={few}",
                "gold rank k=0",
                "spread k=0",
                f"spread k={few}",
            ],
            choice,
        )
    if generated:  # top-1 valid is the well-formed share itself here: one column
        lines += ["", "Generated answers:", ""] if choice else []
        lines += table(
            [
                "task",
                "well-formed k=0",
                "em when well-formed k=0",
                f"well-formed k={few}",
                f"em when well-formed k={few}",
                "gold rank k=0",
                "spread k=0",
                f"spread k={few}",
            ],
            [row[:2] + row[3:] for row in generated],
        )
    return lines


def trained_section(m: ModelContext) -> list[str]:
    """The trained methods: score, random-init, selectivity, permuted labels, and each method's settings."""
    if not m.trained:
        return []
    lines = ["", "### Trained methods (ecological)", ""]
    lines += [
        "Trained on a seeded sample of train (`train n`; a quarter held out for early stopping, "
        "eval data never used for any choice), scored on the same eval examples. `random-init`: "
        "the same method, training budget and tokenizer on the architecture with seeded, "
        "re-initialised weights, i.e. what the method learns from the examples alone; "
        "`selectivity` = score - random-init, paired over examples: what pretraining contributes. "
        "`permuted labels`: trained and scored with labels permuted at random, a sanity check that "
        "should sit at chance (it cannot fail as a control). `MDL compression`: uniform codelength "
        "/ the probe's online codelength on train (Voita & Titov 2020). Intervals cover examples "
        "and training seeds.",
        "",
    ]
    lines += table(
        [
            "task",
            "method",
            "variant",
            "train n",
            "seeds",
            "eval n",
            "score",
            "random-init",
            "selectivity",
            "permuted labels (sanity)",
            "trained params",
            "model selection",
        ],
        m.trained,
    )
    details = sorted(
        {
            f"{method}: {info.get(method)}"
            for r in m.scored
            for (method, _), info in r.unit_infos.items()
            if method in ("bitfit", "ptune") and info.get(method)
        }
    )
    if any(row[1] == "ccs" for row in m.trained):
        details.append(CCS_NOTE)
    return lines + [""] + [f"- {d}" for d in details]


CCS_NOTE = (
    "ccs: Contrast-Consistent Search (Burns et al. 2022) is fit without labels; train labels only fix its sign and "
    "pick its layer. Farquhar et al. (2023) show CCS finds whichever feature of the contrast is most prominent, not "
    "necessarily knowledge: read it against the supervised probe above and its own random-init run (a CCS score no "
    "better than its random-init's found nothing pretraining put there). Unsupervised, it is never the ecological "
    "rung."
)


def learning_curves_section(m: ModelContext) -> list[str]:
    """The trained methods' scores against train size, where more than one size was run."""
    curve_plot = Path(plots.PLOTS) / f"{slug(m.model)}-learning-curves.png"
    if not m.trained or not plot_learning_curves(
        m.scored, m.report.out / curve_plot, f"{m.model}: score against train size"
    ):
        return []
    return [
        "",
        "Learning curves: each method's eval score against its train sample size (dashed: the "
        "same method on the random-init copy; dotted: the best constant answer). The ecological "
        "rung of the answer and the ladder is read at the largest size run.",
        "",
        f"![learning curves]({curve_plot.as_posix()})",
    ]


def worth_section(m: ModelContext) -> list[str]:
    """The examples each trained method needs to match the best prompt (harness/report_worth.py)."""
    return worth.model_section(m.scored)


def probe_layers_section(m: ModelContext) -> list[str]:
    """The probe's accuracy at each layer, where a probe was trained."""
    layer_plot = Path(plots.PLOTS) / f"{slug(m.model)}-probe-layers.png"
    if not m.trained or not figures.plot_probe_layers(
        m.scored, m.report.out / layer_plot, f"{m.model}: probe accuracy by layer"
    ):
        return []
    return [
        "",
        "Probe by layer, at each task's largest train size: the cross-validated train accuracy that picks the layer "
        "(solid; dashed: the random-init copy's), the picked layer marked with its eval score.",
        "",
        f"![probe accuracy by layer]({layer_plot.as_posix()})",
    ]


def per_template_section(m: ModelContext) -> list[str]:
    """Prompted tasks: each template's score at each k, after a plot of them all."""
    if not m.prompted:
        return []
    plot = Path(plots.PLOTS) / f"{slug(m.model)}-template-spread.png"
    plot_spread(m.prompted, m.report.out / plot, f"{m.model}: score of each template")
    lines = ["", f"![template spread]({plot.as_posix()})", "", "### Per template", ""]
    for r in m.prompted:
        n = r.info.get("n_eval")
        groups = r.info.get("n_groups")
        size = f"{n} examples" + (f" in {groups} groups" if groups and groups != n else "")
        lines += [
            f"#### {r.task} ({main_metric(r.task)}; {size}; demos from {r.info.get('train_source', '–')})",
            "",
        ]
        lines += template_table(r)
        for note in r.info.get("notes", []):
            lines += ["", f"Note: {note}"]
        lines.append("")
    return lines


def not_evaluated_section(m: ModelContext) -> list[str]:
    """The tasks a model was not run on, and why."""
    return [line for r in m.skipped for line in (f"**{r.task}: not evaluated.** {r.info.get('skipped', '')}", "")]


# A model's part of the report, rendered in this order for each model the store holds.
MODEL_SECTIONS: list[ModelSection] = [
    model_heading,
    decomposition_section,
    ladder_plot_section,
    scores_section,
    attempts_section,
    shots_plot_section,
    trained_section,
    learning_curves_section,
    worth_section,
    probe_layers_section,
    per_template_section,
    not_evaluated_section,
]


def models_section(ctx: ReportContext) -> list[str]:
    """Per model: MODEL_SECTIONS in order."""
    lines: list[str] = []
    for model, params, info in ctx.models:
        m = ModelContext(ctx, model, params, info)
        for section in MODEL_SECTIONS:
            lines += section(m)
    return lines


# report.md: these sections in this order. A new section is a function (ReportContext) -> lines, here or in its
# own harness/report_<name>.py, and one entry in this list.
SECTIONS: list[Section] = [
    title,
    about_section,
    screen_section,
    answer_section,
    produced_by,
    data_settings,
    legend,
    scaling_section,
    worth_across_sizes,
    presidents_section,
    ranks_section,
    models_section,
]


def render(out_dir: str | Path) -> Path:
    """Regenerate summary.csv, report.md (SECTIONS in order), report.html and plots/ from <out_dir>/results.db."""
    out = Path(out_dir)
    store = Store(out, create=False)
    try:
        frame, results = analyse(store)
        frame.to_csv(out / "summary.csv", index=False, float_format="%.6g")
        ctx = ReportContext(out, store, results, store.models())
        lines = [line for section in SECTIONS for line in section(ctx)]
        return write_report(out, lines)
    finally:
        store.close()
