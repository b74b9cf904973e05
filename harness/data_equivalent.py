"""How many labelled examples a score is worth: the train size at which a learning curve first reaches it.

One rule serves both uses: a prompt's worth in examples (the size at which a trained method matches the best prompt
picked on train; Le Scao & Rush 2021) and the effective data transferred (the size at which training on B alone
matches training on A then B; Hernandez et al. 2021).

The rule, for scores y_1..y_S at train sizes n_1 < ... < n_S and a target score t:
- the first size whose score reaches t (y_i >= t) is the crossing; between it and the size before, log(size) is
  interpolated linearly in the score: log n = log n_{i-1} + (t - y_{i-1}) / (y_i - y_{i-1}) * (log n_i - log n_{i-1});
  a curve that dips and rises again is read at its FIRST crossing (the fewest examples known to suffice);
- y_1 >= t: BELOW, "below n_1": the curve starts at or above t, so n_1 examples suffice and the curve cannot say
  how many fewer would;
- no y_i >= t: ABOVE, "above n_S": even the largest size run falls short.
Bootstrap replicates go through the same rule one by one, so an interval's ends can be BELOW or ABOVE too.
numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BELOW = -math.inf  # the curve starts at or above the target: at most the smallest size is needed
ABOVE = math.inf  # the curve never reaches the target: more than the largest size is needed
MAX_UNDEFINED_REPLICATES = 0.05  # an interval needs the quantity defined (not NaN) in 95% of the replicates


def matching_size(sizes: Sequence[float], curve: np.ndarray, target: np.ndarray | float) -> np.ndarray:
    """The train size at which `curve` first reaches `target`, by the module's rule.

    sizes: S strictly increasing positive sizes; curve: the scores at them, shape (S,) or (S, B); target: a score,
    or one per column (B,). Returns an array of shape () or (B,): a size in [sizes[0], sizes[-1]], BELOW, ABOVE, or
    NaN where the target or a score is NaN."""
    n = np.asarray(sizes, dtype=np.float64)
    if n.ndim != 1 or not len(n) or (n <= 0).any() or (np.diff(n) <= 0).any():
        raise ValueError(f"sizes must be positive and strictly increasing, not {list(sizes)}")
    y = np.asarray(curve, dtype=np.float64)
    if y.shape[:1] != n.shape:
        raise ValueError(f"a score per size: {len(n)} sizes, curve of shape {y.shape}")
    t = np.broadcast_to(np.asarray(target, dtype=np.float64), y.shape[1:])
    reached = y >= t  # (S, ...)
    first = reached.argmax(axis=0)  # the first size reaching t (0 where none does: overridden below)
    after = np.clip(first, 1, len(n) - 1)
    before = after - 1
    y0 = np.take_along_axis(y, before[None], axis=0)[0]
    y1 = np.take_along_axis(y, after[None], axis=0)[0]
    log = np.log(n)
    with np.errstate(invalid="ignore", divide="ignore"):  # y1 > y0 wherever the interpolation is used
        share = (t - y0) / (y1 - y0)
        out = np.exp(log[before] + share * (log[after] - log[before]))
    out = np.where(reached.any(axis=0), out, ABOVE)
    out = np.where(reached[0], BELOW, out)
    return np.where(np.isnan(t) | np.isnan(y).any(axis=0), np.nan, out)


@dataclass
class DataEquivalent:
    """A number of examples (minus `offset`) with its bootstrap replicates; BELOW / ABOVE where censored."""

    value: float
    samples: np.ndarray
    sizes: tuple[int, ...]  # the curve's train sizes
    offset: float = 0.0  # subtracted from every size (the effective data transferred: minus D_F)
    largest_label: str = ""  # how the largest size reads, e.g. "250 (all)"

    @property
    def ci(self) -> tuple[float, float]:
        """95% percentile interval from order statistics (so a censored end stays BELOW or ABOVE); NaN when over
        MAX_UNDEFINED_REPLICATES of the replicates are undefined."""
        ok = self.samples[~np.isnan(self.samples)]
        if not len(ok) or len(ok) < (1 - MAX_UNDEFINED_REPLICATES) * len(self.samples):
            return (math.nan, math.nan)
        lo, hi = np.percentile(ok, [2.5, 97.5], method="inverted_cdf")
        return float(lo), float(hi)

    def text(self, x: float | None = None) -> str:
        """A value (the estimate by default) as the report writes it: a rounded number, "below 8", "above 250
        (all)", or "–"."""
        x = self.value if x is None else x
        if math.isnan(x):
            return "–"
        if x == BELOW:
            return f"below {_number(self.sizes[0] - self.offset)}"
        if x == ABOVE:
            return f"above {self.largest_label or _number(self.sizes[-1] - self.offset)}"
        return _number(x)

    def interval_text(self) -> str:
        """The estimate and its interval, e.g. `45 [12, above 250 (all)]`."""
        lo, hi = self.ci
        if math.isnan(lo):
            return self.text()
        return f"{self.text()} [{self.text(lo)}, {self.text(hi)}]"


def _number(x: float) -> str:
    """A number of examples, whole (an interpolated size carries no more precision)."""
    return f"{x:.0f}"


def data_equivalent(
    sizes: Sequence[int], curve: Sequence, target, offset: float = 0.0, largest_label: str = ""
) -> DataEquivalent:
    """The size at which a learning curve first reaches a target score, minus `offset`, with bootstrap replicates.

    curve: one estimate per size (anything with `value` and `samples`, harness.metrics.Estimate); target: an
    estimate on the SAME bootstrap replicates (the same resamples of the same eval examples), so that replicate b of
    the result reads replicate b of the curve against replicate b of the target."""
    value = matching_size(sizes, np.array([e.value for e in curve]), target.value)
    samples = matching_size(sizes, np.stack([e.samples for e in curve]), target.samples)
    return DataEquivalent(float(value) - offset, samples - offset, tuple(sizes), offset, largest_label)


def difference(a: DataEquivalent, b: DataEquivalent) -> DataEquivalent:
    """a - b in examples, replicate by replicate: NaN where either side is censored (BELOW or ABOVE has no
    difference), so the interval is NaN when over MAX_UNDEFINED_REPLICATES of the replicates are."""
    finite = np.isfinite(a.samples) & np.isfinite(b.samples)
    value = a.value - b.value if math.isfinite(a.value) and math.isfinite(b.value) else math.nan
    with np.errstate(invalid="ignore"):  # inf - inf: masked just below
        samples = np.where(finite, a.samples - b.samples, np.nan)
    return DataEquivalent(value, samples, a.sizes)
