#!/bin/bash
# Operating points' Platt maps, measured on rows they were not fitted on (calibrate --holdout 0.5):
# 1. the shipped encoder screen (reasoning off) on the two benchmarks it was never trained on, seeds 0-2;
# 2. the embedded reasoning model's verdict-token probabilities (reasoning full) on 120 ToxicChat test-half rows
#    (40 harmful, 80 unharmful, seeded), where it is slow: minutes a batch on 2 CPU cores.
# Each calibrate prints its figures; docs/operating-points.md has the tables. OUT (default runs/calib) keeps them.
set -ex
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
D=${DATA_DIR:-../shared/benchmarks/guardreasoner}
P=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/calib}
mkdir -p "$OUT"
[ -f "$OUT/moderation.csv" ] || $P -m eval.labelled_csv OpenAIModeration --data-dir "$D" --out "$OUT/moderation.csv"
[ -f "$OUT/saferlhf.csv" ] || $P -m eval.labelled_csv SafeRLHF --data-dir "$D" --out "$OUT/saferlhf.csv"
for data in moderation saferlhf; do
  for seed in 0 1 2; do
    /usr/bin/time -f "%e s wall" $P -m guardreasoner calibrate --model embedded --reasoning off \
      --data "$OUT/$data.csv" --target-fpr 0.05 --holdout 0.5 --seed $seed --out "$OUT/$data-fpr05-s$seed" \
      --batch-size 32
  done
done

if [ ! -f "$OUT/toxicchat-test-120.csv" ]; then
  $P -m eval.split export --data-dir "$D" --part test --benchmarks ToxicChat --out "$OUT/toxicchat-test.jsonl"
  $P - "$OUT" <<'EOF'
import csv, random, sys
from training.screen import rows_from_train_file

out = sys.argv[1]
rows = rows_from_train_file(f"{out}/toxicchat-test.jsonl")
by_label = {label: [r for r in rows if r.labels.get("prompt_harmfulness") == label] for label in ("harmful", "unharmful")}
rng = random.Random(0)
chosen = rng.sample(by_label["harmful"], 40) + rng.sample(by_label["unharmful"], 80)
rng.shuffle(chosen)
with open(f"{out}/toxicchat-test-120.csv", "w", newline="", encoding="utf-8") as handle:
    writer = csv.DictWriter(handle, ["prompt", "prompt_harmfulness"])
    writer.writeheader()
    writer.writerows({"prompt": r.prompt, "prompt_harmfulness": r.labels["prompt_harmfulness"]} for r in chosen)
EOF
fi
/usr/bin/time -f "%e s wall" $P -m guardreasoner calibrate --model embedded --reasoning full --backend ctranslate2 \
  --compute-type float32 --max-new-tokens 512 --data "$OUT/toxicchat-test-120.csv" --target-recall 0.9 \
  --holdout 0.5 --seed 0 --out "$OUT/toxicchat-full-recall90" --batch-size 8
