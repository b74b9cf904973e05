"""Cost of each trained method on one SuperGLUE task: wall time, peak memory and FLOP rate, as a user runs it.

For each method (prompt tuning, P-tuning, BitFit, probe) this runs, in its own process,
    harness eval --model smollm2-135m --tasks TASK --limit 100 --methods M --seeds 1 --train-sizes 32
(one training seed; each run trains twice, on the task and on its control task) and prints the process's wall
time (model load included), its peak resident memory, and the time of each training run from the store.
Features and models come from the user's cache as in normal use (the probe's features are computed afresh:
the run uses its own cache folder).

FLOP rates come from the counters each unit stores (`work` in its info: per phase, the tokens run through the
decoder, soft-prompt tokens included, the causal (query, key) pairs among them, the positions the output head
was applied at, and the phase's seconds), counted as the passes ran. Per pass, as in flop_bound.py: 2 x
(non-embedding parameters) FLOPs per token in the linear layers, 4 x (heads x head width) per pair per layer in
attention, 2 x vocab x width per head position. A training step (phase `train`) is its forward F plus a
backward through frozen weights: the activation gradients of every linear layer and of the head (1x their
forward: one matmul each) and of attention (2x: both of its products have two activation operands), and the
weight gradients of the trained parameters only: BitFit's biases are sums over positions, the soft prompt's
gradient is the input's activation gradient, P-tuning's MLP runs on 20 tokens, all under 0.1% and not counted.
So train = 2 x linear + 3 x attention + 2 x head FLOPs (about 2x F, where fully trained weights would give 3x).
Held-out checks and the fit-loss pass (`checks`) and the eval records (`eval`) are forward passes. The probe's
`train` and `eval` phases are its feature passes (forward, all layers' states kept) over the train sample and
the eval examples; its control unit reuses them (no pass, no rate). Rates count real tokens, so padding computed
shows as a lower rate. The peak is the best-of float32 2048 x 2048 matmul rate of this torch build, measured
before and after the runs as engine_vs_lm_eval.py measures it (the higher is used); on a CPU the model's smaller
matmuls can beat it (a 256-row product fits the caches), so an eval pass can read above 100%.

Run (about 13 minutes on 2 cores):
    python benchmarks/trained_methods.py --data ../shared/data/superglue
A quick check on a small model folder: --model PATH --limit 8 --train-size 8 --set ptune.max_steps=2 ...
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = [
    ("ptune", ["--set", "ptune.variants=prompt-tuning"], "prompt-tuning"),
    ("ptune", ["--set", "ptune.variants=p-tuning"], "p-tuning"),
    ("bitfit", [], "bitfit"),
    ("probe", [], "probe"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/superglue"))
    parser.add_argument("--task", default="rte")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--train-size", type=int, default=32)
    parser.add_argument("--set", action="append", default=[], help="a preset override passed to harness eval")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch
    from engine_vs_lm_eval import matmul_gflops
    from flop_bound import shape

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; model {args.model}")
    rate_before = matmul_gflops()
    print(f"float32 matmul (2048x2048): {rate_before:.1f} GFLOP/s", flush=True)
    flops = shape(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="trained_bench_"))
    rows = []
    for method, extra, variant in RUNS:
        out = tmp / variant
        cmd = [sys.executable, "-m", "harness", "eval", "--model", args.model, "--tasks", args.task]
        cmd += ["--limit", str(args.limit), "--methods", method, "--seeds", "1", "--train-sizes", str(args.train_size)]
        cmd += ["--out", str(out), *extra, *(a for o in args.set for a in ("--set", o))]
        env = {
            **os.environ,
            "HARNESS_DATA_DIR": str(args.data),
            "HARNESS_NO_PROGRESS": "1",
            # the model comes from the user's cache; features get a fresh folder so the probe computes them
            "HARNESS_FEATURES_DIR": str(tmp / "features"),
        }
        print(f"{variant}: {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        with open(tmp / f"{variant}.log", "w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"{variant} failed:\n{(tmp / f'{variant}.log').read_text()[-3000:]}")
        with sqlite3.connect(out / "results.db") as conn:
            units = conn.execute("SELECT unit, info FROM units").fetchall()
        # task, then control (then the probe's random-init baseline)
        infos = [json.loads(i) for _, i in sorted(units, key=lambda u: ("-random-init/" in u[0], "-control/" in u[0]))]
        rows.append(
            {
                "variant": variant,
                "wall_s": wall,
                "peak_mb": usage.ru_maxrss / 1024,
                "unit_s": [i.get("seconds") for i in infos],
                "train_s": [i.get("train_seconds") for i in infos],
                "steps": [i.get("steps_run") for i in infos],
                "trained_params": infos[0].get("trained_params"),
                "work": [i.get("work", {}) for i in infos],
                "gflop": [
                    {phase: phase_flops(w, phase, flops) / 1e9 for phase, w in i.get("work", {}).items()} for i in infos
                ],
            }
        )
        print(f"  {wall:.0f} s wall, peak {usage.ru_maxrss / 1024:.0f} MB", flush=True)

    rate_after = matmul_gflops()
    peak = max(rate_before, rate_after)
    print(f"float32 matmul after the runs: {rate_after:.1f} GFLOP/s (using the higher, {peak:.1f})\n")
    n_fit = args.train_size - round(args.train_size * 0.25)
    print(
        f"{args.model}, {args.task}, --limit {args.limit}, {args.train_size} train examples ({n_fit} fit + "
        f"{args.train_size - n_fit} held out), 1 seed; per run: task, control (the probe: and random-init)"
    )
    print(
        "| method | wall (task + control, model load included) | peak memory | per run (s) | of which training (s) "
        "| steps run | trained params | training tokens | training GFLOP/s | of matmul peak | eval GFLOP/s "
        "| of matmul peak |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        train_rates = [rate(f, w, ("train",)) for f, w in zip(r["gflop"], r["work"])]
        eval_rates = [rate(f, w, ("checks", "eval")) for f, w in zip(r["gflop"], r["work"])]
        cells = [
            r["variant"],
            f"{r['wall_s']:.0f} s",
            f"{r['peak_mb'] / 1024:.2f} GB",
            both(r["unit_s"], "{:.0f}"),
            both(r["train_s"], "{:.0f}"),
            both(r["steps"], "{}"),
            f"{r['trained_params']:,}",
            both([w.get("train", {}).get("tokens") for w in r["work"]], "{:,}"),
            both(train_rates, "{:.1f}"),
            both([x and x / peak for x in train_rates], "{:.0%}"),
            both(eval_rates, "{:.1f}"),
            both([x and x / peak for x in eval_rates], "{:.0%}"),
        ]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps({"matmul_gflops": peak, "rows": rows}, indent=1))


def phase_flops(work: dict, phase: str, flops: dict) -> float:
    """FLOPs of one phase from its counters (the docstring's count): a train step's backward through frozen weights
    adds one more of each linear and head matmul, and two of each attention product."""
    linear, pairs, head = work["tokens"] * flops["linear"], work["pairs"] * flops["pair"], work["head"] * flops["head"]
    if phase == "train":
        return 2 * linear + 3 * pairs + 2 * head
    return linear + pairs + head


def rate(gflop: dict, work: dict, phases: tuple[str, ...]) -> float | None:
    """GFLOP/s over `phases` together; None where none of them ran a pass (a probe control reuses the features)."""
    seconds = sum(work[p]["seconds"] for p in phases if p in work)
    return sum(gflop[p] for p in phases if p in gflop) / seconds if seconds else None


def both(values: list, fmt: str) -> str:
    return ", ".join("–" if v is None else fmt.format(v) for v in values)


if __name__ == "__main__":
    main()
