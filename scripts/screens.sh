#!/usr/bin/env bash
# Refit the embedded guard's shipped screens for the adapter shipped now (run after a new adapter ships):
# - MiniLM heads do not read the adapter, and are fit again on the same rows with the same seed, so they come out
#   the same; but auto's band for the request verdict is chosen against the reasoning guard's recall and
#   false-positive rate on validation rows, which are measured again here with the shipped adapter.
# - Guard-state heads read the adapter's hidden states: fit again (load_screen refuses them on other weights).
# Sections of a screen card written by hand (held-out scores, how it was made) are kept by training.screen, and so
# is recommended_reasoning (the mode measured best on the same held-out rows): scripts/retrain.sh measures the
# three modes after this refit and rewrites it (python -m training.screen recommend FOLDER off=... auto=... full=...).
#   bash scripts/screens.sh            # OUT=runs/screen; SCREENS="minilm guard-state"
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-runs/screen}
SHARED=${SHARED:-../shared}
SCREENS=${SCREENS:-"minilm guard-state"}
DATA="$SHARED/benchmarks/guardreasoner"
RUNS=("$SHARED/predictions/GuardReasoner-1B" "$SHARED/predictions/GuardReasoner-8B")
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
source scripts/stages.sh
mkdir -p "$OUT"

timed export bash -c "$PY -m eval.split export --data-dir '$DATA' --part fit --out '$OUT/fit.jsonl' &&
  $PY -m eval.split export --data-dir '$DATA' --part validation --out '$OUT/validation.jsonl'"
# The reasoning guard's own rates on validation rows (20 a benchmark), as the app runs it.
timed "reasoning validation" $PY -m eval run --model embedded --data-dir "$DATA" \
  --benchmarks ToxicChat WildGuardTest BeaverTails --split validation --sample 20 --max-new-tokens 512 \
  --batch-size 8 --backend ctranslate2 --compute-type float32 --out "$OUT/reasoning-validation"
fit() {  # features, training rows, validation rows, C
  timed "$1" $PY -m training.screen --model embedded --features "$1" --train "$OUT/fit.jsonl" --runs "${RUNS[@]}" \
    --validation "$OUT/validation.jsonl" --reasoning-run "$OUT/reasoning-validation" --sample "$2" \
    --validation-sample "$3" --c "$4" --cache "$OUT/features" --out "assets/screen/embedded-$1"
}
[[ " $SCREENS " == *" minilm "* ]] && fit minilm 1500 400 0.01
[[ " $SCREENS " == *" guard-state "* ]] && fit guard-state 100 60 1
echo "stage times in $OUT/times.txt"
