"""Where the data-like files shipped with harness live: prompts/, suites/, probes/."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.errors import HarnessError

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(kind: str) -> Path:
    """`kind` folder: inside the installed wheel (harness/_resources/<kind>), else the source checkout's root."""
    installed = _PACKAGE / "_resources" / kind
    return installed if installed.is_dir() else _PACKAGE.parent / kind


def read_yaml(path: Path, what: str) -> object:
    """A YAML file's content; a missing file or a syntax error is a one-line error naming the file (and line)."""
    if not path.is_file():
        raise HarnessError(f"no {what}: {path} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise HarnessError(f"{path}:{where} invalid YAML ({getattr(err, 'problem', err)})") from None
