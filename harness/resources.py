"""Where the data-like files shipped with harness live: prompts/, suites/, probes/."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(kind: str) -> Path:
    """`kind` folder: inside the installed wheel (harness/_resources/<kind>), else the source checkout's root."""
    installed = _PACKAGE / "_resources" / kind
    return installed if installed.is_dir() else _PACKAGE.parent / kind
