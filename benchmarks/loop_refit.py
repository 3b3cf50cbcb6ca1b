"""How far refitting the encoder screen's heads moves the 13 cells, per pull towards the shipped heads (``--l2``):
the loop's learn step with no corrections (or with a flag queue's), scored by the loop's gate on the same rows.

    python -m benchmarks.loop_refit --data-dir ../shared/benchmarks/guardreasoner --state runs/loop --sample 200 \\
        --l2 0 1e-4 1e-3 1e-2 [--flags flagged/queue.jsonl]

It reads the body's vectors from the loop's cache (``STATE/features``; computed there when missing) and prints,
per ``l2``: the mean strict F1 delta over the cells, the cells below the shipped interval, the largest drop, and
how many of the queue's corrections the refitted heads answer as corrected (on the vectors, in float32).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training.loop.collect import collect
from training.loop.data import Item, label_matrix, test_rows, training_part
from training.loop.features import FeatureCache, Heads, read_card
from training.loop.gate import cell_scores
from training.loop.learn import LearnSettings, learn, wrong_corrections
from training.loop.round import DEFAULT_BASE_SCREEN


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_refit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True, help="the loop state whose feature cache to use")
    parser.add_argument("--screen", type=Path, default=DEFAULT_BASE_SCREEN)
    parser.add_argument("--sample", type=int, default=200)
    parser.add_argument("--l2", type=float, nargs="+", default=[0.0, 1e-4, 1e-3, 1e-2])
    parser.add_argument("--correction-weight", type=float, default=LearnSettings().correction_weight)
    parser.add_argument("--flags", type=Path)
    args = parser.parse_args(argv)
    cache = FeatureCache(args.screen, args.state / "features")
    fit, validation = training_part(args.data_dir, "fit"), training_part(args.data_dir, "validation")
    tests = test_rows(args.data_dir, sample=args.sample)
    corrections = collect(args.flags, None, set()).corrections if args.flags else []
    items = [Item(c["prompt"], c["response"], c["labels"]) for c in corrections]
    x, validation_x = cache.vectors([i.pair for i in fit]), cache.vectors([i.pair for i in validation])
    corrections_x = cache.vectors([i.pair for i in items]) if items else np.zeros((0, x.shape[1]))
    test_x = {name: cache.vectors([i.pair for i in rows]) for name, rows in tests.items()}
    shipped, card = Heads.of_folder(args.screen), read_card(args.screen)
    shipped_wrong = len(wrong_corrections(shipped, corrections_x, label_matrix(items)))
    out = []
    for l2 in args.l2:
        settings = LearnSettings(correction_weight=args.correction_weight, l2=l2)
        learnt = learn(x, label_matrix(fit), corrections_x, label_matrix(items), validation_x,
                       label_matrix(validation), shipped, card, settings)
        cells = [cell for cell in cell_scores(tests, test_x, shipped, learnt.heads) if cell.get("n")]
        deltas = [cell["delta"] for cell in cells]
        out.append({"l2": l2, "mean_delta": round(float(np.mean(deltas)), 2), "largest_drop": min(deltas),
                    "cells_below_interval": [f"{c['benchmark']}/{c['task']}" for c in cells if not c["passed"]],
                    "corrections_wrong": f"{len(learnt.wrong)} of {int((label_matrix(items) >= 0).sum())} "
                                         f"(shipped: {shipped_wrong})",
                    "fits": learnt.fits, "fit_s": round(learnt.wall_s, 1),
                    "temperatures": [round(float(t), 3) for t in learnt.heads.temperature]})
        print(json.dumps(out[-1]))
    return out


if __name__ == "__main__":
    main()
