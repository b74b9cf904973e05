"""--device-map: a model's modules placed across GPUs, CPU memory and disk by accelerate, for a model larger than
one device. Reads and checks what the user typed; harness/models.py checks it against the model and loads with it.

The value is one of
- a strategy that accelerate computes from free memory: `auto` (= `balanced`), `balanced`, `balanced_low_0`,
  `sequential`;
- a mapping from module names to devices, inline JSON (`{"model.embed_tokens": 0, "model.layers.0": 0, ...,
  "lm_head": "cpu"}`) or a .json/.yaml/.yml file holding one. `""` names the whole model; a device is a GPU index,
  `cuda`, `cuda:N`, `mps`, `cpu` or `disk`.

A module on `cpu` beside a GPU, or on `disk`, is offloaded: its weights wait in CPU memory or in the safetensors
file, and accelerate's hooks bring them to the GPU for each forward pass. Scoring and probes read such a model as
they read one on one device; the tuned methods (ptune, bitfit) change parameters in place and refuse an
offloading map (they run with a map that keeps every module on a device of its own, e.g. split over GPUs).
Imports nothing heavy (no torch): `validate()` calls it before any model loads.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.errors import HarnessError
from harness.resources import parse_yaml

FLAG = "--device-map"
STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_CUDA = re.compile(r"^cuda(?::(\d+))?$")

DeviceMap = str | dict[str, int | str]  # a strategy, or module name -> GPU index | "cpu" | "mps" | "disk"


def parse_device_map(value: str | None) -> DeviceMap | None:
    """The --device-map value as from_pretrained takes it: None (not given), a strategy, or a checked mapping (GPUs
    as indices). A bad value is a one-line HarnessError naming --device-map."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        raise HarnessError(f"{FLAG} is empty: give auto, a JSON mapping, or a .json/.yaml file")
    if text.lower() in STRATEGIES:
        return text.lower()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise HarnessError(f"{FLAG}: invalid JSON at character {err.pos + 1} ({err.msg})") from None
        return _checked(data, "")
    path = Path(text).expanduser()
    if path.suffix.lower() not in (".json", ".yaml", ".yml"):
        raise HarnessError(
            f"{FLAG} must be {', '.join(STRATEGIES)}, a JSON mapping like '{{\"model.layers.0\": 0}}', or a "
            f".json/.yaml file, not '{value}'"
        )
    if not path.is_file():
        raise HarnessError(f"{FLAG}: {path} not found")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HarnessError(f"{FLAG}: {path} is not valid JSON ({err})") from None
    else:
        data = parse_yaml(path)
    return _checked(data, f" ({path})")


def _checked(data: object, where: str) -> dict[str, int | str]:
    if not isinstance(data, dict) or not data:
        raise HarnessError(f"{FLAG}{where}: expected a non-empty mapping of module names to devices")
    out: dict[str, int | str] = {}
    for name, device in data.items():
        if not isinstance(name, str):
            raise HarnessError(f"{FLAG}{where}: module names are strings, not {name!r}")
        out[name.strip()] = _device(device, name, where)
    return out


def _device(device: object, name: str, where: str) -> int | str:
    """A GPU index for a GPU (accelerate's form), else cpu, mps or disk."""
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return device
    if isinstance(device, str):
        text = device.strip().lower()
        if text.isdigit():
            return int(text)
        cuda = _CUDA.match(text)
        if cuda:
            return int(cuda.group(1) or 0)
        if text in ("cpu", "mps", "disk"):
            return text
    raise HarnessError(
        f"{FLAG}{where}: module '{name}' has device {device!r}; use a GPU index, cuda:N, mps, cpu or disk"
    )


def gpu_indices(device_map: dict[str, int | str]) -> list[int]:
    return sorted({d for d in device_map.values() if isinstance(d, int)})


def offloads(device_map: dict[str, int | str]) -> bool:
    """Does this mapping offload weights (accelerate's rule: disk always; cpu when a GPU computes)?"""
    devices = set(device_map.values())
    return "disk" in devices or ("cpu" in devices and bool(gpu_indices(device_map)))


def describe(device_map: dict[str, int | str]) -> str:
    """The devices of a placed model, in order of first use, as the report's model line shows them."""
    names = [f"cuda:{d}" if isinstance(d, int) else str(d) for d in device_map.values()]
    return "+".join(dict.fromkeys(names))
