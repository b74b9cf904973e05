"""Method presets: `probes/<method>.yaml`, checked against a schema, overridable with `--set method.key=value`."""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.errors import HarnessError
from harness.resources import read_yaml, resource_dir

_TRAINING = {
    "template": str,
    "learning_rate": float,
    "max_steps": int,
    "max_seconds": float,
    "batch_size": int,
    "eval_every": int,
    "patience": int,
    "holdout": float,
    "objective": ("choices", "lm"),
}
SCHEMA: dict[str, dict[str, object]] = {
    "ptune": {
        **_TRAINING,
        "variants": ["prompt-tuning", "p-tuning"],  # a list drawn from these
        "num_virtual_tokens": int,
        "encoder_hidden_size": int,
    },
    "bitfit": dict(_TRAINING),
    "probe": {
        "template": str,
        "pooling": ("last", "mean"),
        "layers": "all|list",
        "C": float,
        "max_iter": int,
        "cv_folds": int,
    },
}
POSITIVE = {"learning_rate", "max_steps", "max_seconds", "batch_size", "eval_every", "patience", "num_virtual_tokens"}
POSITIVE |= {"encoder_hidden_size", "C", "max_iter"}


# Keys renamed since earlier presets, still accepted in a YAML file and in --set under their old name.
RENAMED = {"steps": "max_steps"}


def _name(method: str, key: str) -> str:
    return RENAMED[key] if RENAMED.get(key) in SCHEMA[method] else key


def _check(method: str, key: str, value: object, where: str) -> object:
    key = _name(method, key)
    kind = SCHEMA[method].get(key)
    if kind is None:
        known = ", ".join(SCHEMA[method])
        raise HarnessError(f"{where}: unknown key '{key}' for {method} (known: {known})")
    bad = f"{where}: {method}.{key} must be "
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise HarnessError(bad + f"an integer, not {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HarnessError(bad + f"a number, not {value!r}")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str) or not value:
            raise HarnessError(bad + f"a non-empty string, not {value!r}")
    elif isinstance(kind, tuple):
        if value not in kind:
            raise HarnessError(bad + f"one of {', '.join(kind)}, not {value!r}")
    elif isinstance(kind, list):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or any(v not in kind for v in items):
            raise HarnessError(bad + f"a list drawn from {', '.join(kind)}, not {value!r}")
        value = list(dict.fromkeys(items))
    elif kind == "all|list":
        if value != "all" and not (
            isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise HarnessError(bad + f"'all' or a list of layer indices, not {value!r}")
    if key in POSITIVE and value <= 0:
        raise HarnessError(bad + f"positive, not {value!r}")
    if key == "holdout" and not 0 < value < 1:
        raise HarnessError(bad + f"between 0 and 1, not {value!r}")
    if key == "cv_folds" and value < 2:
        raise HarnessError(bad + f"at least 2, not {value!r}")
    return value


def _parse_override(text: str) -> tuple[str, str, object]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise HarnessError(f"--set {text!r}: expected METHOD.KEY=VALUE, e.g. ptune.max_steps=40")
    name, raw = text.split("=", 1)
    method, key = name.split(".", 1)
    if method not in SCHEMA:
        raise HarnessError(f"--set {text!r}: unknown method '{method}' (presets exist for {', '.join(SCHEMA)})")
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    if SCHEMA[method].get(key) is str and not isinstance(value, str):
        value = raw
    return method, key, value


def load_preset(method: str, presets_dir: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """The preset of one trained method: its YAML (every key required), then the `--set` overrides."""
    folder = Path(presets_dir) if presets_dir else resource_dir("probes")
    path = folder / f"{method}.yaml"
    data = read_yaml(path, f"preset for method '{method}' (--presets-dir)")
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: a preset must be a mapping of keys to values")
    preset = {_name(method, key): _check(method, key, value, str(path)) for key, value in data.items()}
    missing = [k for k in SCHEMA[method] if k not in preset]
    if missing:
        raise HarnessError(f"{path}: missing key(s) {', '.join(missing)}")
    for text in overrides or []:
        m, key, value = _parse_override(text)
        if m == method:
            preset[_name(method, key)] = _check(method, key, value, f"--set {text}")
    return preset


def check_overrides(overrides: list[str] | None) -> None:
    """Fail early on a malformed `--set`, whatever methods run."""
    for text in overrides or []:
        method, key, value = _parse_override(text)
        _check(method, key, value, f"--set {text}")
