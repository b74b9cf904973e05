"""What the evidence supports, one claim at a time: each function reads one task's decomposition (or one slope
across sizes) and answers yes, no, or `cannot be told yet` with the reason, in numbers. An answer other than
`cannot be told yet` needs the claim's 95% interval to support it.

The claims, in the order the report's first screen shows them:
- `attempts`: does the model put most of its next-token mass on the valid answers (choice tasks), or give a
  well-formed answer most of the time (generated answers)? Zero-shot, and with demos.
- `format_taught`: do random-label demos raise that attempt rate over zero-shot (the demos teach the format)?
- `mapping_taught`: do gold demos beat random-label demos on the task's metric (the demos teach the mapping)?
- `prompting_vs_ceiling`: does the best prompt under- or over-state the trained ceiling (`decompose.verdicts`)?
- `attempt_slope`: does the zero-shot attempt rate rise with size, on the same templates for every model?
- `scaling_bias`: do prompt scores grow faster with size than the trained ceiling?
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.decompose import Decomposition, inconclusive_reason, weak_rungs
from harness.metrics import Estimate, difference

UNKNOWN = "cannot be told yet"
MAJORITY = 0.5  # "attempts the task": more than half the mass on valid answers (more than half well-formed)
NO_EFFECT = 0.02  # an effect whose whole interval lies within +-2 points (per decade, for a slope) reads as none


@dataclass(frozen=True)
class Claim:
    """One claim on one task. `answer`: yes / no / UNKNOWN (`prompting_vs_ceiling`: understates / overstates /
    same / UNKNOWN); `reason`: why, in a few words that many tasks can share ("interval holds 0"); `detail`: the
    numbers behind it; `value`: the rate or difference (in [0, 1] units) it rests on, if any."""

    answer: str
    reason: str = ""
    detail: str = ""
    value: float | None = None
    interval: str = ""  # the value with its interval, in points: +9.0 [+6.0, +12.0]


def points(e: Estimate) -> str:
    """A difference in points with its 95% interval: +9.0 [+6.0, +12.0]."""
    lo, hi = e.ci
    return f"{_signed(e.value)} [{_signed(lo)}, {_signed(hi)}]"


def _signed(v: float) -> str:
    return f"{round(v * 100, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"


def effect(e: Estimate | None, what: str, missing: str, unit: str = "points") -> Claim:
    """Is the effect `e` positive? yes when the interval is above 0, no when it is below 0 or within +-NO_EFFECT, UNKNOWN otherwise."""
    if e is None:
        return Claim(UNKNOWN, missing)
    lo, hi = e.ci
    found = {"detail": f"{what} {points(e)} {unit}", "value": e.value, "interval": points(e)}
    if e.value > 0 and lo > 0:
        return Claim("yes", "interval above 0", **found)
    if e.value < 0 and hi < 0:
        return Claim("no", "interval below 0", **found)
    if -NO_EFFECT <= lo and hi <= NO_EFFECT:
        return Claim("no", f"interval within +-{NO_EFFECT * 100:.0f}", **found)
    return Claim(UNKNOWN, "interval holds 0", **found)


def attempts(rate: Estimate | None, well_formed: bool = False) -> Claim:
    """Does the model attempt the task: the attempt rate (mass on valid answers; share of well-formed generated
    answers) above MAJORITY, interval clear of it?"""
    if rate is None:
        return Claim(UNKNOWN, "not run")
    lo, hi = rate.ci
    what = "well-formed" if well_formed else "valid-answer mass"
    detail = f"{what} {rate.value * 100:.1f}% [{lo * 100:.1f}, {hi * 100:.1f}]"
    if lo > MAJORITY:
        return Claim("yes", f"interval above {MAJORITY:.0%}", detail, rate.value)
    if hi < MAJORITY:
        return Claim("no", f"interval below {MAJORITY:.0%}", detail, rate.value)
    return Claim(UNKNOWN, f"interval holds {MAJORITY:.0%}", detail, rate.value)


def _rate(d: Decomposition, name: str) -> Estimate | None:
    found = d.attempts.get(name)
    return found[0] if found else None


def format_taught(d: Decomposition) -> Claim:
    """Do random-label demos raise the attempt rate over zero-shot (paired over examples)?"""
    random_labels = _rate(d, f"random labels k={d.few}") if d.few is not None else None
    if random_labels is None:
        return Claim(UNKNOWN, "no random-label demos run")
    gain = difference(random_labels, _rate(d, "zero-shot"))
    return effect(gain, "attempt rate, random labels - zero-shot", "no zero-shot attempt rate")


def mapping_taught(d: Decomposition) -> Claim:
    """Do gold demos beat random-label demos (the same demos, labels shuffled) on the task's metric?"""
    if d.random_labels_few is None:
        return Claim(UNKNOWN, "no random-label demos run")
    return effect(difference(d.few_mean, d.random_labels_few), f"{d.metric}, gold - random labels", "no gold demos")


def prompting_vs_ceiling(d: Decomposition, verdict: str | None) -> Claim:
    """The answer of the report: `verdict` is `decompose.verdicts(...)[task]` (Holm-corrected over a model's
    conclusive tasks), read only where `inconclusive_reason` finds none."""
    if d.elicitation_gap is None:
        return Claim(UNKNOWN, "no trained method run" if d.ecological is None else "no prompt picked on train")
    gap = f"gap {points(d.elicitation_gap)} points"
    if inconclusive_reason(d) is None and verdict in ("understates", "overstates", "same"):
        return Claim(verdict, "Holm-corrected paired test", gap, d.elicitation_gap.value)
    if d.floor is None:
        return Claim(UNKNOWN, "no best constant answer to beat", gap)
    if d.ecological_converged is False:
        return Claim(UNKNOWN, "trained unit not converged", gap)
    weak = weak_rungs(d)
    if len(weak) == 2:
        return Claim(UNKNOWN, "neither side above the best constant", gap)
    side = "trained method" if weak == ["ecological"] else "best prompt"
    return Claim(UNKNOWN, f"{side} not above the best constant", gap)


def attempt_slope(slope: Estimate | None, templates: dict[str, tuple[str, ...]]) -> Claim:
    """Does the zero-shot attempt rate rise with size? `slope` in rate per tenfold parameters; `templates`: model ->
    the templates its zero-shot mean is over. Means over different templates are not comparable across sizes."""
    if len(set(templates.values())) > 1:
        counts = " vs ".join(str(len(t)) for t in templates.values())
        return Claim(UNKNOWN, "models scored on different templates", f"{counts} templates")
    return effect(slope, "slope", "fewer than two sizes", unit="points per decade")


def scaling_bias(headline: Estimate | None, valid: int, total: int) -> Claim:
    """Do prompt scores grow faster with size than the trained ceiling (slope of the best prompt - slope of the
    ecological method, over the models whose comparison is valid)?"""
    if headline is None:
        return Claim(UNKNOWN, "fewer than two sizes with a valid comparison", f"{valid} of {total} valid")
    return effect(headline, "prompt - trained slope", "", unit="points per decade")
