#!/usr/bin/env bash
# Issue #16, HS-DPO on the retrained guard: a larger beta, pairs mined from training-half rows the synthesis never
# used, and more steps than the first try (beta 0.01, 50 pairs, 13 steps: its preference loss never left ln 2).
# Runs after scripts/retrain.sh (it reads that run's adapter, seeds and 40-row evaluation); every stage resumes.
#   bash scripts/retrain_dpo.sh      # OUT=runs/retrain, DPO=$OUT/dpo, MINE_PER_CELL=10, BETA=0.1, EPOCHS=1
#   PAIRS=assets/embedded-guard/reports/retrain/dpo/hs-dpo-pairs.jsonl bash scripts/retrain_dpo.sh
#                                    # train on the committed pairs instead of mining (an hour on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${OUT:-runs/retrain}
DPO=${DPO:-$OUT/dpo}
SHARED=${SHARED:-../shared}
SAMPLE=${SAMPLE:-40}
MINE_PER_CELL=${MINE_PER_CELL:-10}  # rows a benchmark and gold answers give the miner
BETA=${BETA:-0.1}                   # TRL's default; the paper's 0.01 left the preference term flat under LoRA
EPOCHS=${EPOCHS:-1}                 # the paper runs 2; two here (38 steps, 73 s each) outlast a session
LR=${LR:-1e-4}
source scripts/stages.sh
BF16=${BF16:-$(native_bf16)}        # emulated bf16 on an AVX2-only CPU: no step ended in 9 min
TRAIN_THREADS=${TRAIN_THREADS:-1}   # 2 with BF16=false on an AVX2 machine: 85-100 s a step
DATA="$SHARED/benchmarks/guardreasoner"
HELD_OUT=(ToxicChat WildGuardTest BeaverTails OpenAIModeration SafeRLHF)
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$DPO"
OUT_RUN=$OUT; OUT=$DPO  # times.txt of this experiment lives in $DPO

# 1. Rows to mine: the committed training halves with gold Answers, less every seed the synthesis read (kept or
#    rejected), a few per benchmark and gold answers, inputs cut as the guard cuts them to 640 tokens (so a pair,
#    with its 384-token samples, fits the 1024 tokens DPO trains on).
mine_rows() {
  $PY -m eval.split export --data-dir "$DATA" --part train --format train --out "$DPO/train-gold.jsonl"
  $PY -m training.subset --dataset_name "$DPO/train-gold.jsonl" --output "$DPO/mine-rows.jsonl" \
    --per_cell "$MINE_PER_CELL" --max_tokens 640 --cut_long_inputs true --seed 1 \
    --exclude "$OUT_RUN/hint.jsonl" "$OUT_RUN/hint.jsonl.rejected.jsonl"
}
if [[ -n ${PAIRS:-} ]]; then
  cp "$PAIRS" "$DPO/pairs.jsonl"
else
  timed rows mine_rows
  # 2. Four samples a row from the retrained adapter as it is evaluated (CTranslate2 float32, the embedded default).
  timed mine $PY -m training.mine --models "$OUT_RUN/rsft" --dataset_name "$DPO/mine-rows.jsonl" \
    --output "$DPO/pairs.jsonl" --backend ctranslate2 --max_new_tokens 384 --max_input_tokens 640 \
    --chunk_rows 2 --batch_size 8
fi
# 3. HS-DPO on the same LoRA adapter against the retrained model as reference (bfloat16 autocast, as R-SFT,
#    where the CPU has it).
timed hs_dpo env OMP_NUM_THREADS="$TRAIN_THREADS" $PY -m training.hs_dpo --model_name_or_path "$OUT_RUN/rsft" \
  --dataset_name "$DPO/pairs.jsonl" --output_dir "$DPO/hs-dpo" --use_cpu true --bf16 "$BF16" \
  --gradient_checkpointing false --per_device_train_batch_size 1 --gradient_accumulation_steps 4 \
  --learning_rate "$LR" --beta "$BETA" --num_train_epochs "$EPOCHS" --max_length 1024 --logging_steps 1 \
  --save_steps 10 --save_total_limit 2 --report_to none --seed 0
# 4. The same seeded rows as retrain.sh's table, scored strictly beside the retrained adapter. The 200-row column:
#    SAMPLE=200 EVAL=runs/retrain/eval200 BASELINE=runs/retrain/eval200/retrained.json REUSE=runs/retrain/dpo/eval
EVAL=${EVAL:-$DPO/eval}
BASELINE=${BASELINE:-$OUT_RUN/eval/retrained.json}
timed "$(basename "$EVAL") hs-dpo" $PY -m eval run --model "$DPO/hs-dpo" --prompt-format raw --data-dir "$DATA" \
  --benchmarks "${HELD_OUT[@]}" --split test --sample "$SAMPLE" --max-new-tokens 512 --batch-size 8 \
  --backend ctranslate2 --compute-type float32 --out "$EVAL/hs-dpo" ${REUSE:+--reuse "$REUSE/hs-dpo"}
$PY -m eval score "$EVAL/hs-dpo" --scoring strict --data-dir "$DATA" --name hs-dpo \
  --json "$EVAL/hs-dpo.json" --markdown "$EVAL/hs-dpo.md" > /dev/null
$PY -m eval compare retrained="$BASELINE" hs-dpo="$EVAL/hs-dpo.json" --markdown "$EVAL/comparison-hs-dpo.md"
echo "comparison in $EVAL/comparison-hs-dpo.md; stage times in $DPO/times.txt"
