"""Soft prompts on the frozen model, with peft's prompt modules.

- `prompt-tuning` (Lester et al. 2021): `PromptTuningConfig` / `PromptEmbedding`, virtual token embeddings
  initialised from the text of the task's template (its fixed words, the Jinja fields removed).
- `p-tuning` (Liu et al. 2021): `PromptEncoderConfig` / `PromptEncoder`, the virtual tokens produced by an MLP.

The soft prompt goes before every row that the choice scorer runs; the model's own weights stay frozen.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from harness.methods.base import TuningMethod, register
from harness.methods.presets import TrainingPreset, setting
from harness.prompts import Template

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class PTunePreset(TrainingPreset):
    """probes/ptune.yaml: the training settings, and the soft prompt's."""

    variants: list[Literal["prompt-tuning", "p-tuning"]] = setting(
        "prompt-tuning (PromptTuningConfig, Lester et al. 2021) and/or p-tuning (PromptEncoderConfig, Liu et al. "
        "2021): each is its own stored variant"
    )
    num_virtual_tokens: int = setting("soft prompt length, in virtual tokens", positive=True)
    encoder_hidden_size: int = setting("width of p-tuning's MLP encoder", positive=True)


def init_text(template: Template) -> str:
    """The template's own words: its text with the Jinja expressions and blocks removed."""
    text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", " ", template.text)
    return re.sub(r"[ \t]+", " ", text).strip() or template.name


@contextmanager
def soft_prompt(
    model: torch.nn.Module, tokenizer, variant: str, preset: PTunePreset, template: Template, seed: int
) -> Iterator[tuple[Callable[[int], torch.Tensor], list[torch.nn.Parameter], dict]]:
    """Yield (prompt(batch) -> embeddings, trainable parameters, description); the model is frozen meanwhile."""
    import torch
    from peft import PromptEncoderConfig, PromptTuningConfig
    from peft.tuners.p_tuning.model import PromptEncoder
    from peft.tuners.prompt_tuning.model import PromptEmbedding

    from harness.engine import execution_device

    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    embeddings = model.get_input_embeddings()
    device = execution_device(model, embeddings)  # the embeddings' device (one of several, with --device-map)
    n, dim = preset.num_virtual_tokens, embeddings.weight.shape[1]
    torch.manual_seed(seed)
    if variant == "prompt-tuning":
        config = PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=n, token_dim=dim, num_transformer_submodules=1
        )
        module = PromptEmbedding(config, embeddings)
        # peft's TEXT init reloads a tokenizer by name; the same init from the tokenizer at hand:
        # the text's token embeddings, repeated or cut to the number of virtual tokens.
        ids = tokenizer.encode(init_text(template), add_special_tokens=False) or [0]
        ids = (ids * (n // len(ids) + 1))[:n]
        with torch.no_grad():
            module.embedding.weight.copy_(embeddings(torch.tensor(ids, device=device)).float())
        detail = f"{n} virtual tokens initialised from the text of template '{template.name}'"
    elif variant == "p-tuning":
        config = PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=n,
            token_dim=dim,
            num_transformer_submodules=1,
            encoder_hidden_size=preset.encoder_hidden_size,
            encoder_reparameterization_type="MLP",
        )
        module = PromptEncoder(config)
        detail = f"{n} virtual tokens from an MLP encoder (hidden size {preset.encoder_hidden_size})"
    else:
        raise ValueError(variant)
    module = module.to(device)
    params = list(module.parameters())
    indices = torch.arange(n, device=device)

    def prompt(batch: int) -> torch.Tensor:
        return module(indices).unsqueeze(0).expand(batch, -1, -1)

    try:
        yield prompt, params, {"ptune": detail}
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, False))


class PTune(TuningMethod):
    name = "ptune"
    description = "soft prompts trained on the frozen model (prompt tuning and P-tuning, peft)"
    preset_class = PTunePreset

    def variants(self, preset: PTunePreset) -> list[str]:
        return list(preset.variants)

    def trainable(self, model, tokenizer, variant: str, preset: PTunePreset, template: Template, seed: int):
        return soft_prompt(model, tokenizer, variant, preset, template, seed)


register(PTune())
