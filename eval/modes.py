"""Screens side by side on the same held-out rows: ``off``-mode strict F1 per cell with 95% intervals, ms a row,
and the share of rows that ``auto`` would send to the reasoning model (from the screen's own probabilities and
its stored band, so it needs no generation).

    python -m eval.modes --data-dir ../shared/benchmarks/guardreasoner --sample 100 --out runs/screen/modes \\
        minilm=assets/screen/embedded-minilm guard-state=assets/screen/embedded

Held-out rows: a seeded sample of the test halves of ToxicChat, WildGuardTest and BeaverTails and of the wholly
unseen OpenAIModeration and SafeRLHF (the same rows for every screen). Each screen's predictions are an ordinary
run folder (``eval run --reasoning off --split test``), scored by the same strict scorer as every model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from guardreasoner.cascade import needed_keys
from guardreasoner.predictions import PREDICTIONS_FILE, read_predictions
from guardreasoner.results import POSITIVE
from stagekit.splits import TABLE_BENCHMARKS, UNSEEN_BENCHMARKS

from .report import compare_markdown
from .run import run_benchmark
from .score import score_run

HELD_OUT = TABLE_BENCHMARKS + UNSEEN_BENCHMARKS  # the held-out table's cells, the same for every screen


def routing_share(run: Path, benchmark: str, screen) -> float:
    """The share of a run's rows with some needed verdict inside the screen's ``auto`` band (or without a
    head): the rows ``auto`` sends to the reasoning model."""
    rows = read_predictions(run / benchmark / PREDICTIONS_FILE)
    deferred = 0
    for row in rows:
        for key in needed_keys(row.response):
            head, p = screen.heads.get(key), (row.p_positive or {}).get(key)
            if head is None or p is None or not head.thresholds.decides(p):
                deferred += 1
                break
    return deferred / len(rows) if rows else 0.0


def decided_accuracy(run: Path, benchmark: str, screen) -> dict[str, dict]:
    """Per labelled task: how many gold-labelled verdicts ``auto`` leaves to the screen, and how many of those
    the screen gets right (its confident calls; the rest would go to the reasoning model)."""
    out = {}
    for row in read_predictions(run / benchmark / PREDICTIONS_FILE):
        for key, gold in (row.labels or {}).items():
            head, p = screen.heads.get(key), (row.p_positive or {}).get(key)
            tally = out.setdefault(key, {"labelled": 0, "decided": 0, "correct": 0})
            if gold is None:
                continue
            tally["labelled"] += 1
            if head is not None and p is not None and head.thresholds.decides(p):
                tally["decided"] += 1
                tally["correct"] += (p >= head.thresholds.high) == (gold == POSITIVE[key])
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m eval.modes", description=__doc__.split("\n\n")[0])
    parser.add_argument("screens", nargs="+", help="NAME=SCREEN_FOLDER")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--sample", type=int, default=100, help="seeded rows of each held-out benchmark")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from guardreasoner import load_guard

    out, reports, summary = Path(args.out), {}, {}
    for spec in args.screens:
        name, _, folder = spec.partition("=")
        guard = load_guard(args.model, "transformers", fail_closed=False, reasoning="off", screen=folder)
        timing = {}
        for benchmark in HELD_OUT:
            began = time.perf_counter()
            made = run_benchmark(guard, benchmark, Path(args.data_dir), out / name, sample=args.sample,
                                 seed=args.seed, part="test", batch_size=64)
            timing[benchmark] = {"rows": made, "wall_s": round(time.perf_counter() - began, 2)}
        reports[name] = score_run(out / name, "strict")
        (out / f"{name}.json").write_text(json.dumps(reports[name], indent=2) + "\n")
        summary[name] = {"timing": timing,
                         "auto_routing_share": {b: round(routing_share(out / name, b, guard.screen), 3)
                                                for b in HELD_OUT},
                         "auto_screen_decided": {b: decided_accuracy(out / name, b, guard.screen) for b in HELD_OUT}}
    table = compare_markdown(reports)
    (out / "comparison.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
