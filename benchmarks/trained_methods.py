"""Cost of each trained method on one SuperGLUE task: wall time and peak memory, as a user runs it.

For each method (prompt tuning, P-tuning, BitFit, probe) this runs, in its own process,
    harness eval --model smollm2-135m --tasks TASK --limit 100 --methods M --seeds 1 --train-sizes 32
(one training seed; each run trains twice, on the task and on its control task) and prints the process's wall
time (model load included), its peak resident memory, and the time of each training run from the store.
Features and models come from the user's cache as in normal use (the probe's features are computed afresh:
the run uses its own cache folder).

Run (about 13 minutes on 2 cores):
    python benchmarks/trained_methods.py --data ../shared/data/superglue
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
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="trained_bench_"))
    rows = []
    for method, extra, variant in RUNS:
        out = tmp / variant
        cmd = [sys.executable, "-m", "harness", "eval", "--model", args.model, "--tasks", args.task]
        cmd += ["--limit", str(args.limit), "--methods", method, "--seeds", "1", "--train-sizes", "32"]
        cmd += ["--out", str(out), *extra]
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
        infos = [json.loads(i) for _, i in sorted(units, key=lambda u: "-control/" in u[0])]  # task, then control
        rows.append(
            {
                "variant": variant,
                "wall_s": wall,
                "peak_mb": usage.ru_maxrss / 1024,
                "unit_s": [i.get("seconds") for i in infos],
                "train_s": [i.get("train_seconds") for i in infos],
                "steps": [i.get("steps_run") for i in infos],
                "trained_params": infos[0].get("trained_params"),
            }
        )
        print(f"  {wall:.0f} s wall, peak {usage.ru_maxrss / 1024:.0f} MB", flush=True)

    print(f"\n{args.model}, {args.task}, --limit {args.limit}, 32 train examples (24 fit + 8 held out), 1 seed")
    print(
        "| method | wall (task + control, model load included) | peak memory | per run: task, control (s) "
        "| of which training (s) | steps run | trained params |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        unit = ", ".join("–" if t is None else f"{t:.0f}" for t in r["unit_s"])
        train = ", ".join("–" if t is None else f"{t:.0f}" for t in r["train_s"])
        steps = ", ".join("–" if s is None else str(s) for s in r["steps"])
        print(
            f"| {r['variant']} | {r['wall_s']:.0f} s | {r['peak_mb'] / 1024:.2f} GB | {unit} | {train} | {steps} "
            f"| {r['trained_params']:,} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
