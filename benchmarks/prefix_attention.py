"""Shared-prefix attention vs the expanded prefix cache: one batch of B rows of T tokens after an L-token prefix.

The engine scores every batch of a few-shot unit after the unit's demo prefix. With HARNESS_PREFIX_ATTENTION=expand
each row views the prefix's key/value cache and every layer copies it (cache update, grouped-query repeat); with
=shared (harness/prefix_attention.py) all rows attend to one copy. This script times `Engine._score_batch`, the
engine's own batch pass (decoder over the T new tokens, head at each row's last position), both ways on the same
random token rows, and prints per shape and mode the seconds per batch (median of --repeats after a warm-up),
tokens/s (B x T new tokens), model GFLOP/s (FLOPs counted as benchmarks/flop_bound.py counts them: linear layers
per new token, attention per (query, key) pair over prefix and causal new tokens, the head once per row) and the
max |difference| of the scored log-likelihoods from the expand path's, with whether every row's argmax is the same.

Shapes: `long` (L=600, T=40, B=16) and `rte-k5` (L=371, T=81, B=6: RTE 5-shot in
benchmarks/results/engine_vs_lm_eval.txt, 125240 / 22413 tokens run over 277 examples, at the CPU budget of 512
tokens per batch), or --shape L,T,B.

Run on an idle machine (timings of a busy one say nothing):
    python benchmarks/prefix_attention.py                     # SmolLM2-135M, float32, CPU
    python benchmarks/prefix_attention.py --device cuda --shape 2000,100,64
    python benchmarks/prefix_attention.py --model tiny --shape 40,8,3 --repeats 1   # a random model: plumbing only
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flop_bound import config_shape  # noqa: E402

from harness.engine import Engine, _Row  # noqa: E402

SHAPES = {"long": (600, 40, 16), "rte-k5": (371, 81, 6)}


def load(name: str, device: str, dtype: str):
    if name == "tiny":  # random weights, SmolLM2's layout scaled down: for checking the script, not for timing
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=500,
            hidden_size=96,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=6,
            num_key_value_heads=2,
            max_position_embeddings=4096,
        )
        model = LlamaForCausalLM(config).eval().to(device=device, dtype=getattr(torch, dtype))
        return model, SimpleNamespace(bos_token_id=None, eos_token_id=0, pad_token_id=0)
    from harness.models import load_model

    loaded = load_model(name, device=device, dtype=dtype)
    return loaded.model, loaded.tokenizer


def run_batch(
    engine: Engine, prefix: list[int], tails: list[list[int]], repeats: int
) -> tuple[float, list[float], list[int]]:
    """Median seconds of one batch pass (after a warm-up), each row's log-likelihood of its last token and the
    most likely token at that position."""
    with torch.no_grad():
        cache = engine.decoder(input_ids=torch.tensor([prefix], device=engine.device), use_cache=True).past_key_values
        times, results = [], []
        for _ in range(repeats + 1):
            rows = [
                _Row(b, prefix + tail, len(prefix) + len(tail) - 1, [0], len(prefix), cache)
                for b, tail in enumerate(tails)
            ]
            results = [{"logprobs": [0.0], "hidden": {}} for _ in tails]
            conts = [[[tail[-1]]] for tail in tails]
            if engine.device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            engine._score_batch(rows, conts, results, ())
            if engine.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    return statistics.median(times[1:]), [r["logprobs"][0] for r in results], [r["top1"] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="a harness model name, or 'tiny' (random)")
    parser.add_argument("--shape", action="append", help="long, rte-k5 or L,T,B (repeatable; default both named)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    model, tokenizer = load(args.model, args.device, args.dtype)
    flops = config_shape(model.config)
    engines = {mode: Engine(model, tokenizer, prefix_attention=mode) for mode in ("expand", "shared")}
    if not engines["shared"]._shared_prefix:
        sys.exit(f"{args.model}: the shared path does not support this model ({model.config.model_type})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.model} {args.dtype} on {args.device}")
    print("| L | T | B | mode | s per batch | tokens/s | GFLOP/s | max diff vs expand (nats) | same argmax |")
    print("|---|---|---|---|---|---|---|---|---|")
    generator = torch.Generator().manual_seed(0)
    for name in args.shape or list(SHAPES):
        length, width, rows = SHAPES[name] if name in SHAPES else map(int, name.split(","))
        tokens = torch.randint(1, model.config.vocab_size, (length + rows * width,), generator=generator).tolist()
        prefix = tokens[:length]
        tails = [tokens[length + b * width : length + (b + 1) * width] for b in range(rows)]
        pairs = width * length + width * (width + 1) / 2  # (query, key) pairs of one row
        gflop = rows * (width * flops["linear"] + pairs * flops["pair"] + flops["head"]) / 1e9
        scores, top = {}, {}
        for mode, engine in engines.items():
            seconds, scores[mode], top[mode] = run_batch(engine, prefix, tails, args.repeats)
            diff = max(abs(a - b) for a, b in zip(scores[mode], scores["expand"]))
            same = top[mode] == top["expand"]
            print(
                f"| {length} | {width} | {rows} | {mode} | {seconds:.4f} | {rows * width / seconds:.0f} "
                f"| {gflop / seconds:.1f} | {diff:.2g} | {same} |"
            )


if __name__ == "__main__":
    main()
