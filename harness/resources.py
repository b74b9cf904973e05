"""Where the data-like files shipped with harness live: tasks/, suites/, probes/."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.errors import HarnessError

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(kind: str) -> Path:
    """`kind` folder: inside the installed wheel (harness/_resources/<kind>), else the source checkout's root."""
    installed = _PACKAGE / "_resources" / kind
    return installed if installed.is_dir() else _PACKAGE.parent / kind


def read_text(path: Path) -> str:
    """A user's text file, as UTF-8; a folder, an unreadable or a non-UTF-8 file is a one-line error naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise HarnessError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.object[err.start : err.start + 1]!r})"
        ) from None
    except IsADirectoryError:
        raise HarnessError(f"{path}: a folder where a file was expected") from None
    except OSError as err:
        raise HarnessError(f"{path}: cannot be read ({err.strerror})") from None


def parse_yaml(path: Path, loader: type[yaml.SafeLoader] = yaml.SafeLoader) -> object:
    """A YAML file's content, read with `loader` (a SafeLoader, perhaps with tags of its own; its `name` is the file's
    path); a syntax error is a one-line error naming the file and line."""
    text = read_text(path)
    try:
        reader = loader(text)
        reader.name = str(path)
        try:
            return reader.get_single_data()
        finally:
            reader.dispose()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise HarnessError(f"{path}:{where} invalid YAML ({getattr(err, 'problem', None) or err})") from None


def read_yaml(path: Path, what: str) -> object:
    """A YAML file's content; a missing file or a syntax error is a one-line error naming the file (and line)."""
    if not path.is_file():
        raise HarnessError(f"no {what}: {path} not found")
    return parse_yaml(path)
