"""What the methods that fit a probe on a frozen model's hidden states share: probe.py, ccs.py, and the probe
that `harness w2s` fits on each model.

Loads no torch (a method's features are computed, with torch, inside its `run`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from harness.errors import HarnessError
from harness.methods import is_random_init
from harness.store import Record

if TYPE_CHECKING:
    from harness.engine import Engine
    from harness.methods.base import RunContext, TrainedUnit
    from harness.tasks import Example


def features_model(unit: TrainedUnit, ctx: RunContext) -> tuple[Engine, str]:
    """The engine a unit's hidden states come from and the features cache's key for it: the re-initialised copy's
    for a random-init variant, so that its features are never mixed up with the trained model's."""
    if is_random_init(unit.variant):
        return ctx.random_engine(), f"{ctx.model}@random-init-s{ctx.random_init_seed}"
    return ctx.engine, ctx.model


def preset_layers(layers: Literal["all"] | list[int], n_states: int, method: str, model: str) -> list[int]:
    """The hidden states a preset's `layers` asks for (all, or indices; 0 = the embeddings), checked against the
    model's `n_states` (embeddings + layers); an index out of range is a one-line error naming `<method>.layers`."""
    chosen = list(range(n_states)) if layers == "all" else list(layers)
    bad = [layer for layer in chosen if not 0 <= layer < n_states]
    if bad:
        raise HarnessError(f"{method}.layers: layer(s) {bad} out of range 0..{n_states - 1} for {model}")
    return chosen


def class_records(examples: list[Example], scores: Sequence[Sequence[float]]) -> list[Record]:
    """The records of a classifier's scores: per example, a log-probability per class; gold is its label."""
    return [
        Record(example_id=ex.id, group=ex.group, gold=[ex.label], logprobs=[float(v) for v in row])
        for ex, row in zip(examples, scores)
    ]
