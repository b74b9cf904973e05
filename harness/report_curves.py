"""Learning curves of the trained methods: score against train size, with 95% intervals, one PNG per model."""

from __future__ import annotations

from pathlib import Path

from harness import plots
from harness.analysis import ALL, TaskResult
from harness.methods import RANDOM_INIT_SUFFIX, TRAINED_METHODS, is_control_task, is_random_init
from harness.metrics import Estimate, main_metric


def curve_estimates(result: TaskResult) -> dict[tuple[str, str], list[tuple[int, Estimate]]]:
    """(method, variant) -> [(train n, score on the main metric, mean over seeds)], sorted by n; random-init
    variants included (they are the curves' baselines), permuted-label sanity checks not."""
    metric = main_metric(result.task)
    out: dict[tuple[str, str], list[tuple[int, Estimate]]] = {}
    for (method, variant, n, template, seed, m), e in result.estimates.items():
        if (
            method in TRAINED_METHODS
            and template == "mean"
            and seed == ALL
            and m == metric
            and not is_control_task(variant)
        ):
            out.setdefault((method, variant), []).append((n, e))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in sorted(out.items())}


def curves(result: TaskResult) -> dict[tuple[str, str], list[tuple[int, float, float, float]]]:
    """curve_estimates as (train n, score, ci low, ci high) in percent."""
    return {
        key: [(n, e.value * 100, e.ci[0] * 100, e.ci[1] * 100) for n, e in points]
        for key, points in curve_estimates(result).items()
    }


def plot_learning_curves(results: list[TaskResult], path: Path, title: str) -> bool:
    """One panel per task with at least two train sizes of some trained method; False (no file) when none has."""
    panels = [(r, c) for r in results if (c := curves(r)) and any(len(points) > 1 for points in c.values())]
    if not panels:
        return False
    fig, axes = plots.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1, 3.8), squeeze=False)
    pretrained = sorted({key for _, c in panels for key in c if not is_random_init(key[1])})
    colors = {key: f"C{i % 10}" for i, key in enumerate(pretrained)}
    for ax, (result, found) in zip(axes[0], panels):
        metric = main_metric(result.task)
        for (method, variant), points in found.items():
            base = variant.removesuffix(RANDOM_INIT_SUFFIX)
            random_init = is_random_init(variant)
            ns, values, lows, highs = zip(*points)
            ax.errorbar(
                ns,
                values,
                yerr=plots.error_lengths(values, lows, highs),
                fmt="o--" if random_init else "o-",
                color=colors.get((method, base), "grey"),
                alpha=0.55 if random_init else 1.0,
                capsize=3,
                markersize=4,
                label=f"{base}{' (random-init)' if random_init else ''}",
            )
        for name, style in (("constant", "dotted"), ("chance", "dashed")):
            e = result.estimates.get(("baseline", name, 0, "-", "-", metric))
            if e is not None:
                ax.axhline(
                    e.value * 100,
                    color="black",
                    linestyle=style,
                    linewidth=0.8,
                    label=f"best {name}" if name == "constant" else name,
                )
        ax.set_xscale("log")
        sizes = sorted({n for points in found.values() for n, *_ in points})
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("train examples (log scale)")
        ax.set_ylabel(f"{metric} (%), 95% interval")
        ax.set_title(f"{result.task} (n={result.info.get('n_eval', '–')} eval)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=10)
    plots.save(fig, path)
    return True
