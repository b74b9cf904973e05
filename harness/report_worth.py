"""A prompt's worth in labelled examples (Le Scao & Rush 2021): the train size at which each trained method's
learning curve first reaches the best prompt picked on train, per model and task, and across model sizes.

The prompt is the decomposition's best prompt (gold or calibrated, any k, picked by its train score; eval data
never picks it). Prompt and method are scored on the same eval examples and read on the same bootstrap resamples,
so the interval of the matching size is paired (harness/data_equivalent.py holds the rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness import plots
from harness.analysis import TaskResult
from harness.data_equivalent import ABOVE, BELOW, DataEquivalent, data_equivalent
from harness.decompose import Choice, decompose
from harness.markdown import fmt, params_text, table
from harness.methods import is_random_init
from harness.report_curves import curve_estimates

PLOT = "worth-in-examples.png"


@dataclass
class Worth:
    """One trained method's learning curve read against one (model, task)'s best prompt."""

    model: str
    task: str
    method: str  # the curve's variant (prompt-tuning, bitfit, probe, ...)
    curve: list[tuple[int, float]]  # (train n, score)
    largest_label: str
    prompt: Choice | None
    examples: DataEquivalent | None  # None without a prompt picked on train


def worths(result: TaskResult) -> list[Worth]:
    """A Worth per trained method run at two or more train sizes on this task (random-init copies left out)."""
    found = {k: v for k, v in curve_estimates(result).items() if not is_random_init(k[1]) and len(v) > 1}
    if not found:
        return []
    prompt = decompose(result).best_prompt
    out = []
    for (_, variant), points in found.items():
        sizes = [n for n, _ in points]
        label = f"{sizes[-1]} (all)" if sizes[-1] == result.info.get("n_train") else ""
        examples = None
        if prompt is not None:
            examples = data_equivalent(sizes, [e for _, e in points], prompt.estimate, largest_label=label)
        curve = [(n, e.value) for n, e in points]
        out.append(Worth(result.model, result.task, variant, curve, label, prompt, examples))
    return out


EXPLANATION = (
    "How many labelled examples the best prompt is worth to each trained method: the train size at which the "
    "method's learning curve first reaches the eval score of the best prompt picked on train (the guess-vs-do "
    "section's; gold or calibrated, any k), interpolated linearly in log train size between the two sizes around "
    "the crossing (Le Scao & Rush 2021). 95% intervals: the same rule on each bootstrap resample of the eval "
    "examples, prompt and method on the same resample (paired; the method's replicates also cover training seeds). "
    "`below 8`: the method already matches the prompt at the smallest size run, so the prompt is worth at most "
    "that many examples; `above N`: the method falls short even at the largest size (`(all)`: the whole train "
    "split). A curve that dips and rises again is read at its first crossing. The prompt itself was picked with "
    "train examples too (its train score), which this count does not add."
)


def _curve_text(w: Worth) -> str:
    return ", ".join(
        f"{w.largest_label if i == len(w.curve) - 1 and w.largest_label else n}: {v * 100:.1f}"
        for i, (n, v) in enumerate(w.curve)
    )


def _examples(w: Worth | None) -> str:
    return w.examples.interval_text() if w is not None and w.examples is not None else "–"


def _prompt_text(c: Choice | None) -> str:
    return f"{fmt(c.estimate)} ({c.label})" if c is not None else "– (no prompt picked on train)"


def model_section(results: list[TaskResult]) -> list[str]:
    """One model's table: per task and trained method, the examples that match the best prompt."""
    found = [w for r in results for w in worths(r)]
    if not found:
        return []
    rows = [
        [
            w.task,
            _prompt_text(w.prompt),
            w.method,
            _curve_text(w),
            _examples(w),
        ]
        for w in found
    ]
    header = ["task", "best prompt (picked on train)", "method", "learning curve (train n: score)", "examples to match"]
    return ["", "### A prompt's worth in examples", "", EXPLANATION, "", *table(header, rows)]


def across_sizes(models: list[tuple[str, int, dict]], results: list[TaskResult], out: Path) -> list[str]:
    """Per task and method, the examples each model's best prompt is worth, smallest model first; one plot."""
    if len(models) < 2:
        return []
    order = [m for m, _, _ in sorted(models, key=lambda m: m[1])]
    params = {m: p for m, p, _ in models}
    by_key: dict[tuple[str, str], dict[str, Worth]] = {}
    for r in results:
        if r.model in params:
            for w in worths(r):
                by_key.setdefault((w.task, w.method), {})[w.model] = w
    shown = {k: v for k, v in sorted(by_key.items()) if len(v) > 1 and any(w.examples for w in v.values())}
    if not shown:
        return []
    rows = []
    for (task, method), per_model in shown.items():
        rows.append([task, method, *(_examples(per_model.get(m)) for m in order), trend(per_model, order)])
    lines = [
        "### A prompt's worth in examples, across sizes",
        "",
        "Does a bigger model's prompt stand for more labelled examples? Per task and trained method, the examples "
        "at which the method matches each model's best prompt (as in each model's section; 95% paired intervals). "
        "`smallest -> largest` is the ratio of the two models' counts with its interval, from the same resamples "
        "(every model is scored on the same eval examples); a count below or above the sizes run has no ratio.",
        "",
        *table(["task", "method", *(f"{m} ({params_text(params[m])})" for m in order), "smallest -> largest"], rows),
    ]
    plot_worth(shown, order, out / plots.PLOTS / PLOT)
    return lines + ["", f"![a prompt's worth in examples]({plots.PLOTS}/{PLOT})", ""]


def trend(per_model: dict[str, Worth], order: list[str]) -> str:
    """The largest model's count over the smallest's, with a paired interval; in words where a count is censored."""
    present = [m for m in order if m in per_model and per_model[m].examples is not None]
    if len(present) < 2:
        return "–"
    small, large = per_model[present[0]].examples, per_model[present[-1]].examples
    assert small is not None and large is not None
    if not (math.isfinite(small.value) and math.isfinite(large.value)):
        return f"{small.text()} -> {large.text()}"
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = large.samples / small.samples  # a censored replicate gives 0, inf or NaN: no interval then
    ok = ratios[np.isfinite(ratios) & (ratios > 0)]
    text = f"x{large.value / small.value:.2f}"
    if len(ok) >= 0.95 * len(ratios):
        lo, hi = np.percentile(ok, [2.5, 97.5], method="inverted_cdf")
        return f"{text} [{lo:.2f}, {hi:.2f}]"
    return f"{text} (no interval: over 5% of resamples fall outside the sizes run)"


def plot_worth(shown: dict[tuple[str, str], dict[str, Worth]], order: list[str], path: Path) -> None:
    """A panel per task: examples to match the best prompt (log scale) per model, one series per method, with
    95% intervals; a count below the smallest or above the largest size run is drawn at that size as a
    triangle pointing the way it goes."""
    tasks = sorted({task for task, _ in shown})
    methods = sorted({method for _, method in shown})
    fig, axes = plots.subplots(1, len(tasks), figsize=(max(4.0, 1.2 * len(order) + 2) * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for j, method in enumerate(methods):
            per_model = shown.get((task, method), {})
            offset = (j - (len(methods) - 1) / 2) * 0.12
            label: str | None = method  # the legend names each method once
            for x, model in enumerate(order):
                w = per_model.get(model)
                if w is None or w.examples is None or math.isnan(w.examples.value):
                    continue
                low, high = w.examples.sizes[0], w.examples.sizes[-1]
                y = float(np.clip(w.examples.value, low, high))
                lo, hi = (float(np.clip(v, low, high)) for v in w.examples.ci)
                marker = {BELOW: "v", ABOVE: "^"}.get(w.examples.value, "o")
                ax.errorbar(
                    [x + offset],
                    [y],
                    yerr=plots.error_lengths([y], [lo], [hi]),
                    fmt=marker,
                    color=f"C{j % 10}",
                    capsize=3,
                    label=label,
                )
                label = None
        ax.set_yscale("log")
        sizes = sorted(
            {n for (t, _), per_model in shown.items() if t == task for w in per_model.values() for n, _ in w.curve}
        )
        ax.set_yticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_ylim(sizes[0] / 1.4, sizes[-1] * 1.4)
        ax.set_xticks(range(len(order)), order, rotation=20, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(order) - 0.5)
        ax.set_title(task, fontsize=9)
        ax.set_ylabel("examples to match the best prompt")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(
        "A prompt's worth in labelled examples (v: below the smallest size run, ^: above the largest)", fontsize=9
    )
    plots.save(fig, path)
