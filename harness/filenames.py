"""File names made from names that users choose: a model (a Hub id or a local path), a task, a template."""

from __future__ import annotations

import re


def slug(name: str) -> str:
    """`name` as one part of a file name: each run of characters other than ASCII letters, digits, '.', '_' and '-'
    becomes one '_' (`HuggingFaceTB/SmolLM2-135M` -> `HuggingFaceTB_SmolLM2-135M`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
