"""Elicitation methods: `prompt` (prompt.py) and the trained methods (ptune.py, bitfit.py, probe.py).

This file names the trained methods and the variants they store, for the code that runs them and the code that
reads their results alike; it imports nothing (no torch), so the report can use it.
"""

from __future__ import annotations

TRAINED_METHODS = ("ptune", "bitfit", "probe")
CONTROL_SUFFIX = "-control"  # variant of a trained method's control task (labels permuted): a sanity check only
RANDOM_INIT_SUFFIX = "-random-init"  # variant of a trained method run on the re-initialised model


def is_control_task(variant: str) -> bool:
    return variant.endswith(CONTROL_SUFFIX)


def is_random_init(variant: str) -> bool:
    return variant.endswith(RANDOM_INIT_SUFFIX)
