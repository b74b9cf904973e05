"""Cost of the transfer experiment per unit, as a user runs it: `harness transfer` in its own process.

Runs every ordered pair of a few tasks (default: add-2d, sub-2d, rte and copa, two arithmetic and two text
tasks) on one model and reads the time of each unit back from the store: a source run (train on A), a B-only run
and a pair (A's state, then brief training on B), each including the scoring of the eval set. Prints them per
task and kind, the process's wall and CPU time and peak memory, and what a full matrix of N tasks would take per
model and seed (N source runs + N B-only runs + N^2 pairs).

    python benchmarks/transfer_cost.py --data ../shared/data/superglue --json benchmarks/results/transfer_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", default="add-2d,sub-2d,rte,copa")
    parser.add_argument("--method", default="bitfit")
    parser.add_argument("--source-n", type=int, default=200)
    parser.add_argument("--target-n", type=int, default=10)
    parser.add_argument("--source-steps", type=int, default=30)
    parser.add_argument("--target-steps", type=int, default=10)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--full-tasks", type=int, default=8, help="N of the projected full matrix")
    parser.add_argument("--data", default=os.environ.get("HARNESS_DATA_DIR"))
    parser.add_argument("--json", help="write the measurements here")
    parser.add_argument("--keep", help="output folder to keep (default: a temporary one)")
    args = parser.parse_args()

    out = Path(args.keep or tempfile.mkdtemp(prefix="transfer-cost-"))
    command = [sys.executable, "-m", "harness", "transfer", "--model", args.model, "--tasks", args.tasks]
    command += ["--method", args.method, "--source-n", str(args.source_n), "--target-n", str(args.target_n)]
    command += ["--source-steps", str(args.source_steps), "--target-steps", str(args.target_steps)]
    command += ["--seeds", str(args.seeds), "--limit", str(args.limit), "--out", str(out)]
    if args.data:
        command += ["--data-dir", args.data]
    env = {**os.environ, "HARNESS_NO_PROGRESS": "1"}
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_gb, cpu = usage.ru_maxrss / 1024**2, usage.ru_utime + usage.ru_stime  # CPU time: fair under shared cores

    conn = sqlite3.connect(out / "results.db")
    units = [(task, unit.split("/")[0], json.loads(info)) for task, unit, info in conn.execute(
        "SELECT task, unit, info FROM units WHERE method='transfer' ORDER BY task, unit")]  # fmt: skip
    conn.close()
    kinds = {"source": "source (train on A)", "only": "B alone", "from": "pair (A's state, then B)"}
    rows = []
    for task, variant, info in units:
        kind = variant.split(":")[0]
        rows.append({"task": task, "kind": kind, "unit": variant, "seconds": info["seconds"],
                     "train_seconds": info["train_seconds"], "eval_seconds": info["eval_seconds"],
                     "steps_run": info["steps_run"], "trained_params": info["trained_params"]})  # fmt: skip
    print(f"command: {' '.join(command)}")
    print(f"process wall: {wall:.0f} s, CPU time {cpu:.0f} s (model load included); peak memory: {peak_gb:.2f} GB\n")
    print(f"{'task':10} {'unit':24} {'seconds':>8} {'train':>7} {'score':>7} {'steps':>6}")
    for r in rows:
        print(
            f"{r['task']:10} {r['unit']:24} {r['seconds']:8.1f} {r['train_seconds']:7.1f} {r['eval_seconds']:7.1f} {r['steps_run']:6d}"
        )
    mean = {k: statistics.mean(r["seconds"] for r in rows if r["kind"] == k) for k in kinds}
    print()
    for k, label in kinds.items():
        print(f"mean {label}: {mean[k]:.1f} s")
    n = args.full_tasks
    projected = n * mean["source"] + n * mean["only"] + n * n * mean["from"]
    print(f"projected {n}-task matrix at these means: {projected / 60:.0f} min per model and seed")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": command, "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "peak_gb": round(peak_gb, 2), "units": rows,
            "mean_seconds": mean, "projected_minutes": round(projected / 60, 1), "full_tasks": n,
        }, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
