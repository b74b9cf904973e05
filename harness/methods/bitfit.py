"""BitFit (Ben Zaken et al. 2022): train only bias terms of the frozen model.

Linear layers of attention and MLP that have no bias (SmolLM2, Gemma-3; Qwen2 has q/k/v biases only) get a
zero-initialised one, so the model computes exactly the same function before training. The context manager
puts the model back as it was (added biases removed, existing ones restored), so later units see it unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.methods.base import TuningMethod, register
from harness.methods.presets import TrainingPreset

if TYPE_CHECKING:
    import torch

    from harness.prompts import Template


@dataclass(frozen=True)
class BitFitPreset(TrainingPreset):
    """probes/bitfit.yaml: the training settings only (what is trained is fixed: every bias)."""


@contextmanager
def bias_only(model: torch.nn.Module) -> Iterator[tuple[list[torch.nn.Parameter], dict]]:
    """Yield (trainable biases, description) with every other parameter frozen."""
    import torch

    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    added, existing = [], []
    for layer in model.get_decoder().layers:
        for module in layer.modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            if module.bias is None:
                w = module.weight
                module.bias = torch.nn.Parameter(torch.zeros(module.out_features, dtype=w.dtype, device=w.device))
                added.append(module)
            else:
                existing.append((module, module.bias.detach().clone()))
                module.bias.requires_grad_(True)
    params = [m.bias for m in added] + [m.bias for m, _ in existing]
    if added and existing:
        kind = f"existing biases of {len(existing)} linear layers trained, zero-init biases added to {len(added)}"
    elif added:
        kind = f"zero-init biases added to all {len(added)} linear layers of attention and MLP"
    else:
        kind = f"existing biases of all {len(existing)} linear layers of attention and MLP"
    try:
        yield params, {"bitfit": kind, "linear_layers": len(added) + len(existing), "added_biases": len(added)}
    finally:
        with torch.no_grad():
            for module in added:
                module.bias = None
            for module, original in existing:
                module.bias.copy_(original)
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, False))


class BitFit(TuningMethod):
    name = "bitfit"
    description = "bias-only tuning (zero-init biases added where the model has none)"
    preset_class = BitFitPreset

    @contextmanager
    def trainable(self, model, tokenizer, variant: str, preset: BitFitPreset, template: Template, seed: int):
        with bias_only(model) as (params, detail):
            yield None, params, detail  # no soft prompt


register(BitFit())
