#!/usr/bin/env bash
# The same seeded held-out rows through each engine (and through the cascade), one after another, each an
# ordinary resumable `eval run` folder; then eval/engine_agreement.py prints verdict agreement against
# transformers float32 and each run's strict F1. Wall times go to $OUT/times.txt.
#   bash benchmarks/engine_quality.sh     # SAMPLE=40 rows of each held-out benchmark (200 rows), OUT=runs/quality
#   RUNS="transformers-float32" bash benchmarks/engine_quality.sh   # only these runs (e.g. one per core)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
OUT=${OUT:-runs/quality}
SAMPLE=${SAMPLE:-40}
MAX_NEW=${MAX_NEW:-512}
RUNS=${RUNS:-"ctranslate2-float32 ctranslate2-int8 off auto transformers-float32"}
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
run() {  # name, then eval-run options
  local name=$1; shift
  [[ " $RUNS " == *" $name "* ]] || return 0
  local began=$SECONDS
  .venv/bin/python -m eval run --model embedded --data-dir "$SHARED/benchmarks/guardreasoner" \
    --benchmarks ToxicChat WildGuardTest BeaverTails OpenAIModeration SafeRLHF --split test \
    --sample "$SAMPLE" --max-new-tokens "$MAX_NEW" --batch-size 8 --out "$OUT/$name" "$@"
  echo "$name $((SECONDS - began)) s" >> "$OUT/times.txt"
}
run ctranslate2-float32 --backend ctranslate2 --compute-type float32
run ctranslate2-int8 --backend ctranslate2 --compute-type int8
run off --backend ctranslate2 --compute-type float32 --reasoning off
run auto --backend ctranslate2 --compute-type float32 --reasoning auto
run transformers-float32 --backend transformers
[[ " $RUNS " == *" transformers-float32 "* && " $RUNS " == *" auto "* ]] || exit 0
.venv/bin/python -m eval.engine_agreement --times "$OUT/times.txt" --reference transformers-float32="$OUT/transformers-float32" \
  ctranslate2-float32="$OUT/ctranslate2-float32" ctranslate2-int8="$OUT/ctranslate2-int8" off="$OUT/off" auto="$OUT/auto" \
  | tee "$OUT/agreement.md"
