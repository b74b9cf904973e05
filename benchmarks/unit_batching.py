"""Small prompt units scored together vs one at a time: units/s of `harness eval`, each way in its own process.

Runs, three times, in its own process each,
    harness eval --model smollm2-135m --tasks cb,copa --methods prompt --shots 0,4 --seeds 1
over the full val sets (CB 56, COPA 100 examples): with HARNESS_GROUP_UNITS=0 (every unit its own engine call, as
before units were grouped), as a user runs it (=1: consecutive small units of a task in one engine call, shared
prefixes run once, scores bit for bit the same; harness/methods/prompt.py run_group) and with =pack (their rows also
share batches). Prints, side by side, the process's wall time (model load and report included), the time of the
unit loop alone (timed inside the process), units/s over that loop, and how far each store's scores lie from the
one-at-a-time store's (every per-example log-likelihood; predictions must agree).

Run (about 40 minutes on this workplace's busy 2 cores, three ways together; --templates, --ways pick fewer):
    python benchmarks/unit_batching.py --data ../shared/data/superglue
Output: benchmarks/results/unit_batching.txt and .json (--results to write elsewhere).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

# The child: `harness eval`, with the unit loop (evaluate._run_model, after the model is loaded and before the
# report is rendered) timed and its seconds written to $UNIT_LOOP_SECONDS.
CHILD = """
import os, sys, time
import harness.evaluate as evaluate
run_model = evaluate._run_model
def timed(*args, **kwargs):
    started = time.perf_counter()
    run_model(*args, **kwargs)
    with open(os.environ["UNIT_LOOP_SECONDS"], "a") as f:
        f.write(f"{time.perf_counter() - started}\\n")
evaluate._run_model = timed
from harness.cli import main
sys.argv[0] = "harness"
main()
"""

WAYS = {"0": "one unit at a time", "1": "grouped", "pack": "grouped, packed"}


def run(command: list[str], group: str, out: Path) -> dict:
    """One `harness eval` process: its wall and CPU time and the unit loop's seconds."""
    seconds_file = out.parent / f"{out.name}.seconds"
    env = {**os.environ, "HARNESS_NO_PROGRESS": "1", "HARNESS_GROUP_UNITS": group}
    env["UNIT_LOOP_SECONDS"] = str(seconds_file)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "w") as log:
        subprocess.run([sys.executable, "-c", CHILD, *command, "--out", str(out)], env=env, check=True, stdout=log,
                       stderr=subprocess.STDOUT)  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with sqlite3.connect(out / "results.db") as db:
        units = db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
    loop = float(seconds_file.read_text().split()[0])
    return {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "loop_seconds": round(loop, 1),
            "units": units, "units_per_second": round(units / loop, 4)}  # fmt: skip


def compare(a: Path, b: Path) -> dict:
    """How far two stores' per-example scores lie apart: largest |difference| of any choice's log-likelihood, and
    the examples whose prediction (the highest-scoring choice) differs."""
    rows = {}
    for path in (a, b):
        with sqlite3.connect(path / "results.db") as db:
            query = "SELECT task, variant, template, shots, seed, example_id, payload FROM records"
            rows[path] = {tuple(r[:6]): json.loads(r[6])["logprobs"] for r in db.execute(query)}
    assert rows[a].keys() == rows[b].keys(), "the two runs stored different records"
    worst, differ = 0.0, 0
    for key, x in rows[a].items():
        y = rows[b][key]
        worst = max(worst, float(np.abs(np.subtract(x, y)).max()))
        differ += int(np.argmax(x) != np.argmax(y))
    return {"records": len(rows[a]), "max_abs_logprob_diff": worst, "predictions_differing": differ}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tasks", default="cb,copa")
    parser.add_argument("--shots", default="0,4")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--templates", help="a subset of templates (--templates of harness eval)")
    parser.add_argument("--limit", help="eval examples per task (default: the full val set)")
    parser.add_argument("--data", default=os.environ.get("HARNESS_DATA_DIR"))
    parser.add_argument("--note", default="", help="a line saying under what load the numbers were taken")
    parser.add_argument("--results", default="benchmarks/results/unit_batching", help="writes .txt and .json")
    parser.add_argument("--ways", default="0,1,pack", help="HARNESS_GROUP_UNITS values to run (0 first)")
    parser.add_argument("--keep", help="output folder to keep (default: a temporary one)")
    args = parser.parse_args()

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="unit-batching-"))
    tmp.mkdir(parents=True, exist_ok=True)
    command = ["eval", "--model", args.model, "--tasks", args.tasks, "--methods", "prompt", "--shots", args.shots]
    command += ["--seeds", args.seeds]
    command += ["--templates", args.templates] if args.templates else []
    command += ["--limit", args.limit] if args.limit else []
    command += ["--data-dir", args.data] if args.data else []
    ways = [w.strip() for w in args.ways.split(",")]
    if ways[0] != "0" or any(w not in WAYS for w in ways):
        parser.error(f"--ways: values of {', '.join(WAYS)}, 0 first (the reference)")
    results, agreement = {}, {}
    for group in ways:
        print(f"{WAYS[group]}: harness {' '.join(command)}", flush=True)
        results[WAYS[group]] = run(command, group, tmp / f"group{group}")
        if group != "0":
            agreement[WAYS[group]] = compare(tmp / "group0", tmp / f"group{group}")

    text = io.StringIO()
    with redirect_stdout(text):
        print(f"command: harness {' '.join(command)}")
        if args.note:
            print(f"note: {args.note}")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
        print()
        print(f"{'':22} {'units':>6} {'loop s':>8} {'units/s':>8} {'wall s':>8} {'CPU s':>8}")
        for label, r in results.items():
            print(f"{label:22} {r['units']:6d} {r['loop_seconds']:8.1f} {r['units_per_second']:8.3f} "
                  f"{r['wall_seconds']:8.1f} {r['cpu_seconds']:8.1f}")  # fmt: skip
        alone = results[WAYS["0"]]
        print()
        for label, a in agreement.items():
            print(f"{label}: {results[label]['units_per_second'] / alone['units_per_second']:.2f}x units/s; "
                  f"{a['records']} records, largest |difference| of a choice's log-likelihood from one at a time "
                  f"{a['max_abs_logprob_diff']:.2e} nats, {a['predictions_differing']} predictions differ")  # fmt: skip
    print(text.getvalue(), end="")
    results_path = Path(args.results)
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.with_suffix(".txt").write_text(text.getvalue())
    results_path.with_suffix(".json").write_text(json.dumps({
        "command": ["harness", *command], "note": args.note, "load_average": os.getloadavg(), "runs": results,
        "agreement": agreement,
    }, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
