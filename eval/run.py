"""Generate one output per benchmark row (all three verdicts at once) into upstream's run-folder format.

Each benchmark gets ``RUN/<Benchmark>/generated_predictions.jsonl`` in the core's prediction format
(``guardreasoner.predictions``). Rows are appended per batch and synced, so an interrupted run loses at most the
batch in flight and resumes after the rows already written.
"""

from __future__ import annotations

import random
from pathlib import Path

from tqdm.auto import tqdm

from guardreasoner.predictions import PREDICTIONS_FILE, append_predictions, prediction_record
from guardreasoner.rows import done_lines

from .data import EvalRow, load_benchmark


def sample_rows(rows: list[EvalRow], size: int, seed: int = 0) -> list[EvalRow]:
    """A seeded random subset in file order: the same rows for every model evaluated with the same seed."""
    chosen = set(random.Random(seed).sample(range(len(rows)), min(size, len(rows))))
    return [row for position, row in enumerate(rows) if position in chosen]


def run_benchmark(guard, benchmark: str, data_dir: Path | None, out: Path, *, limit: int | None = None,
                  batch_size: int = 32, sample: int | None = None, seed: int = 0) -> int:
    """Generate the rows of one benchmark that are not yet in ``out``; returns how many were generated."""
    rows = load_benchmark(benchmark, data_dir)[:limit]
    if sample is not None:
        rows = sample_rows(rows, sample, seed)
    path = out / benchmark / PREDICTIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    done = done_lines(path, key="index")
    todo = [row for row in rows if row.index not in done]
    if not todo:
        return 0
    with tqdm(total=len(rows), initial=len(rows) - len(todo), desc=benchmark, unit="row") as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            results = guard.classify([{"prompt": row.prompt, "response": row.response} for row in chunk])
            append_predictions(path, [
                prediction_record(row.index, row.prompt, row.response, row.labels, result.output,
                                  model_input=guard.model_input(row.prompt, row.response), result=result)
                for row, result in zip(chunk, results)
            ])
            bar.update(len(chunk))
    return len(todo)
