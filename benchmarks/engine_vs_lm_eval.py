"""Side by side: harness's scoring engine vs lm-evaluation-harness 0.4.13 on identical prompts.

Both sides score the `lm-eval` template of RTE (all 277 val examples) and BoolQ (the first 300 val examples) at
k = 0 and k = 5, with the first k train examples as demos (lm-eval's `first_n` sampler, our `--demo-selection
first`), on SmolLM2-135M in float32. Each (task, k, side) runs in its own process, alternating between the sides,
so wall time includes start-up and the peak resident memory is that side's alone. The parent prints:

- wall time (process, start-up included) and scoring time (the evaluation call alone) with their ratios,
- requests/s and prompt tokens/s (the same requests and tokens on both sides),
- peak resident memory of each process,
- the max per-choice log-likelihood difference and whether predictions are identical,
- the FLOPs each side must compute per example (`flop_bound.py`'s count from the model's shape: linear layers,
  the output head where logits are taken, attention pairs), their ratio (the speed-up at equal FLOP rates), and
  each side's achieved FLOP rate per second of scoring, also as a fraction of this torch build's float32
  2048x2048 matmul rate.

Run (about 25 minutes on 2 cores):
    python benchmarks/engine_vs_lm_eval.py --data ../shared/data/superglue --fewglue ../shared/data/fewglue
BoolQ has no train split in the SuperGLUE folder here, so its demos come from the FewGLUE train file (the same
file on both sides); RTE's come from the SuperGLUE train split.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from flop_bound import bound, config_shape  # this folder: the FLOPs each side must compute

MODEL = "smollm2-135m"
CASES = [("rte", 0), ("rte", 5), ("boolq", 0), ("boolq", 5)]
LIMITS = {"rte": 277, "boolq": 300}
# lm-eval computes full-vocabulary logits at every position; its batch is kept small, as its default (1) is.
LM_EVAL_BATCH_SIZE = 1


# ---------------------------------------------------------------- data both sides read
def _train_examples(task_name: str, data: Path, fewglue: Path):
    from harness.catalog import get_task
    from harness.loaders import DataSource, load_jsonl_split

    task = get_task(task_name)
    source = DataSource(data)
    if source.has_split(task, "train"):
        return source.load(task, "train")
    return load_jsonl_split(task, fewglue / task.folder / "train.jsonl")


def _examples(task_name: str, data: Path, fewglue: Path, limit: int):
    from harness.catalog import get_task
    from harness.loaders import DataSource

    return DataSource(data).load(get_task(task_name), "val")[:limit], _train_examples(task_name, data, fewglue)


def _hub_row(ex) -> dict:
    """A harness example in the Hub's field names (what lm-eval's super_glue YAML reads)."""
    return {**ex.fields, "idx": int(ex.id), "label": ex.label}


# ---------------------------------------------------------------- one side, in a child process
def run_harness(task_name: str, shots: int, args) -> dict:
    import torch

    from harness.catalog import get_task
    from harness.engine import Engine
    from harness.methods.prompt import PromptUnit, run_unit
    from harness.models import load_model
    from harness.prompts import load_prompts

    torch.manual_seed(0)
    examples, train = _examples(task_name, args.data, args.fewglue, args.limit)
    loaded = load_model(MODEL, device="cpu", dtype="float32")
    engine = Engine(loaded.model, loaded.tokenizer)
    prompts = load_prompts(task_name)
    started = time.perf_counter()
    variants = run_unit(PromptUnit("lm-eval", shots, 0), get_task(task_name), prompts, engine, examples, train, "first")
    scoring = time.perf_counter() - started
    gold = next(v for v in variants if v.variant == "gold")
    return {
        "scoring_s": scoring,
        "logprobs": [list(r.logprobs) for r in gold.records],
        "ids": [r.example_id for r in gold.records],
        "params": loaded.params,
        "shape": config_shape(loaded.model.config),
        "tokens_computed": engine.tokens_computed,
        "positions_computed": engine.positions_computed,
    }


def run_lm_eval(task_name: str, shots: int, args) -> dict:
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"
    tmp = Path(tempfile.mkdtemp(prefix="lm_eval_bench_"))
    os.environ["HF_DATASETS_CACHE"] = str(tmp / "cache")
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from harness.models import load_model

    examples, train = _examples(task_name, args.data, args.fewglue, args.limit)
    files = {}
    for split, rows in (("validation", examples), ("train", train)):
        files[split] = tmp / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(_hub_row(ex)) + "\n" for ex in rows), encoding="utf-8")
    name = f"bench_{task_name}_{shots}shot"
    config = {
        "include": str(Path(lm_eval.__file__).parent / "tasks" / "super_glue" / task_name / "default.yaml"),
        "task": name,
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {k: str(v) for k, v in files.items()}, "cache_dir": str(tmp / "cache")},
        "training_split": "train",
        "num_fewshot": shots,
        "fewshot_config": {"sampler": "first_n"},
    }
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    # The same weights and tokenizer object as the harness side loads (the converted safetensors cache).
    loaded = load_model(MODEL, device="cpu", dtype="float32")
    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=args.lm_eval_batch_size)
    started = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=[name],
        task_manager=TaskManager(include_path=str(tmp), include_defaults=False),
        log_samples=True,
        random_seed=None,
        numpy_random_seed=None,
        torch_random_seed=None,
    )
    scoring = time.perf_counter() - started
    samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
    return {
        "scoring_s": scoring,
        "logprobs": [[float(r[0]) for r in s["filtered_resps"]] for s in samples],
        "ids": [str(s["doc"]["idx"]) for s in samples],
        # prompt tokens of all requests, as lm-eval forms them (context + continuation, per choice)
        "prompt_tokens": sum(len(lm.tok_encode(ctx + cont)) for s in samples for ctx, cont in s["arguments"]),
        "tokens_computed": _lm_eval_tokens_computed(lm, samples),
    }


def _lm_eval_tokens_computed(lm, samples: list[dict]) -> int:
    """Tokens lm-eval runs through the model: one pass per distinct context + continuation[:-1] (its logits cache
    groups one-token continuations of the same context), each pass of that many tokens."""
    passes = set()
    for s in samples:
        for ctx, cont in s["arguments"]:
            ctx_ids, cont_ids = lm._encode_pair(ctx, cont)
            passes.add(tuple(ctx_ids + cont_ids[:-1]))
    return sum(len(p) for p in passes)


# ---------------------------------------------------------------- the parent
def _child(side: str, task: str, shots: int, args, out: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--task",
        task,
        "--shots",
        str(shots),
        "--limit",
        str(LIMITS[task]),
    ]
    cmd += ["--data", str(args.data), "--fewglue", str(args.fewglue), "--child-out", str(out)]
    cmd += ["--lm-eval-batch-size", str(args.lm_eval_batch_size)]
    env = {**os.environ, "HARNESS_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = out.with_suffix(".log")
    started = time.perf_counter()
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: its peak resident memory
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{side} {task} k={shots} failed:\n{log.read_text()[-3000:]}")
    result = json.loads(out.read_text())
    result["wall_s"] = wall
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of float32 matmul rate of this torch build (2 n^3 FLOPs per product)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/superglue"))
    parser.add_argument("--fewglue", type=Path, default=Path("../shared/data/fewglue"))
    parser.add_argument("--cases", default=",".join(f"{t}:{k}" for t, k in CASES), help="task:k,... (default all)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each task's examples (quick checks)")
    parser.add_argument("--lm-eval-batch-size", type=int, default=LM_EVAL_BATCH_SIZE)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=["harness", "lm-eval"], help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    parser.add_argument("--shots", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        run = run_harness if args.child == "harness" else run_lm_eval
        args.child_out.write_text(json.dumps(run(args.task, args.shots, args)))
        return

    for task in LIMITS:
        LIMITS[task] = max(1, round(LIMITS[task] * args.scale))
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases.split(",")]
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {MODEL} float32")
    rate_before = matmul_gflops()
    print(f"float32 matmul (2048x2048): {rate_before:.1f} GFLOP/s")

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="engine_bench_"))
    for i, (task, k) in enumerate(cases):
        order = ["lm-eval", "harness"] if i % 2 == 0 else ["harness", "lm-eval"]
        res = {}
        for side in order:
            print(f"  {task} k={k}: {side} ...", flush=True)
            res[side] = _child(side, task, k, args, tmp / f"{task}-{k}-{side}.json")
        ours, theirs = res["harness"], res["lm-eval"]
        assert ours["ids"] == theirs["ids"], "the two sides scored different examples"
        diff = max(abs(a - b) for x, y in zip(ours["logprobs"], theirs["logprobs"]) for a, b in zip(x, y))
        same_pred = sum(
            max(range(len(x)), key=x.__getitem__) == max(range(len(y)), key=y.__getitem__)
            for x, y in zip(ours["logprobs"], theirs["logprobs"])
        )
        n_requests = sum(len(x) for x in theirs["logprobs"])
        tokens = theirs["prompt_tokens"]
        model_flops = 2 * ours["params"] * ours["tokens_computed"] / ours["scoring_s"] / 1e9
        counted = {"examples": len(ours["ids"]), "lm_eval_tokens_computed": theirs["tokens_computed"]}
        counted["harness_tokens_computed"] = ours["tokens_computed"]
        flop_lm_eval, flop_engine, flop_ratio = bound(counted, ours["shape"])  # GFLOP per example, each side
        row = {
            "task": task,
            "k": k,
            "examples": len(ours["ids"]),
            "requests": n_requests,
            "prompt_tokens": tokens,
            "lm_eval_wall_s": theirs["wall_s"],
            "harness_wall_s": ours["wall_s"],
            "wall_ratio": theirs["wall_s"] / ours["wall_s"],
            "lm_eval_scoring_s": theirs["scoring_s"],
            "harness_scoring_s": ours["scoring_s"],
            "scoring_ratio": theirs["scoring_s"] / ours["scoring_s"],
            "lm_eval_req_per_s": n_requests / theirs["scoring_s"],
            "harness_req_per_s": n_requests / ours["scoring_s"],
            "lm_eval_tok_per_s": tokens / theirs["scoring_s"],
            "harness_tok_per_s": tokens / ours["scoring_s"],
            "lm_eval_peak_mb": theirs["peak_rss_mb"],
            "harness_peak_mb": ours["peak_rss_mb"],
            "max_abs_diff_nats": diff,
            "same_predictions": f"{same_pred}/{len(ours['ids'])}",
            "lm_eval_tokens_computed": theirs["tokens_computed"],
            "harness_tokens_computed": ours["tokens_computed"],
            "work_ratio": theirs["tokens_computed"] / ours["tokens_computed"],
            "harness_padding_share": 1 - ours["tokens_computed"] / max(1, ours["positions_computed"]),
            "harness_model_gflops": model_flops,
            "lm_eval_gflop_per_example": flop_lm_eval,
            "harness_gflop_per_example": flop_engine,
            "flop_ratio": flop_ratio,
            "lm_eval_gflops": flop_lm_eval * len(ours["ids"]) / theirs["scoring_s"],
            "harness_gflops": flop_engine * len(ours["ids"]) / ours["scoring_s"],
        }
        rows.append(row)
        print(
            f"  {task} k={k}: wall {row['lm_eval_wall_s']:.1f}s vs {row['harness_wall_s']:.1f}s "
            f"(x{row['wall_ratio']:.2f}), scoring x{row['scoring_ratio']:.2f}, max diff {diff:.2g}",
            flush=True,
        )
    rate_after = matmul_gflops()
    rate = max(rate_before, rate_after)
    print(f"float32 matmul after the runs: {rate_after:.1f} GFLOP/s (using the higher, {rate:.1f})\n")

    header = (
        "| task | k | examples | requests | wall lm-eval | wall harness | wall ratio | scoring ratio "
        "| req/s lm-eval | req/s harness | tok/s lm-eval | tok/s harness | peak MB lm-eval | peak MB harness "
        "| max diff (nats) | same predictions | tokens run lm-eval / harness | FLOP ratio (the bound) "
        "| GFLOP/s lm-eval / harness | of matmul lm-eval / harness |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        print(
            f"| {r['task']} | {r['k']} | {r['examples']} | {r['requests']} | {r['lm_eval_wall_s']:.1f} s "
            f"| {r['harness_wall_s']:.1f} s | {r['wall_ratio']:.2f}x | {r['scoring_ratio']:.2f}x "
            f"| {r['lm_eval_req_per_s']:.1f} | {r['harness_req_per_s']:.1f} | {r['lm_eval_tok_per_s']:.0f} "
            f"| {r['harness_tok_per_s']:.0f} | {r['lm_eval_peak_mb']:.0f} | {r['harness_peak_mb']:.0f} "
            f"| {r['max_abs_diff_nats']:.2g} | {r['same_predictions']} "
            f"| {r['lm_eval_tokens_computed']} / {r['harness_tokens_computed']} = {r['work_ratio']:.2f} "
            f"| {r['flop_ratio']:.2f}x | {r['lm_eval_gflops']:.0f} / {r['harness_gflops']:.0f} "
            f"| {r['lm_eval_gflops'] / rate:.0%} / {r['harness_gflops'] / rate:.0%} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"matmul_gflops": rate, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
