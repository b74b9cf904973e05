"""Method presets: one frozen dataclass per trained method, its values in `probes/<method>.yaml`.

The dataclass says what a preset holds: each field's type (a `Literal` lists the allowed values), what it means
(`help`) and its bounds (`positive`, `between`, `at_least`), all on the field; the checks below read them. The YAML
file holds the shipped values, each commented with where it comes from; every key is required, and
`--set method.key=value` overrides one. A preset is checked whole when it is built (a bad value fails before any
data or model is touched), and `asdict(preset)` is what a store keeps and compares.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from harness.errors import HarnessError
from harness.methods.base import get_method, method_names
from harness.resources import read_yaml, resource_dir

P = TypeVar("P", bound="Preset")


def setting(
    help: str, *, positive: bool = False, between: tuple[float, float] | None = None, at_least: int | None = None
) -> Any:
    """A preset field: `help` says what it is; `positive`, `between` (open interval) and `at_least` bound it."""
    return field(metadata={"help": help, "positive": positive, "between": between, "at_least": at_least})


@dataclass(frozen=True)
class Preset:
    """The settings of one trained method. Subclasses add fields with `setting(...)`; no field has a default, so
    the YAML file is the one place a shipped value lives."""

    renamed: ClassVar[dict[str, str]] = {}  # old key -> current key, still accepted in a YAML file and in --set

    template: str = setting("the template the method renders each example with (tasks/<task>.yaml)")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(type(self), f.name, getattr(self, f.name), type(self).__name__))

    @classmethod
    def known_keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def key(cls, name: str) -> str:
        """The current name of a key (an old one renamed)."""
        return cls.renamed.get(name, name) if cls.renamed.get(name) in cls.known_keys() else name

    @classmethod
    def check(cls, method: str, name: str, value: object, where: str) -> object:
        """`value` of key `name`, checked (and made canonical: a number a float, a list without repeats); else a
        one-line HarnessError naming `where` (the file or the --set) and the key."""
        name = cls.key(name)
        if name not in cls.known_keys():
            raise HarnessError(f"{where}: unknown key '{name}' for {method} (known: {', '.join(cls.known_keys())})")
        return _checked(cls, name, value, f"{where}: {method}")

    @classmethod
    def from_mapping(cls: type[P], method: str, data: dict, where: str) -> P:
        """A preset from a YAML file's mapping: every key known and valid, none missing."""
        values = {cls.key(k): cls.check(method, k, v, where) for k, v in data.items()}
        missing = [k for k in cls.known_keys() if k not in values]
        if missing:
            raise HarnessError(f"{where}: missing key(s) {', '.join(missing)}")
        return cls(**values)

    def with_override(self: P, method: str, name: str, value: object, where: str) -> P:
        key = self.key(name)
        return dataclasses.replace(self, **{key: self.check(method, key, value, where)})

    def to_dict(self) -> dict:
        """What a store keeps (meta `presets`) and compares when a run resumes."""
        return asdict(self)


@dataclass(frozen=True)
class TrainingPreset(Preset):
    """What every method trained by gradient descent (ptune, bitfit) is run with: harness/methods/training.py."""

    renamed: ClassVar[dict[str, str]] = {"steps": "max_steps"}

    learning_rate: float = setting("AdamW's learning rate, constant", positive=True)
    max_steps: int = setting(
        "cap on optimiser steps; a run that reaches it is stored with converged: false", positive=True
    )
    max_seconds: float = setting("cap on a unit's training wall time, in seconds", positive=True)
    batch_size: int = setting("fit examples per optimiser step", positive=True)
    eval_every: int = setting("optimiser steps between held-out checks", positive=True)
    patience: int = setting("held-out checks without a better loss that end a run (converged)", positive=True)
    holdout: float = setting("share of the train sample held out for early stopping", between=(0, 1))
    objective: Literal["choices", "lm"] = setting(
        "choices: cross-entropy over the answer choices' log-likelihoods; lm: loss on the answer's tokens"
    )


def _checked(cls: type[Preset], name: str, value: object, owner: str) -> object:
    """The canonical value of field `name` of `cls`, or a HarnessError "<owner>.<name> must be ..."."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    kind = typing.get_type_hints(cls, include_extras=False)[name]
    try:
        value = _typed(kind, value)
        meta = f.metadata
        if meta.get("positive") and not value > 0:
            raise ValueError("positive")
        if meta.get("between") and not meta["between"][0] < value < meta["between"][1]:
            raise ValueError("between {} and {}".format(*meta["between"]))
        if meta.get("at_least") is not None and value < meta["at_least"]:
            raise ValueError(f"at least {meta['at_least']}")
    except ValueError as bad:
        raise HarnessError(f"{owner}.{name} must be {bad}, not {value!r}") from None
    return value


def _typed(kind: object, value: object) -> object:
    """`value` as a `kind` (str, int, float, Literal[...], list[Literal[...]], or a union of these); else a
    ValueError saying what was expected."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str) or not value:
            raise ValueError("a non-empty string")
        return value
    if origin is Literal:
        if value not in args:
            raise ValueError(f"one of {', '.join(map(str, args))}")
        return value
    if origin is list and typing.get_origin(args[0]) is Literal:  # a list drawn from fixed values, one at least
        choices = typing.get_args(args[0])
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or any(v not in choices for v in items):
            raise ValueError(f"a list drawn from {', '.join(choices)}")
        return list(dict.fromkeys(items))
    if origin is list:
        items = value if isinstance(value, list) and value else None
        if items is None:
            raise ValueError(f"a non-empty list of {_describe(args[0])}s")
        return [_typed(args[0], v) for v in items]
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _typed(option, value)
            except ValueError:
                continue
        raise ValueError(" or ".join(_describe(option) for option in args))
    raise TypeError(f"a preset field cannot have type {kind!r}")


def _describe(kind: object) -> str:
    if typing.get_origin(kind) is Literal:
        return " or ".join(repr(v) for v in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return f"a list of {_describe(typing.get_args(kind)[0])}s"
    return {int: "integer", float: "number", str: "string"}.get(kind, str(kind))


# ---------------------------------------------------------------- loading and --set
def preset_methods() -> list[str]:
    """The methods that have a preset, in the registry's order."""
    return [m for m in method_names() if get_method(m).preset_class is not None]


def preset_class(method: str) -> type[Preset]:
    return get_method(method, "--set").preset_class


def _parse_override(text: str) -> tuple[str, str, object]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise HarnessError(f"--set {text!r}: expected METHOD.KEY=VALUE, e.g. ptune.max_steps=40")
    name, raw = text.split("=", 1)
    method, key = name.split(".", 1)
    if method not in preset_methods():
        raise HarnessError(
            f"--set {text!r}: unknown method '{method}' (presets exist for {', '.join(preset_methods())})"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        value = raw
    cls = preset_class(method)
    if key in cls.known_keys() and typing.get_type_hints(cls)[key] is str and not isinstance(value, str):
        value = raw  # a text key keeps the text as typed (`--set probe.template=123`)
    return method, key, value


def load_preset(method: str, presets_dir: str | Path | None = None, overrides: list[str] | None = None) -> Preset:
    """The preset of one trained method: its YAML (every key required), then the `--set` overrides for it."""
    cls = preset_class(method)
    folder = Path(presets_dir) if presets_dir else resource_dir("probes")
    path = folder / f"{method}.yaml"
    data = read_yaml(path, f"preset for method '{method}' (--presets-dir)")
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: a preset must be a mapping of keys to values")
    preset = cls.from_mapping(method, data, str(path))
    for text in overrides or []:
        m, key, value = _parse_override(text)
        if m == method:
            preset = preset.with_override(method, key, value, f"--set {text}")
    return preset


def check_overrides(overrides: list[str] | None) -> None:
    """Fail early on a malformed `--set`, whatever methods run."""
    for text in overrides or []:
        method, key, value = _parse_override(text)
        preset_class(method).check(method, key, value, f"--set {text}")
