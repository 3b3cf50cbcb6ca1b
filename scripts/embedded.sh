#!/usr/bin/env bash
# Issue #7: train SmolLM2-135M-Instruct (the embedded offline model) into a small reasoning guard with the
# project's own stages, and compare it on held-out benchmarks it never saw. Every stage resumes when rerun.
#   bash scripts/embedded.sh            # SAMPLE=100 rows per held-out benchmark, OUT=runs/embedded
# On a CUDA machine R-SFT is a full fine-tune; on CPU it is LoRA (about 80 training tokens/s on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-runs/embedded}
SHARED=${SHARED:-../shared}
SAMPLE=${SAMPLE:-100}
DATA="$SHARED/benchmarks/guardreasoner"
HELD_OUT=(ToxicChat OpenAIModeration WildGuardTest SafeRLHF BeaverTails)
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296
if $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  TRAIN=(--bf16 true --per_device_train_batch_size 16)
  RSFT=(--learning_rate 5e-5 --num_train_epochs 3)
else
  TRAIN=(--use_cpu true --bf16 false --per_device_train_batch_size 4 --gradient_checkpointing false)
  RSFT=(--use_lora true --learning_rate 2e-4 --num_train_epochs 1)
fi
COMMON=(--max_length 1024 --logging_steps 10 --save_steps 50 --save_total_limit 2 --report_to none --seed 0)
timed() { local name=$1; shift; local began=$SECONDS; "$@"; echo "$name: $((SECONDS - began)) s" | tee -a "$OUT/times.txt"; }
mkdir -p "$OUT"

# 1. Training rows: released outputs that reach the gold label (the held-out benchmarks are not among them).
timed data $PY -m training.from_predictions --runs "$SHARED/predictions/GuardReasoner-1B" \
  "$SHARED/predictions/GuardReasoner-8B" --output "$OUT/train.jsonl"
# 2. R-SFT from the embedded weights, raw prompts (the released checkpoints' format).
timed rsft $PY -m training.rsft --model_name_or_path smollm2 --dataset "$OUT/train.jsonl" \
  --output_dir "$OUT/rsft" "${TRAIN[@]}" "${RSFT[@]}" "${COMMON[@]}"
# 3. Hard samples mined from the training rows by the R-SFT model (k=4, temperature 0.7, top_p 0.95).
timed mine $PY -m training.mine --models "$OUT/rsft" --dataset "$OUT/train.jsonl" --output "$OUT/pairs.jsonl" \
  --max_new_tokens 1024
# 4. HS-DPO on the weighted pairs, reference = the R-SFT model.
timed hs_dpo $PY -m training.hs_dpo --model_name_or_path "$OUT/rsft" --dataset_path "$OUT/pairs.jsonl" \
  --output_dir "$OUT/hs-dpo" "${TRAIN[@]}" "${COMMON[@]}"
# 5. The same seeded rows of each held-out benchmark for every model, scored strictly.
for model in zero-shot:smollm2 rsft:"$OUT/rsft" hs-dpo:"$OUT/hs-dpo"; do
  name=${model%%:*}
  timed "eval $name" $PY -m eval run --model "${model#*:}" --mode raw --data-dir "$DATA" \
    --benchmarks "${HELD_OUT[@]}" --sample "$SAMPLE" --max-new-tokens 1024 --batch-size 16 --out "$OUT/eval/$name"
done
timed "eval minilm" $PY -m eval.baseline --train "$OUT/train.jsonl" --data-dir "$DATA" \
  --benchmarks "${HELD_OUT[@]}" --sample "$SAMPLE" --out "$OUT/eval/minilm"
for name in zero-shot rsft hs-dpo minilm; do
  $PY -m eval score "$OUT/eval/$name" --mode strict --data-dir "$DATA" --name "$name" \
    --json "$OUT/eval/$name.json" --markdown "$OUT/eval/$name.md" > /dev/null
done
$PY -m eval compare zero-shot="$OUT/eval/zero-shot.json" rsft="$OUT/eval/rsft.json" hs-dpo="$OUT/eval/hs-dpo.json" \
  minilm="$OUT/eval/minilm.json" --markdown "$OUT/eval/comparison.md"
echo "comparison in $OUT/eval/comparison.md; reports in $OUT/eval/*.json; stage times in $OUT/times.txt"
