"""Unit names are typed: written and read back through one class, never split by hand."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.methods.base import TrainedUnit
from harness.methods.prompt import PromptUnit
from harness.store import UnitName


def test_unit_names_round_trip():
    prompt = PromptUnit("t0-does-this-imply", 4, 2, kind="random_labels")
    assert prompt.key == "random_labels/t0-does-this-imply/k4/s2"
    assert UnitName.parse(prompt.key) == UnitName("random_labels", "t0-does-this-imply", "k4", 2)
    trained = TrainedUnit("probe", "probe-random-init", "input-only", 2490, 0)
    name = UnitName.parse(trained.key)
    assert (name.variant, name.template, name.size, name.number, name.seed) == (
        "probe-random-init", "input-only", "n2490", 2490, 0,
    )  # fmt: skip
    assert str(name) == trained.key


@pytest.mark.parametrize("text", ["gold/a/b/k0/s0", "gold/lm-eval/k0", "gold/lm-eval/x0/s0", "gold/lm-eval/k0/0"])
def test_a_malformed_unit_name_is_refused(text):
    with pytest.raises(HarnessError, match="not a unit name"):
        UnitName.parse(text)
