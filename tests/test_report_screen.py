"""The report's first screen: the claim functions on hand-made decompositions (supported, not supported, cannot be
told), the screen right after the about statement, and every figure a report links."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from harness import claims
from harness.claims import UNKNOWN, Claim
from harness.decompose import Choice, Decomposition
from harness.metrics import Estimate, difference
from harness.report import render
from harness.report_screen import HEADING, tally
from tests.test_decompose import _prompt, _store, _trained

REPORTS = Path(__file__).resolve().parent.parent / "reports"
SCREEN_LINES = 15  # "the first screen": this many lines after the about statement


def _est(value: float, lo: float, hi: float, n: int = 100) -> Estimate:
    """An estimate whose 95% interval is [lo, hi]: half its replicates at each end, so a difference of two such
    estimates (paired replicate by replicate) has the interval [lo_a - lo_b, hi_a - hi_b]."""
    return Estimate(value, np.array([lo] * 500 + [hi] * 500), n)


def _d(**rungs) -> Decomposition:
    d = Decomposition("rte", "acc", 4)
    for name, value in rungs.items():
        setattr(d, name, value)
    return d


def test_attempts_yes_no_and_cannot_be_told():
    assert claims.attempts(_est(0.8, 0.7, 0.9)).answer == "yes"
    no = claims.attempts(_est(0.06, 0.05, 0.07))
    assert no.answer == "no" and no.detail == "valid-answer mass 6.0% [5.0, 7.0]"
    unsure = claims.attempts(_est(0.55, 0.45, 0.65), well_formed=True)
    assert unsure == Claim(UNKNOWN, "interval holds 50%", "well-formed 55.0% [45.0, 65.0]", 0.55)
    assert claims.attempts(None) == Claim(UNKNOWN, "not run")


def test_demos_teach_the_format_not_the_mapping():
    zero, random_labels = _est(0.05, 0.04, 0.06), _est(0.8, 0.78, 0.82)
    d = _d(
        attempts={"zero-shot": (zero, None), "random labels k=4": (random_labels, None)},
        few_mean=_est(0.50, 0.40, 0.60),
        random_labels_few=_est(0.48, 0.45, 0.55),
    )
    fmt = claims.format_taught(d)
    assert fmt.answer == "yes" and fmt.value == pytest.approx(0.75)
    assert fmt.interval == "+75.0 [+74.0, +76.0]"
    mapping = claims.mapping_taught(d)  # gold - random labels: [-5, +5] points
    assert mapping.answer == UNKNOWN and mapping.reason == "interval holds 0"
    assert mapping.detail == "acc, gold - random labels +2.0 [-5.0, +5.0] points"


def test_mapping_taught_supported_and_refuted():
    taught = _d(few_mean=_est(0.7, 0.65, 0.75), random_labels_few=_est(0.5, 0.45, 0.55))
    assert claims.mapping_taught(taught).answer == "yes"
    worse = _d(few_mean=_est(0.4, 0.35, 0.45), random_labels_few=_est(0.5, 0.45, 0.55))
    assert (claims.mapping_taught(worse).answer, claims.mapping_taught(worse).reason) == ("no", "interval below 0")
    same = _d(few_mean=_est(0.5, 0.49, 0.51), random_labels_few=_est(0.5, 0.495, 0.505))  # within +-2 points
    assert (claims.mapping_taught(same).answer, claims.mapping_taught(same).reason) == ("no", "interval within +-2")
    none = _d(few_mean=_est(0.5, 0.4, 0.6))
    assert claims.mapping_taught(none) == Claim(UNKNOWN, "no random-label demos run")
    assert claims.format_taught(none) == Claim(UNKNOWN, "no random-label demos run")


def _ceiling(prompt: Estimate, trained: Estimate, converged: bool | None = True) -> Decomposition:
    d = _d(constant=_est(0.5, 0.5, 0.5))
    d.best_prompt = Choice(prompt, "A, k=4", 0.8, ("gold", 4, "A"))
    d.ecological = Choice(trained, "probe, n=32", 0.9, ("probe", "probe", 32))
    d.elicitation_gap = difference(trained, prompt)
    d.ecological_converged = converged
    return d


def test_prompting_vs_the_trained_ceiling():
    clear = _ceiling(_est(0.7, 0.65, 0.75), _est(0.9, 0.85, 0.95))
    found = claims.prompting_vs_ceiling(clear, "understates")
    assert (found.answer, found.detail) == ("understates", "gap +20.0 [+20.0, +20.0] points")
    capped = claims.prompting_vs_ceiling(_ceiling(_est(0.7, 0.65, 0.75), _est(0.9, 0.85, 0.95), False), None)
    assert (capped.answer, capped.reason) == (UNKNOWN, "trained unit not converged")
    weak = claims.prompting_vs_ceiling(_ceiling(_est(0.52, 0.45, 0.6), _est(0.9, 0.85, 0.95)), "inconclusive")
    assert (weak.answer, weak.reason) == (UNKNOWN, "best prompt not above the best constant")
    both = claims.prompting_vs_ceiling(_ceiling(_est(0.52, 0.45, 0.6), _est(0.5, 0.4, 0.6)), "inconclusive")
    assert both.reason == "neither side above the best constant"
    assert claims.prompting_vs_ceiling(_d(), None) == Claim(UNKNOWN, "no trained method run")


def test_attempt_slope_needs_the_same_templates_at_every_size():
    rising = _est(0.09, 0.06, 0.12)
    assert claims.attempt_slope(rising, {"a": ("t1", "t2"), "b": ("t1", "t2")}).answer == "yes"
    mixed = claims.attempt_slope(rising, {"a": ("t1", "t2"), "b": ("t1",)})
    assert (mixed.answer, mixed.reason, mixed.detail) == (
        UNKNOWN,
        "models scored on different templates",
        "2 vs 1 templates",
    )
    assert claims.attempt_slope(None, {"a": ("t1",)}).reason == "fewer than two sizes"
    flat = claims.attempt_slope(_est(0.01, -0.01, 0.015), {"a": ("t1",), "b": ("t1",)})
    assert flat.answer == "no"
    assert claims.scaling_bias(None, 1, 3) == Claim(
        UNKNOWN, "fewer than two sizes with a valid comparison", "1 of 3 valid"
    )


def test_tally_counts_tasks_by_answer():
    found = {
        "cb": claims.attempts(_est(0.9, 0.85, 0.95)),
        "copa": claims.attempts(_est(0.2, 0.15, 0.25)),
        "rte": claims.attempts(_est(0.5, 0.4, 0.6)),
        "wsc": claims.attempts(None),
    }
    assert tally(found, rate=True) == (
        "yes on 1 (cb 90.0%); no on 1 (copa 20.0%); cannot be told yet on 2 (interval holds 50%: rte; not run: wsc)"
    )
    many = {f"t{i}": claims.attempts(_est(0.1 * i, 0.1 * i - 0.05, 0.1 * i + 0.04)) for i in (1, 2, 3, 4)}
    assert tally(many, rate=True) == "no on 4 (10.0% to 40.0%)"


def _first_screen(text: str, about: str) -> list[str]:
    """The lines after the about statement (after the title where there is none), up to SCREEN_LINES of them."""
    lines, last = text.splitlines(), about.splitlines()[-1]
    start = lines.index(last) + 1 if last in lines else 1
    return lines[start : start + SCREEN_LINES]


def test_the_first_screen_follows_the_about_statement(tmp_path):
    store = _store(tmp_path)  # tiny: rte's best prompt 80, prompt tuning 90 (converged); wic: nothing beats 50
    # a second, larger model on rte: the across-sizes line
    for template, k, correct, train in (("A", 0, 62, 0.7), ("B", 0, 70, 0.5), ("A", 4, 82, 0.8), ("B", 4, 70, 0.6)):
        _prompt(store, "rte", "gold", template, k, correct, train, model="tiny-10m")
    _prompt(store, "rte", "control", "null", 0, 50, model="tiny-10m")
    _prompt(store, "rte", "random_labels", "A", 4, 70, model="tiny-10m")
    _trained(store, "rte", "bitfit", "bitfit", 95, 50, {"holdout_acc": 0.9, "converged": True}, model="tiny-10m")
    store.put_model("tiny-10m", 10_000_000, {"source": "hand-made", "device": "cpu", "dtype": "float32"})
    store.put_task("tiny-10m", "rte", {"n_eval": 100})
    store.close()
    about = "**Pipeline demo**: supports no claim."
    (tmp_path / "about.md").write_text(about + "\n", encoding="utf-8")
    text = render(tmp_path).read_text(encoding="utf-8")
    assert text.startswith(f"# harness report\n\n{about}\n\n{HEADING}\n")
    screen = _first_screen(text, about)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in screen if line.startswith("| tiny")}
    tiny = rows["tiny"]
    assert tiny[1] == "2 (n = 100)"
    assert (
        tiny[2] == "cannot be told yet on 2 (interval holds 50%: rte, wic)"
    )  # every record puts half on valid answers
    assert tiny[4] == "no on 2 (rte +0.0, wic +0.0)"  # random labels leave the attempt rate where it was: 0 [0, 0]
    assert tiny[5].startswith("yes on 1 (rte +7.0)")  # gold 78 vs random labels 71: nested records, a clear gap
    assert tiny[6] == (
        "understates on 1 (rte +10.0); cannot be told yet on 1 (neither side above the best constant: wic) |"
    )
    assert rows["tiny-10m"][6].startswith("understates on 1 (rte +13.0)")
    across = next(line for line in screen if line.startswith("**Across sizes**"))
    assert "2 models, tiny (1.0M) to tiny-10m (10.0M)" in across
    assert "Zero-shot attempt rate: does not rise on 1 (rte +0.0 [+0.0, +0.0])" in across
    assert screen.index(across) < text.splitlines().index("## The answer")


def _linked_figures(report: Path) -> list[Path]:
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text(encoding="utf-8"))
    return [report.parent / link for link in links]


def test_every_linked_figure_exists_and_is_not_empty(tmp_path):
    _store(tmp_path).close()
    figures = _linked_figures(render(tmp_path))
    assert figures, "the report links no figure"
    for figure in figures:
        assert figure.is_file() and figure.stat().st_size > 1000, figure


COMMITTED = sorted(p.parent for p in REPORTS.glob("*/report.md"))


@pytest.mark.parametrize("committed", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_reports_open_with_the_evidence_and_link_only_real_figures(committed):
    """Each committed report: its first screen holds the summary, and every figure it links is there."""
    text = (committed / "report.md").read_text(encoding="utf-8")
    about = (committed / "about.md").read_text(encoding="utf-8").strip()
    screen = _first_screen(text, about)
    assert HEADING in screen, f"{committed.name}: no `{HEADING}` in the {SCREEN_LINES} lines after about.md"
    assert any(line.startswith("| ") for line in screen[screen.index(HEADING) :])
    for figure in _linked_figures(committed / "report.md"):
        assert figure.is_file() and figure.stat().st_size > 1000, figure


def test_a_gain_from_a_source_scoring_0_is_a_format_effect_not_transfer():
    from harness.report_transfer import format_sources, pair_claims
    from harness.transfer_matrix import ModelTransfer

    r = ModelTransfer("tiny", 1_000_000, ["add", "sub", "rte"])
    r.source = {"add": _est(0.7, 0.6, 0.8), "sub": _est(0.0, 0.0, 0.0), "rte": _est(0.5, 0.4, 0.6)}
    gains = {("sub", "add"): (0.2, 0.1, 0.3), ("add", "sub"): (0.1, 0.05, 0.15), ("rte", "add"): (-0.1, -0.2, -0.05)}
    for a in r.tasks:
        for b in r.tasks:
            r.gain[(a, b)] = _est(*gains.get((a, b), (0.0, -0.1, 0.1)))
    assert format_sources(r) == ["sub"]
    found = pair_claims(r)
    assert found["sub -> add"].answer == "format effect"  # sub scores 0 on sub: nothing to transfer
    assert found["add -> sub"].answer == "helped"
    assert found["rte -> add"].answer == "hurt"
    assert found["add -> rte"].answer == UNKNOWN
    assert tally({"sub -> add": found["sub -> add"]}) == "format effect on 1 (sub -> add +20.0)"
