"""The engine on an accelerator: throughput and agreement in float32 and bfloat16, with models built on the spot.

The pip models cannot travel to a GPU machine, so this runs models of real shapes with random weights: SmolLM2-135M's
config (Llama, 30 x 576, grouped-query attention) and a Qwen2 of Qwen2.5-1.5B's width and depth (28 x 1536) with
SmolLM2's vocabulary. The requests are real ones: RTE's val set (277) and BoolQ's first 300, `lm-eval` template,
k = 0 and 5 with the first k train examples as demos, as `engine_vs_lm_eval.py` builds them, tokenized by SmolLM2's
tokenizer. Two steps:

    # here, beside the data: the requests, SmolLM2's tokenizer and config into one folder (about 5 MB)
    python benchmarks/engine_devices.py --export .bench --data ../shared/data/superglue --fewglue ../shared/data/fewglue
    # on the GPU machine
    python benchmarks/engine_devices.py --requests .bench --device cuda --json engine_devices.json

For each (model, dtype, task, k) it scores the requests three ways and reports the scoring time (the median of three
timed runs after a warm-up, the device synchronised), prompt tokens/s (the tokens of the plain rows below: the same
count on every side), peak device memory, and agreement:

- `plain`: one padded row per context (per context + continuation where an answer has several tokens), longest
  first, full-vocabulary log-softmax at every position: how lm-eval scores (lm-eval itself is not installed there);
- `engine`: harness's engine (the shared demo prefix run once, the head at answer positions only) on its default
  path (`expand`: the prefix cache copied per row);
- `engine shared`: the same with shared-prefix attention (`HARNESS_PREFIX_ATTENTION=shared`).

Agreement is each side's max per-choice log-likelihood difference from `plain` in the same dtype, and how many
examples pick the same answer. Random weights make the choices near ties, so in bfloat16 a few picks can differ by
rounding alone; the float32 rows are the check. TF32 stays off (PyTorch's default for matmuls), so float32 is
float32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

CASES = [("rte", 0), ("rte", 5), ("boolq", 0), ("boolq", 5)]
LIMITS = {"rte": 277, "boolq": 300}
SHAPES = {
    # name: (model class, config overrides on SmolLM2-135M's config)
    "smollm2-135m-shape": ("llama", {}),
    "qwen2.5-1.5b-shape": (
        "qwen2",
        dict(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            head_dim=128,
            tie_word_embeddings=True,
        ),
    ),
}


# ---------------------------------------------------------------- here: the requests and the tokenizer
def export(out: Path, data: Path, fewglue: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from engine_vs_lm_eval import MODEL, _examples

    from harness.catalog import get_task
    from harness.methods.prompt import PromptUnit, unit_scoring
    from harness.models import load_model
    from harness.prompts import load_prompts

    out.mkdir(parents=True, exist_ok=True)
    cases = {}
    for task_name, shots in CASES:
        examples, train = _examples(task_name, data, fewglue, LIMITS[task_name])
        unit = PromptUnit("lm-eval", shots, 0)
        scoring = unit_scoring(unit, get_task(task_name), load_prompts(task_name), examples, train, "first", False)
        cases[f"{task_name}-{shots}"] = [[r.context, list(r.continuations)] for r in scoring.requests]
        print(f"{task_name} k={shots}: {len(scoring.requests)} requests")
    (out / "requests.json").write_text(json.dumps(cases))
    loaded = load_model(MODEL, device="cpu", dtype="float32")
    loaded.tokenizer.save_pretrained(out / "tokenizer")
    loaded.model.config.save_pretrained(out / "tokenizer")
    print(f"wrote {out}/requests.json and {out}/tokenizer")


# ---------------------------------------------------------------- there: the model, the three sides
def build_model(shape: str, folder: Path, device: str, dtype):
    import torch
    import transformers as tf

    kind, overrides = SHAPES[shape]
    base = tf.AutoConfig.from_pretrained(folder / "tokenizer").to_dict()
    for key in ("architectures", "model_type", "transformers_version", "_model_name_or_path", "dtype"):
        base.pop(key, None)
    base.update(overrides)
    config_class, model_class = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
    }[kind]
    config = config_class(**base)
    torch.manual_seed(0)
    with torch.device(device):
        model = model_class(config).to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def plain_scores(model, engine, requests, batch_size: int):
    """lm-eval's way: a padded row per context (one-token answers share it), full-vocabulary logits everywhere."""
    import torch

    rows = []  # (tokens, [(request, choice, start, continuation tokens)])
    for i, (context, continuations) in enumerate(requests):
        pairs = [engine.encode_pair(context, c) for c in continuations]
        if all(len(tail) == 1 for _, tail in pairs) and len({tuple(ctx) for ctx, _ in pairs}) == 1:
            ctx = pairs[0][0]
            rows.append((ctx, [(i, j, len(ctx), tail) for j, (_, tail) in enumerate(pairs)]))
        else:
            for j, (ctx, tail) in enumerate(pairs):
                rows.append((ctx + tail[:-1], [(i, j, len(ctx), tail)]))
    rows.sort(key=lambda r: -len(r[0]))
    out = [[0.0] * len(c) for _, c in requests]
    device = next(model.parameters()).device
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        width = len(batch[0][0])
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for b, (tokens, _) in enumerate(batch):
            ids[b, : len(tokens)] = torch.tensor(tokens)
            mask[b, : len(tokens)] = 1
        owners, index = [], []  # one (row, position, token) per answer token; read back from the device at once
        for b, (_, reads) in enumerate(batch):
            for i, j, ctx_len, tail in reads:
                for t, token in enumerate(tail):
                    owners.append((i, j))
                    index.append((b, ctx_len - 1 + t, token))
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            at = torch.tensor(index, device=device).T
            values = logp[at[0], at[1], at[2]].tolist()
        for (i, j), value in zip(owners, values):
            out[i][j] += value
    tokens = sum(len(tokens) for tokens, _ in rows)
    return out, tokens


def timed(fn, device: str, repeats: int):
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()  # warm-up: kernels chosen, caches allocated
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds, result = [], None
    for _ in range(repeats):
        sync()
        started = time.perf_counter()
        result = fn()
        sync()
        seconds.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
    return statistics.median(seconds), peak, result


def agreement(scores, reference):
    diff = max(abs(a - b) for s, r in zip(scores, reference) for a, b in zip(s, r))
    same = sum(
        max(range(len(s)), key=s.__getitem__) == max(range(len(r)), key=r.__getitem__)
        for s, r in zip(scores, reference)
    )
    return diff, same


def measure(args, save=lambda rows: None) -> list[dict]:
    import torch
    from transformers import AutoTokenizer

    from harness.engine import Engine, Request

    folder = args.requests
    cases = json.loads((folder / "requests.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    rows = []
    for shape in args.shapes.split(","):
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            model = build_model(shape, folder, args.device, dtype)
            params = sum(p.numel() for p in model.parameters())
            print(f"{shape} {dtype_name}: {params / 1e6:.0f}M parameters on {args.device}", flush=True)
            for task_name, shots in CASES:
                requests = cases[f"{task_name}-{shots}"]
                reqs = [Request(c, conts) for c, conts in requests]
                engines = {
                    "engine": Engine(model, tokenizer, prefix_attention="expand"),
                    "engine shared": Engine(model, tokenizer, prefix_attention="shared"),
                }
                run_plain = partial(plain_scores, model, engines["engine"], requests, args.plain_batch)
                plain_s, plain_peak, (plain, tokens) = timed(run_plain, args.device, args.repeats)
                row = {
                    "shape": shape,
                    "dtype": dtype_name,
                    "task": task_name,
                    "k": shots,
                    "examples": len(requests),
                    "prompt_tokens": tokens,
                    "plain_s": plain_s,
                    "plain_peak_mb": plain_peak,
                }
                for name, engine in engines.items():
                    seconds, peak, scored = timed(partial(engine.score, reqs), args.device, args.repeats)
                    diff, same = agreement([s.logprobs for s in scored], plain)
                    key = name.replace(" ", "_")
                    row.update({f"{key}_s": seconds, f"{key}_peak_mb": peak, f"{key}_diff": diff, f"{key}_same": same})
                rows.append(row)
                save(rows)
                print(
                    f"  {task_name} k={shots}: plain {tokens / plain_s:,.0f} tok/s, engine "
                    f"{tokens / row['engine_s']:,.0f} ({plain_s / row['engine_s']:.2f}x, diff {row['engine_diff']:.1e}, "
                    f"same {row['engine_same']}/{len(requests)}), shared {tokens / row['engine_shared_s']:,.0f} "
                    f"({plain_s / row['engine_shared_s']:.2f}x, diff {row['engine_shared_diff']:.1e})",
                    flush=True,
                )
            del model
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| model shape | dtype | task | k | examples | prompt tokens | tok/s plain | tok/s engine | tok/s engine shared "
        "| speed-up engine / shared | peak MiB plain / engine / shared | max diff engine / shared (nats) "
        "| same picks engine / shared |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["prompt_tokens"]
        lines.append(
            f"| {r['shape']} | {r['dtype']} | {r['task']} | {r['k']} | {r['examples']} | {t} "
            f"| {t / r['plain_s']:,.0f} | {t / r['engine_s']:,.0f} | {t / r['engine_shared_s']:,.0f} "
            f"| {r['plain_s'] / r['engine_s']:.2f}x / {r['plain_s'] / r['engine_shared_s']:.2f}x "
            f"| {r['plain_peak_mb']:,.0f} / {r['engine_peak_mb']:,.0f} / {r['engine_shared_peak_mb']:,.0f} "
            f"| {r['engine_diff']:.1e} / {r['engine_shared_diff']:.1e} "
            f"| {r['engine_same']} / {r['engine_shared_same']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", type=Path, help="write the requests and the tokenizer into this folder")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/superglue"))
    parser.add_argument("--fewglue", type=Path, default=Path("../shared/data/fewglue"))
    parser.add_argument("--requests", type=Path, help="the folder --export wrote: measure on --device")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plain-batch", type=int, default=64, help="rows per batch of the plain side")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.export:
        export(args.export, args.data, args.fewglue)
        return
    if not args.requests:
        parser.error("give --export DIR (here) or --requests DIR (on the device)")
    import torch
    import transformers

    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else args.device
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {where}", flush=True)

    def save(rows: list[dict]) -> None:  # after each case: a run cut short keeps what it measured
        if args.json:
            args.json.write_text(json.dumps({"device": where, "torch": torch.__version__, "rows": rows}, indent=1))

    rows = measure(args, save)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
