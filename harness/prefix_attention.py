"""Shared-prefix ("cascade") attention: every row of a batch attends to ONE copy of a prefix's keys and values.

The engine's rows of a unit share one prefix (the demos). Run through transformers' key/value cache, each batch
would view the prefix cache once per row, and every layer would then copy it: the cache update concatenates the B
views with the new keys (B x (L + T) positions), grouped-query attention repeats them per head, and attention reads
B copies of the same L keys. Here a batch runs without a cache, its positions going on from the prefix's
(`position_ids = L + arange(T)`), and the model's attention modules call `shared_prefix_attention`, registered with
transformers' AttentionInterface, which gets the prefix keys/values of its layer through a keyword argument that
the models pass down to the attention function unchanged. Per layer and KV head it attends the queries of all rows
and of the heads that share that KV head to the prefix keys in one matmul ([group*B*T, d] @ [d, L]), the rows'
own new tokens apart (causal), and merges the two softmax parts exactly: both are exponentiated against their
common row maximum and normalised by the sum of both, which is the softmax over all L + T keys.

Scores are scaled, capped and windowed as the model's attention module asks (its `scaling`, `sliding_window` and
`softcap` arguments): Gemma-3's query_pre_attn_scalar arrives as `scaling`; transformers 5.24's Gemma-3 passes no
softcap (its own eager and sdpa attention ignore attn_logit_softcapping too), so none is applied there.

Only the model types whose attention is checked here (tests compare scores with a plain full-sequence pass) use
it; any other model, cache or config keeps the expanded-cache path, so a score is never computed a way that was
not checked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from harness.errors import HarnessError

PREFIX_ATTENTION_ENV = "HARNESS_PREFIX_ATTENTION"
PREFIX_ATTENTION_MODES = ("shared", "expand")
ATTENTION_NAME = "harness_shared_prefix"
# Decoder model types whose attention modules call the registered attention function with the keyword arguments
# read here (scaling, sliding_window, softcap) and nothing else that changes the result (checked in transformers'
# modeling code and by tests/test_prefix_attention.py).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma3_text")
# Cache layers whose tensors hold the last positions of the prefix in order (a sliding-window layer the last
# window - 1, a full layer all of them).
CACHE_LAYERS = ("DynamicLayer", "DynamicSlidingWindowLayer")
# Attention scores materialised at a time (float32): rows of a batch are taken in chunks below this.
MAX_SCORES = 1 << 26


def prefix_attention_mode(value: str | None = None) -> str:
    """The mode asked for (`value`, else $HARNESS_PREFIX_ATTENTION, else expand); a bad one is a one-line error."""
    mode = (value if value is not None else os.environ.get(PREFIX_ATTENTION_ENV, "expand")).strip().lower()
    if mode not in PREFIX_ATTENTION_MODES:
        raise HarnessError(f"${PREFIX_ATTENTION_ENV} must be {' or '.join(PREFIX_ATTENTION_MODES)}, not '{mode}'")
    return mode


@dataclass
class SharedPrefix:
    """What every attention layer of one pass needs: the prefix length and each layer's cached (keys, values),
    batch 1, [1, kv_heads, n, head_dim], holding the prefix's last n positions (n == length on a full layer)."""

    length: int
    layers: list[tuple[torch.Tensor, torch.Tensor]]


def supports_model(decoder: torch.nn.Module) -> bool:
    """Is this decoder's attention one whose scores the shared path is known to reproduce?"""
    config = decoder.config
    if getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    if getattr(config, "use_bidirectional_attention", False) or getattr(config, "output_attentions", False):
        return False
    modules = attention_modules(decoder)
    return bool(modules) and all(getattr(m, "is_causal", True) for m in modules)


def shared_prefix(cache, length: int) -> SharedPrefix | None:
    """The cache as a SharedPrefix, or None where its layers are not plain batch-1 tensors of the prefix's last
    positions (a quantized or static cache, one cut or stacked differently)."""
    layers = []
    for layer in getattr(cache, "layers", ()):
        if type(layer).__name__ not in CACHE_LAYERS or getattr(layer, "record_past", False):
            return None
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if keys is None or keys.ndim != 4 or keys.shape[0] != 1 or not 0 < keys.shape[2] <= length:
            return None
        if type(layer).__name__ == "DynamicLayer" and keys.shape[2] != length:
            return None
        layers.append((keys, values))
    return SharedPrefix(length, layers) if layers else None


def attention_modules(decoder: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in decoder.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "layer_idx")]


@contextmanager
def use_shared_prefix_attention(decoder: torch.nn.Module) -> Iterator[None]:
    """Within the block the decoder's attention modules call `shared_prefix_attention`; then their own again."""
    _register()
    configs = {id(c): c for c in [decoder.config, *(m.config for m in attention_modules(decoder))]}
    saved = {key: config._attn_implementation for key, config in configs.items()}
    try:
        for config in configs.values():
            # A name with no mask function registered: the model builds no attention mask for the pass
            # (transformers' mask helpers return None for it); the masks are made below, from positions.
            config._attn_implementation = ATTENTION_NAME
        yield
    finally:
        for key, config in configs.items():
            config._attn_implementation = saved[key]


def _register() -> None:
    from transformers import AttentionInterface

    if ATTENTION_NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    harness_prefix: SharedPrefix | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of B rows of T new tokens ([B, heads, T, d] queries, [B, kv_heads, T, d] keys/values) after one
    shared prefix, causal within the rows (right padding: a real position never sees the pads after it). Returns
    [B, T, heads, d] as transformers' attention functions do. `sliding_window` (a local layer's) hides the keys
    more than window - 1 positions before a query; `softcap` caps the scores as the model's eager attention does."""
    if harness_prefix is None:
        raise RuntimeError(f"{ATTENTION_NAME} attention called without the prefix (harness_prefix=)")
    if dropout:
        raise RuntimeError(f"{ATTENTION_NAME} attention is for evaluation: dropout must be 0")
    prefix_keys, prefix_values = harness_prefix.layers[module.layer_idx]
    prefix_keys, prefix_values = prefix_keys[0].to(query.dtype), prefix_values[0].to(query.dtype)
    length, n = harness_prefix.length, prefix_keys.shape[1]
    rows, heads, width, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    dim_v = value.shape[-1]
    scaling = dim**-0.5 if scaling is None else scaling
    device = query.device

    # Which keys each query sees: True where visible. Query t is at position length + t; prefix key j at
    # length - n + j (the cache holds the prefix's last n positions).
    t = torch.arange(width, device=device)
    own_visible = t[None, :] <= t[:, None]
    prefix_visible = None
    if sliding_window is not None:
        own_visible &= t[None, :] > t[:, None] - sliding_window
        if n + width - 1 >= sliding_window:  # some prefix key falls out of some query's window
            j = torch.arange(n, device=device)
            prefix_visible = (length - n + j)[None, :] > (length + t)[:, None] - sliding_window

    # [kv_heads, B, group, T, d]: the queries that read one KV head side by side.
    queries = query.view(rows, kv_heads, group, width, dim).transpose(0, 1)
    keys, values = key.transpose(0, 1), value.transpose(0, 1)  # [kv_heads, B, T, d]
    out = query.new_empty((rows, width, kv_heads, group, dim_v))
    step = max(1, MAX_SCORES // max(1, heads * width * (n + width)))
    for b0 in range(0, rows, step):
        b1 = min(rows, b0 + step)
        # scaled before the products: one pass over the queries, not two over the larger score tensors
        q = queries[:, b0:b1].reshape(kv_heads, (b1 - b0) * group * width, dim) * scaling
        prefix_scores = _scores(torch.matmul(q, prefix_keys.transpose(-1, -2)), softcap)
        prefix_scores = prefix_scores.view(kv_heads, b1 - b0, group, width, n)
        q = q.view(kv_heads, b1 - b0, group * width, dim)
        own_scores = _scores(torch.matmul(q, keys[:, b0:b1].transpose(-1, -2)), softcap)
        own_scores = own_scores.view(kv_heads, b1 - b0, group, width, width)
        own_scores.masked_fill_(~own_visible, -torch.inf)
        if prefix_visible is not None:
            prefix_scores.masked_fill_(~prefix_visible, -torch.inf)
        # One softmax over prefix and own keys: both against their common maximum (finite: a query always sees
        # itself), over the sum of both.
        top = torch.maximum(prefix_scores.amax(-1), own_scores.amax(-1)).unsqueeze(-1)
        prefix_weights = prefix_scores.sub_(top).exp_()
        own_weights = own_scores.sub_(top).exp_()
        total = prefix_weights.sum(-1) + own_weights.sum(-1)
        mixed = torch.matmul(prefix_weights.view(kv_heads, -1, n).to(query.dtype), prefix_values).float()
        own = torch.matmul(own_weights.view(kv_heads, b1 - b0, group * width, width).to(query.dtype), values[:, b0:b1])
        mixed = mixed.view(kv_heads, b1 - b0, group, width, dim_v) + own.float().view(
            kv_heads, b1 - b0, group, width, dim_v
        )
        mixed /= total.unsqueeze(-1)
        out[b0:b1] = mixed.permute(1, 3, 0, 2, 4).to(out.dtype)  # [B, T, kv_heads, group, d]
    return out.view(rows, width, heads, dim_v), None


def _scores(products: torch.Tensor, softcap: float | None) -> torch.Tensor:
    """Float32 scores (a new tensor only where the products are not float32 already), softcapped in place."""
    scores = products.float()
    if softcap is not None:
        scores.div_(softcap).tanh_().mul_(softcap)
    return scores
