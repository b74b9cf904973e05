"""A model's figures: the ladder per task, the attempt rate against the number of demos, the probe by layer.

Every figure: one panel per task, the same y-range in every panel (scores and rates in percent, 0-100), chance
and the best constant answer drawn as lines, 95% intervals as error bars.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness import plots
from harness.analysis import ALL, TaskResult
from harness.decompose import Decomposition
from harness.methods import RANDOM_INIT_SUFFIX
from harness.metrics import Estimate, main_metric
from harness.report_decomposition import ATTEMPT_WORDS, generates
from harness.store import UnitName

MAX_COLUMNS = 4


def panels(n: int, width: float = 2.6, height: float = 2.8, **kwargs):
    """A figure with `n` panels sharing their y-axis, at most MAX_COLUMNS a row; the unused ones hidden."""
    cols = min(MAX_COLUMNS, n)
    rows = -(-n // cols)
    fig, axes = plots.subplots(
        rows, cols, figsize=(width * cols + 0.6, height * rows + 0.4), squeeze=False, sharey=True, **kwargs
    )
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    return fig, list(axes.flat)[:n]


def point(
    ax, x: float, e: Estimate | None, color: str, label: str | None = None, hollow: bool = False, size: float = 5
) -> None:
    """One estimate in percent with its 95% interval."""
    if e is None or np.isnan(e.value):
        return
    lo, hi = e.ci
    value = e.value * 100
    yerr = plots.error_lengths([value], [lo * 100], [hi * 100]) if not np.isnan(lo) else None
    face = "white" if hollow else color
    ax.errorbar(
        [x], [value], yerr=yerr, fmt="o", color=color, mfc=face, ms=size, capsize=size * 0.6, label=label, zorder=3
    )


def references(ax, chance: Estimate | None, constant: Estimate | None, label: bool) -> None:
    """Chance (dashed) and the best constant answer (dotted), across the panel."""
    for e, style, name in ((chance, "--", "chance"), (constant, ":", "best constant")):
        if e is not None:
            ax.axhline(e.value * 100, color="black", linestyle=style, linewidth=0.9, label=name if label else None)


def finish(ax, title: str, ylabel: str | None) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_ylim(-3, 103)
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(labelsize=7)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=8)


# ---------------------------------------------------------------------------------------------------- the ladder
def ladder_rungs(d: Decomposition) -> list[tuple[str, Estimate | None]]:
    """The rungs drawn, in order: what each adds to the one before."""
    few = f"k={d.few}" if d.few is not None else "few-shot"
    return [
        ("control", d.control),
        ("zero-shot", d.zero_mean),
        (few, d.few_mean),
        (f"random labels {few}", d.random_labels_few),
        ("best prompt", d.best_prompt.estimate if d.best_prompt else None),
        ("ecological", d.ecological.estimate if d.ecological else None),
    ]


def plot_ladder(decompositions: list[Decomposition], path: Path, title: str) -> bool:
    """A panel per task: chance and the best constant as lines, then control, zero-shot, few-shot, random labels,
    the best prompt (picked on train) and the ecological method (picked on train); False when nothing to draw."""
    shown = [d for d in decompositions if any(e is not None for _, e in ladder_rungs(d))]
    if not shown:
        return False
    fig, axes = panels(len(shown))
    for i, (ax, d) in enumerate(zip(axes, shown)):
        rungs = ladder_rungs(d)
        for x, (_, e) in enumerate(rungs):
            point(ax, x, e, f"C{x}")
        references(ax, d.chance, d.floor, label=i == 0)
        ax.set_xticks(range(len(rungs)), [name for name, _ in rungs], rotation=60, ha="right", fontsize=7)
        finish(ax, f"{d.task} ({d.metric})", f"{d.metric} (%), 95% interval" if i % MAX_COLUMNS == 0 else None)
    axes[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(title, fontsize=10)
    plots.save(fig, path)
    return True


# ------------------------------------------------------------------------------------- attempts against demos
def _mean(result: TaskResult, variant: str, k: int, metric: str) -> Estimate | None:
    return result.estimates.get(("prompt", variant, k, "mean", ALL, metric))


def plot_attempts_by_shots(results: list[TaskResult], path: Path, title: str) -> bool:
    """A panel per prompted task: the attempt rate (valid mass, or well-formed share) and the score when attempted
    against the number of demos, mean over templates and seeds; random-label demos hollow at their k."""
    shown = []
    for r in results:
        levels = sorted({k[2] for k in r.estimates if k[:2] == ("prompt", "gold")})
        if any(_mean(r, "gold", k, "attempt_rate") is not None for k in levels):
            shown.append((r, levels))
    if not shown:
        return False
    fig, axes = panels(len(shown))
    for i, (ax, (r, levels)) in enumerate(zip(axes, shown)):
        rate_name, score_name = ATTEMPT_WORDS[generates(r.task)]
        for j, (metric, name) in enumerate((("attempt_rate", rate_name), ("acc_when_attempted", score_name))):
            values = [_mean(r, "gold", k, metric) for k in levels]
            xs = [x for x, e in enumerate(values) if e is not None]
            ys = [values[x].value * 100 for x in xs]  # type: ignore[union-attr]
            ax.plot(xs, ys, "-", color=f"C{j}", linewidth=1)
            for x in xs:
                point(ax, x, values[x], f"C{j}", label=name if x == xs[0] else None)
                point(ax, x + 0.12, _mean(r, "random_labels", levels[x], metric), f"C{j}", hollow=True)
        metric = main_metric(r.task)
        chance = r.estimates.get(("baseline", "chance", 0, "-", "-", metric))
        constant = r.estimates.get(("baseline", "constant", 0, "-", "-", metric))
        references(ax, chance, constant, label=False)
        ax.set_xticks(range(len(levels)), [str(k) for k in levels])
        ax.set_xlabel("demos (k); hollow: random labels", fontsize=7)
        finish(ax, r.task, "% (95% interval)" if i % MAX_COLUMNS == 0 else None)
        ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"{title}; lines: chance (dashed), best constant (dotted)", fontsize=9)
    plots.save(fig, path)
    return True


# ------------------------------------------------------------------------------------------------ probe layers
def plot_probe_layers(results: list[TaskResult], path: Path, title: str) -> bool:
    """A panel per probed task, at its largest train size: the cross-validated train accuracy at every layer (what
    picks the layer) for the pretrained model and its random-init copy, the picked layer marked with the eval score
    there (95% interval); chance and the best constant as lines. Eval scores at other layers are not drawn: no
    choice may be read off them."""
    shown = []
    for r in results:
        infos = _probe_infos(r)
        if infos:
            shown.append((r, *infos))
    if not shown:
        return False
    fig, axes = panels(len(shown), width=3.2)
    for i, (ax, r, n, pretrained, random_init) in enumerate(zip(axes, *zip(*shown))):
        metric = main_metric(r.task)
        for infos, key, color, style, name in (
            (pretrained, "cv_curve", "C0", "-", "CV on train"),
            (random_init, "cv_curve", "grey", "--", "random-init, CV on train"),
            # CCS picks its layer on train too (accuracy after the sign fix), so its train curve may be drawn
            (_ccs_infos(r, n), "train_curve", "C2", ":", "CCS, train after the sign fix"),
        ):
            if infos:
                layers = infos[0]["layers"]
                curve = np.mean([info[key] for info in infos], axis=0) * 100
                ax.plot(layers, curve, style, color=color, linewidth=1.2, label=name)
        picked = sorted({info.get("layer") for info in pretrained})
        for layer in picked:
            ax.axvline(layer, color="C0", linewidth=0.6, alpha=0.5)
        score = r.estimates.get(("probe", "probe", n, "mean", ALL, metric))
        point(ax, picked[0] if len(picked) == 1 else np.mean(picked), score, "C3", label="eval at the picked layer")
        chance = r.estimates.get(("baseline", "chance", 0, "-", "-", metric))
        references(ax, chance, r.estimates.get(("baseline", "constant", 0, "-", "-", metric)), label=i == 0)
        ax.set_xlabel("layer (0 = embeddings)", fontsize=7)
        finish(
            ax,
            f"{r.task} (probe, n={n}; layer {'/'.join(map(str, picked))} picked)",
            f"{metric} (%)" if i % MAX_COLUMNS == 0 else None,
        )
    axes[0].legend(fontsize=6, loc="lower left")
    fig.suptitle(title, fontsize=10)
    plots.save(fig, path)
    return True


def _ccs_infos(r: TaskResult, n: int) -> list[dict]:
    """The CCS units' infos at train size `n` (the pretrained model's), where a train curve was recorded."""
    return [
        info
        for (method, key), info in sorted(r.unit_infos.items())
        if method == "ccs"
        and info.get("train_curve")
        and UnitName.parse(key).variant == "ccs"
        and UnitName.parse(key).number == n
    ]


def _probe_infos(r: TaskResult) -> tuple[int, list[dict], list[dict]] | None:
    """(largest train size, the probe's unit infos there, its random-init copy's), where layers were recorded."""
    found: dict[tuple[str, int], list[dict]] = {}
    for (method, key), info in sorted(r.unit_infos.items()):
        if method == "probe" and info.get("layers") and info.get("cv_curve"):
            name = UnitName.parse(key)
            found.setdefault((name.variant, name.number), []).append(info)
    sizes = [n for variant, n in found if variant == "probe"]
    if not sizes:
        return None
    n = max(sizes)
    return n, found[("probe", n)], found.get(("probe" + RANDOM_INIT_SUFFIX, n), [])
