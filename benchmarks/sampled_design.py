"""The sampled template design (harness/design.py) against the full grid it subsamples, without running a model.

reports/validity/results.db holds SmolLM2-135M's full grid on RTE val (277 examples, every template, k = 0 and 4,
demo seed 0, gold variant). For each k and metric this script computes the full grid's mean over templates, median
template and best template with 95% bootstrap intervals, then draws many seeded designs at `--share` of the cells,
keeps only those cells, and estimates the same numbers with the design's estimator (`best`: the maximum corrected
for the winner's curse; `best_plugin`: the plain maximum; both against the full grid's plain maximum). It prints,
over designs:

- `cells`: the share of the full grid's forward passes a design scores (controls and calibration are not counted:
  they would stay on every example);
- `bias`: mean over designs of (sampled estimate - full-grid value), and `sd`: their standard deviation;
- `in full CI`: how often the sampled estimate falls inside the full grid's interval;
- `covers`: how often the sampled interval covers the full grid's value;
- `width`: the mean width of the sampled intervals, and the full grid's width beside it.

Both use the same bootstrap resamples of the examples as `harness report` (so the full-grid mean and its interval
are the report's). The store is copied to a temporary folder first: SQLite would write beside a store it opens.

Run (a few seconds):
    python benchmarks/sampled_design.py > benchmarks/results/sampled_design.txt

`--sampled DIR` also reads a real `harness eval --design sampled` store (the same model, task, k, train source and
demo seed) and checks that each cell it scored is the full grid's cell (same prediction, log-probabilities within
`--tolerance`), then prints its estimates against the full grid's values and intervals. The committed output came
from (10.7 minutes on 2 busy cores, one thread):
    HARNESS_DATA_DIR=../shared/data/superglue harness eval --model smollm2-135m --tasks rte --shots 0,4 --seeds 1 \
        --train-set superglue --variants gold,calibrated,control --no-train-picks --methods prompt \
        --design sampled --template-share 0.25 --out /tmp/sd_real/run
    python benchmarks/sampled_design.py --sampled /tmp/sd_real/run > benchmarks/results/sampled_design.txt
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from harness.design import assign, estimate
from harness.metrics import Resampler, correct_vector
from harness.store import Store

REPO = Path(__file__).resolve().parent.parent
METRICS = {
    "acc": lambda records: correct_vector(records),
    "valid_mass": lambda records: np.array([r.valid_mass for r in records], dtype=np.float64),
}


def score_matrix(store: Store, model: str, task: str, shots: int) -> tuple[list[str], dict[str, np.ndarray], list]:
    """Templates, metric -> (examples, templates) matrix, and the records of the first template (for groups)."""
    units = store.records(model, task)
    keys = sorted(k for k in units if k[:2] == ("prompt", "gold") and k[3] == shots and k[4] == 0)
    templates = [k[2] for k in keys]
    ids = [r.example_id for r in units[keys[0]]]
    for k in keys:
        if [r.example_id for r in units[k]] != ids:
            raise SystemExit(f"template {k[2]} was scored on other examples: not a full grid")
    matrices = {m: np.stack([fn(units[k]) for k in keys], axis=1) for m, fn in METRICS.items()}
    return templates, matrices, units[keys[0]]


def width(ci: tuple[float, float]) -> float:
    return ci[1] - ci[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=REPO / "reports" / "validity" / "results.db")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="rte")
    parser.add_argument("--shots", default="0,4")
    parser.add_argument("--share", type=float, default=0.25)
    parser.add_argument("--designs", type=int, default=1000, help="design seeds drawn")
    parser.add_argument("--sampled", type=Path, help="the --out folder of a real --design sampled run to check")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest log-probability difference per cell")
    args = parser.parse_args()

    shots = list(map(int, args.shots.split(",")))
    with tempfile.TemporaryDirectory(prefix="sampled_design_") as tmp:
        full = _open(args.store, Path(tmp) / "full")
        grids = {k: score_matrix(full, args.model, args.task, k) for k in shots}
        report_designs(args, grids)
        if args.sampled:
            full_units = full.records(args.model, args.task)
            check_sampled_run(args, grids, full_units, _open(args.sampled / "results.db", Path(tmp) / "sampled"))


def _open(path: Path, folder: Path) -> Store:
    """A copy of a store in `folder` (SQLite writes beside a store it opens; the original stays as it is)."""
    folder.mkdir()
    shutil.copyfile(path, folder / "results.db")
    return Store(folder, create=False)


def check_sampled_run(args, grids, full_units: dict, store: Store) -> None:
    units = store.records(args.model, args.task)
    print(f"\na real --design sampled run ({args.sampled}): its cells against the full grid's, its estimates against")
    print("the full grid's values and intervals")
    for shots, (templates, _, records) in grids.items():
        full = {(t, r.example_id): r for t in templates for r in full_units[("prompt", "gold", t, shots, 0)]}
        ids = [r.example_id for r in records]
        scored = np.zeros((len(ids), len(templates)), dtype=bool)
        matrices = {m: np.zeros((len(ids), len(templates))) for m in METRICS}
        worst, disagree = 0.0, 0
        for j, t in enumerate(templates):
            mine = units.get(("prompt", "gold", t, shots, 0), [])
            for r in mine:
                i = ids.index(r.example_id)
                scored[i, j] = True
                ref = full[(t, r.example_id)]
                worst = max(worst, float(np.max(np.abs(np.array(r.logprobs) - np.array(ref.logprobs)))))
                disagree += int(np.argmax(r.logprobs) != np.argmax(ref.logprobs))
                for m, fn in METRICS.items():
                    matrices[m][i, j] = fn([r])[0]
        print(
            f"k={shots}: {int(scored.sum())} of {scored.size} cells scored ({scored.mean():.3f}); largest log-prob "
            f"difference from the grid's cell {worst:.2g}, {disagree} predictions differ"
        )
        if worst > args.tolerance:
            raise SystemExit(f"k={shots}: a cell differs from the full grid's by {worst:.3g} (--tolerance)")
        rs = Resampler([r.group for r in records])
        for metric, grid in grids[shots][1].items():
            full_est = estimate(grid, np.ones_like(grid, dtype=bool), rs)
            run_est = estimate(matrices[metric], scored, rs)
            for stat in ("mean", "median", "best"):
                f = getattr(full_est, "best_plugin" if stat == "best" else stat)
                e = getattr(run_est, stat)
                (flo, fhi), (lo, hi) = f.ci, e.ci
                print(
                    f"  {metric:<11}{stat:<7} sampled {e.value:.3f} [{lo:.3f}, {hi:.3f}]  full {f.value:.3f} "
                    f"[{flo:.3f}, {fhi:.3f}]  in full CI: {'yes' if flo <= e.value <= fhi else 'no'}, "
                    f"covers full: {'yes' if lo <= f.value <= hi else 'no'}"
                )


def report_designs(args, grids) -> None:

    print(f"sampled template design vs the full grid: {args.model} on {args.task} val, gold prompts, demo seed 0")
    print(f"share {args.share}, {args.designs} design seeds; 95% percentile bootstrap intervals over examples")
    for shots, (templates, matrices, records) in grids.items():
        rs = Resampler([r.group for r in records])
        n, t = next(iter(matrices.values())).shape
        cells = assign(n, t, args.share, seed=0).sum() / (n * t)
        print(
            f"\nk={shots}: {n} examples x {t} templates ({', '.join(templates)}); a design scores {cells:.3f} of cells"
        )
        print(
            f"{'metric':<11}{'statistic':<12}{'full':>7}{'full CI':>17}{'width':>7}"
            f"{'bias':>9}{'sd':>7}{'in full CI':>11}{'covers':>8}{'width':>7}"
        )
        for metric, scores in matrices.items():
            full = estimate(scores, np.ones_like(scores, dtype=bool), rs)
            sampled = [estimate(scores, assign(n, t, args.share, seed=s), rs) for s in range(args.designs)]
            for stat in ("mean", "median", "best", "best_plugin"):
                # the full grid's value is its plain median and maximum (what the report shows), with percentile CIs
                f = getattr(full, "best_plugin" if stat == "best" else stat)
                lo, hi = f.ci
                values = np.array([getattr(e, stat).value for e in sampled])
                cis = np.array([getattr(e, stat).ci for e in sampled])
                inside = np.mean((values >= lo) & (values <= hi))
                covers = np.mean((cis[:, 0] <= f.value) & (f.value <= cis[:, 1]))
                print(
                    f"{metric:<11}{stat:<12}{f.value:>7.3f}   [{lo:.3f}, {hi:.3f}]{hi - lo:>7.3f}"
                    f"{values.mean() - f.value:>+9.3f}{values.std():>7.3f}{inside:>11.3f}{covers:>8.3f}"
                    f"{np.mean(cis[:, 1] - cis[:, 0]):>7.3f}"
                )


if __name__ == "__main__":
    main()
