#!/usr/bin/env bash
# Issue #7: train SmolLM2-135M-Instruct (the embedded offline model) into a small reasoning guard with the
# project's own stages, and compare it on held-out benchmarks it never saw. Every stage resumes when rerun, so an
# interrupted run is continued by running the same command again.
#   bash scripts/embedded.sh            # SAMPLE=100 rows per held-out benchmark, OUT=runs/embedded
# On a CUDA machine R-SFT is a full fine-tune on every training row. On CPU (2 cores: about 90 training tokens/s
# and 116 generated tokens/s) it is LoRA on a label-balanced subset that fits a few hours (training.subset), hard
# samples are mined from MINE_ROWS of those rows, and generation stops at MAX_NEW tokens.
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
  HS_DPO=()  # the paper's lr 5e-6, 2 epochs
  SUBSET=(--per_cell 100000 --max_tokens 2048)
  MAX_NEW=${MAX_NEW:-1024} MINE_ROWS=${MINE_ROWS:-100000} MINE=()
else
  TRAIN=(--use_cpu true --bf16 false --per_device_train_batch_size 4 --gradient_checkpointing false)
  RSFT=(--use_peft true --learning_rate 3e-4 --warmup_steps 5 --num_train_epochs 1)
  # LoRA keeps training the R-SFT adapter: 10x the full fine-tune's lr, as for R-SFT. One pair at a time (4 pairs,
  # 8 sequences of up to 1024 tokens with their 49K-token logits, passed 20 GB), 4 accumulated; one epoch, as for
  # R-SFT; a few dozen pairs make a dozen steps, so each is logged.
  HS_DPO=(--learning_rate 5e-5 --per_device_train_batch_size 1 --gradient_accumulation_steps 4 --num_train_epochs 1
          --logging_steps 1)
  SUBSET=(--per_cell 30 --max_tokens 768 --max_output_tokens 320)
  MAX_NEW=${MAX_NEW:-384} MINE_ROWS=${MINE_ROWS:-64}
  MINE=(--chunk_rows 4)  # 16 samples, one batch, appended to the samples file at a time: an interruption loses little
fi
COMMON=(--max_length 1024 --logging_steps 10 --save_steps 20 --save_total_limit 2 --report_to none --seed 0)
source scripts/stages.sh  # timed: skips a stage done in an earlier run
mkdir -p "$OUT"

# 1. Training rows: released outputs that reach the gold label (the held-out benchmarks are not among them),
#    plus the shared GuardReasonerTrain rows; then the subset this machine can afford.
timed data $PY -m training.from_predictions --runs "$SHARED/predictions/GuardReasoner-1B" \
  "$SHARED/predictions/GuardReasoner-8B" --extra "$SHARED/traces/guardreasonertrain_sample.json" \
  --output "$OUT/train-all.jsonl"
timed subset $PY -m training.subset --dataset_name "$OUT/train-all.jsonl" --output "$OUT/train.jsonl" "${SUBSET[@]}"
# 2. R-SFT from the embedded weights, raw prompts (the released checkpoints' format).
timed rsft $PY -m training.rsft --model_name_or_path smollm2 --dataset_name "$OUT/train.jsonl" \
  --output_dir "$OUT/rsft" "${TRAIN[@]}" "${RSFT[@]}" "${COMMON[@]}"
# 3. The same seeded rows of each held-out benchmark for every model; the non-reasoning baseline on the same rows.
evaluate() {
  timed "eval $1" $PY -m eval run --model "$2" --prompt-format raw --data-dir "$DATA" --benchmarks "${HELD_OUT[@]}" \
    --sample "$SAMPLE" --max-new-tokens "$MAX_NEW" --batch-size 8 --out "$OUT/eval/$1"
}
evaluate rsft "$OUT/rsft"
# The baseline is a MiniLM screen fit on the same training rows, evaluated alone (--reasoning off: nothing generated).
timed "screen minilm" $PY -m training.screen --model smollm2 --features minilm --train "$OUT/train.jsonl" \
  --out "$OUT/minilm-screen"
timed "eval minilm" $PY -m eval run --model smollm2 --reasoning off --screen "$OUT/minilm-screen" --data-dir "$DATA" \
  --benchmarks "${HELD_OUT[@]}" --sample "$SAMPLE" --out "$OUT/eval/minilm"
# 4. Hard samples mined from training rows by the R-SFT model (k=4, temperature 0.7, top_p 0.95), then HS-DPO on
#    the weighted pairs with the R-SFT model as reference.
timed mine $PY -m training.mine --models "$OUT/rsft" --dataset_name "$OUT/train.jsonl" --output "$OUT/pairs.jsonl" \
  --max_new_tokens "$MAX_NEW" --max_rows "$MINE_ROWS" "${MINE[@]}"
# glibc's default thresholds here: the large-allocation settings above suit generation but keep DPO's freed logits.
timed hs_dpo env -u MALLOC_MMAP_THRESHOLD_ -u MALLOC_TRIM_THRESHOLD_ $PY -m training.hs_dpo \
  --model_name_or_path "$OUT/rsft" --dataset_name "$OUT/pairs.jsonl" --output_dir "$OUT/hs-dpo" \
  "${TRAIN[@]}" "${COMMON[@]}" "${HS_DPO[@]}"
evaluate hs-dpo "$OUT/hs-dpo"
# The untrained base on the same prompt: it rarely reaches an Answers block, so it spends MAX_NEW tokens a row.
evaluate zero-shot smollm2
# 5. Strict scores and one table.
for name in zero-shot rsft hs-dpo minilm; do
  $PY -m eval score "$OUT/eval/$name" --scoring strict --data-dir "$DATA" --name "$name" \
    --json "$OUT/eval/$name.json" --markdown "$OUT/eval/$name.md" > /dev/null
done
$PY -m eval compare zero-shot="$OUT/eval/zero-shot.json" rsft="$OUT/eval/rsft.json" hs-dpo="$OUT/eval/hs-dpo.json" \
  minilm="$OUT/eval/minilm.json" --markdown "$OUT/eval/comparison.md"
# 6. The better of the two trained adapters becomes the embedded guard, its card filled from these files.
$PY -m training.ship --candidates rsft="$OUT/rsft" hs-dpo="$OUT/hs-dpo" \
  --reports "$OUT/eval/rsft.json" "$OUT/eval/hs-dpo.json" --comparison "$OUT/eval/comparison.md" \
  --times "$OUT/times.txt" --pairs "$OUT/pairs.jsonl" --dpo_run "$OUT/hs-dpo"
echo "comparison in $OUT/eval/comparison.md; reports in $OUT/eval/*.json; stage times in $OUT/times.txt"
