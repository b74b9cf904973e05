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
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sampled_design_") as tmp:
        shutil.copyfile(args.store, Path(tmp) / "results.db")
        store = Store(tmp, create=False)
        grids = {k: score_matrix(store, args.model, args.task, k) for k in map(int, args.shots.split(","))}
        store.close()

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
