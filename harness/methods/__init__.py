"""Elicitation methods: `prompt` (prompt.py) and the trained methods (ptune.py, bitfit.py, probe.py), each one file
that registers itself with the registry in base.py.

This file names the variants that trained methods store, for the code that runs them and the code that reads their
results alike; it imports nothing (no torch), so the report can use it. TRAINED_METHODS, the names of the registered
trained methods, is read from the registry when first used (the method files load no torch either).
"""

from __future__ import annotations

CONTROL_SUFFIX = "-control"  # variant of a trained method's control task (labels permuted): a sanity check only
RANDOM_INIT_SUFFIX = "-random-init"  # variant of a trained method run on the re-initialised model


def is_control_task(variant: str) -> bool:
    return variant.endswith(CONTROL_SUFFIX)


def is_random_init(variant: str) -> bool:
    return variant.endswith(RANDOM_INIT_SUFFIX)


def __getattr__(name: str) -> object:
    # TRAINED_METHODS is computed on first use: the method files import this package, so it cannot import them
    if name == "TRAINED_METHODS":
        from harness.methods.base import trained_method_names

        return trained_method_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
