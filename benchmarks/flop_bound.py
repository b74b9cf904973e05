"""How much faster than lm-eval the engine can be at all: the ratio of the FLOPs each side must compute.

Exact scores leave the engine no work to skip beyond what it skips already (the demo prefix, the output head
outside answer positions), so at equal FLOP/s its speed-up over lm-eval is the ratio of the two sides' FLOPs.
This script computes that ratio for each case of `engine_vs_lm_eval.py`'s JSON from the model's shape and the
tokens each side ran, and sets it beside the measured ratios.

Per pass of T tokens a decoder computes 2 x (non-embedding parameters) FLOPs per token in its linear layers,
2 x vocab x width per token in the output head, and 4 x (heads x head width) FLOPs per (query, key) pair per layer
in attention. lm-eval runs one pass per example (one-token answers share it) over the whole prompt, with the head
at every position. The engine runs the prefix once, then each example's own q tokens, each attending to the P
prefix tokens and its own earlier tokens, with the head at the answer position only. Mean lengths stand in for
per-example ones, which understates lm-eval's quadratic attention term a little (a bound that errs in the
engine's favour).

Run: python benchmarks/flop_bound.py [benchmarks/results/engine_vs_lm_eval.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODEL = "smollm2-135m"


def shape(model: str = MODEL) -> dict:
    """FLOPs per token (linear layers), per head position and per attention (query, key) pair of `model`."""
    from harness.models import load_model

    return config_shape(load_model(model, device="cpu", dtype="float32").model.config)


def config_shape(config) -> dict:
    """FLOPs per token of the linear layers and the head, and per (query, key) pair of attention, of a config."""
    config = config.get_text_config()
    width, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or width // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    per_layer = (
        width * (config.num_attention_heads * head_dim) * 2 + width * kv * 2 + 3 * width * config.intermediate_size
    )
    return {
        "linear": 2 * layers * per_layer,  # FLOPs per token
        "head": 2 * config.vocab_size * width,  # FLOPs per token where logits are taken
        "pair": 4 * layers * config.num_attention_heads * head_dim,  # FLOPs per (query, key) pair, all layers
    }


def bound(row: dict, s: dict) -> tuple[float, float, float]:
    n = row["examples"]
    t = row["lm_eval_tokens_computed"] / n  # one pass per example
    q = row["harness_tokens_computed"] / n
    p = max(0.0, t - q)  # the shared prefix each example attends to
    lm_eval = t * (s["linear"] + s["head"]) + s["pair"] * t * (t + 1) / 2
    engine = q * s["linear"] + s["pair"] * (q * p + q * (q + 1) / 2) + s["head"]
    return lm_eval / 1e9, engine / 1e9, lm_eval / engine


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/engine_vs_lm_eval.json")
    data = json.loads(path.read_text())
    s = shape()
    print(
        "| task | k | GFLOP per example lm-eval / engine | FLOP ratio (the bound) | measured scoring ratio | "
        "measured wall ratio | GFLOP/s lm-eval / engine | of matmul peak |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in data["rows"]:
        lm_eval, engine, ratio = bound(row, s)
        n = row["examples"]
        rate_l = lm_eval * n / row["lm_eval_scoring_s"]
        rate_e = engine * n / row["harness_scoring_s"]
        peak = data["matmul_gflops"]
        print(
            f"| {row['task']} | {row['k']} | {lm_eval:.1f} / {engine:.1f} | {ratio:.2f}x | {row['scoring_ratio']:.2f}x "
            f"| {row['wall_ratio']:.2f}x | {rate_l:.0f} / {rate_e:.0f} | {rate_l / peak:.0%} / {rate_e / peak:.0%} |"
        )


if __name__ == "__main__":
    main()
