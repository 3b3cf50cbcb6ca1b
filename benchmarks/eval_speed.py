"""Speed of the evaluation. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.eval_speed --data-dir ../shared/benchmarks/guardreasoner \
        --predictions ../shared/predictions/GuardReasoner-8B [--model embedded] [--rows 16]

1. ``eval run``: rows/s with batching against one row at a time, same model and rows (SimpleSafetyTests).
2. Scoring: seconds to score all 13 cells at full size, paper and strict. The run is assembled from real
   GuardReasoner outputs reused over every benchmark's rows, so the parser sees real text.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def assemble_full_run(data_dir: Path, predictions: Path, out: Path) -> int:
    from eval.data import load_benchmark
    from eval.registry import BENCHMARKS
    from guardreasoner.predictions import PREDICTIONS_FILE, Prediction, append_predictions, read_run

    outputs = [row.predict for row in read_run(predictions)]
    cycle = itertools.cycle(outputs)
    total = 0
    for benchmark in BENCHMARKS:
        rows = load_benchmark(benchmark, data_dir)
        append_predictions(out / benchmark / PREDICTIONS_FILE, [
            Prediction(row.index, row.prompt, row.response, next(cycle), row.labels) for row in rows])
        total += len(rows)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--predictions", type=Path, required=True)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from eval.run import run_benchmark
    from eval.score import score_run
    from guardreasoner import load_guard

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        total = assemble_full_run(args.data_dir, args.predictions, scratch / "full")
        for mode in ("paper", "strict"):
            began = time.perf_counter()
            report = score_run(scratch / "full", mode)
            seconds = time.perf_counter() - began
            print(f"score {mode:6}: {seconds:6.2f} s for {len(report['cells'])} cells, {total} rows")

        guard = load_guard(args.model, "transformers", max_new_tokens=args.new_tokens, fail_closed=False,
                           batch_size=args.batch_size)
        rates = {}
        for label, batch in (("batched", args.batch_size), ("one-by-one", 1)):
            began = time.perf_counter()
            made = run_benchmark(guard, "SimpleSafetyTests", args.data_dir, scratch / label, limit=args.rows,
                                 batch_size=batch)
            rates[label] = made / (time.perf_counter() - began)
            print(f"eval run {label:10}: {rates[label]:6.2f} rows/s ({made} rows, {args.new_tokens} new tokens max)")
        print(f"batched / one-by-one: {rates['batched'] / rates['one-by-one']:.2f}x  ({guard.model_name})")


if __name__ == "__main__":
    main()
