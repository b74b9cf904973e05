"""The reports' figures: one place sets matplotlib up (the Agg backend, no display needed) and writes a PNG.

Re-rendering a store draws the same figures: a fixed resolution, and no software tag or date in the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOTS = "plots"  # the folder of a report's figures, inside its output folder
DPI = 100


def subplots(*args: Any, **kwargs: Any) -> tuple[Figure, Any]:
    """A new figure and its axes: matplotlib's `plt.subplots` (same arguments) on the Agg backend, at DPI unless
    `dpi` is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kwargs.setdefault("dpi", DPI)
    return plt.subplots(*args, **kwargs)


def save(fig: Figure, path: Path, crop: bool = False) -> None:
    """Lay the figure out (`tight_layout`), write it to `path` as a PNG (making its folder) and close it.

    `crop`: no `tight_layout`; the saved image is cropped to what is drawn instead, for a figure with a colorbar
    shared by several axes, which `tight_layout` cannot place."""
    import matplotlib.pyplot as plt

    if not crop:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None}, **({"bbox_inches": "tight"} if crop else {}))
    plt.close(fig)


def error_lengths(values, lows, highs) -> list[list[float]]:
    """matplotlib's `yerr`/`xerr` for intervals [low, high] around values: the lengths below and above each value,
    never negative (an interval that does not hold its point estimate, as a percentile bootstrap of a slope or an
    inverted curve can give, is drawn from the point to its far end; matplotlib refuses negative lengths), and 0
    where an end is missing (NaN)."""
    import math

    def length(a: float, b: float) -> float:
        return 0.0 if math.isnan(a) or math.isnan(b) else max(a - b, 0.0)

    return [[length(v, lo) for v, lo in zip(values, lows)], [length(hi, v) for v, hi in zip(values, highs)]]
