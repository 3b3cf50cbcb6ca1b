"""How well each run's verdict probabilities rank its rows: ROC AUC per cell, recall at 1% and 5% false-positive
rate, expected calibration error, and the F1 a per-cell threshold could reach at best. Prints; asserts nothing.

    .venv/bin/python -m eval.verdict_ranking retrained=runs/retrain/eval/retrained \
        previous=runs/quality/ctranslate2-float32 screen=runs/quality/off

Each argument is an ``eval run`` folder whose rows carry ``p_positive`` (the reasoning guard's, read where it writes
the verdict, or the screen's). An AUC near 0.5 means the probability says little about the gold label, so no
threshold helps; the "best F1" column picks each cell's threshold on the very rows it scores, an upper bound and
not a result (a row without a probability counts as 0.5; on a cell with many positives, calling every row positive
can be that best). Recall at a false-positive rate is read off the ROC curve (the share of positives above the
threshold that lets through at most that share of negatives); ECE is the row-weighted gap between the mean
probability and the positive share in ten equal-width probability bins (0 is perfectly calibrated). After the
cells, each verdict's rows are pooled over the test halves (the benchmarks with a committed split; the never
trained-on ones apart): a head's calibration over all the rows it is asked of.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from guardreasoner.predictions import PREDICTIONS_FILE, read_predictions
from guardreasoner.results import POSITIVE
from stagekit.metrics import calibration_error, f1_of_flags
from stagekit.splits import SPLIT_BENCHMARKS


def cells(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(gold is positive, probability) per benchmark and verdict with both labels present."""
    out = {}
    for path in sorted(run.glob(f"*/{PREDICTIONS_FILE}")):
        rows = read_predictions(path)
        for key, positive in POSITIVE.items():
            pairs = [(row.gold[key] == positive, (row.p_positive or {}).get(key)) for row in rows if key in row.gold]
            gold = np.array([g for g, _ in pairs], dtype=bool)
            if gold.any() and (~gold).any():
                out[f"{path.parent.name} {key}"] = (gold, np.array([0.5 if p is None else p for _, p in pairs]))
    return out


def recall_at_fpr(gold: np.ndarray, p: np.ndarray, rate: float) -> float:
    """The largest share of positives caught at a threshold that flags at most ``rate`` of the negatives."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(gold, p)
    return float(tpr[fpr <= rate + 1e-12].max())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.verdict_ranking", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER")
    args = parser.parse_args()
    print("| run | cell | rows | AUC | recall at 1% FPR | recall at 5% FPR | ECE | best F1 (threshold) |\n"
          "|---|---|---|---|---|---|---|---|")
    for spec in args.runs:
        name, _, folder = spec.rpartition("=")
        best_scores = []
        for cell, (gold, p) in cells(Path(folder)).items():
            best = max((100 * f1_of_flags(gold, p >= cut), cut) for cut in np.linspace(0.05, 0.95, 19))
            best_scores.append(best[0])
            print(f"| {name or folder} | {cell} | {len(gold)} | {roc_auc_score(gold, p):.2f} | "
                  f"{100 * recall_at_fpr(gold, p, 0.01):.1f} | {100 * recall_at_fpr(gold, p, 0.05):.1f} | "
                  f"{calibration_error(p, gold):.3f} | {best[0]:.1f} ({best[1]:.2f}) |")
        if best_scores:
            print(f"| {name or folder} | mean of the best F1s | | | | | | {np.mean(best_scores):.1f} |")
        for key, (gold, p) in pooled_test_halves(cells(Path(folder))).items():
            print(f"| {name or folder} | {key}, test halves pooled | {len(gold)} | {roc_auc_score(gold, p):.2f} | "
                  f"{100 * recall_at_fpr(gold, p, 0.01):.1f} | {100 * recall_at_fpr(gold, p, 0.05):.1f} | "
                  f"{calibration_error(p, gold):.3f} | |")


def pooled_test_halves(by_cell: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per verdict, the rows of every cell whose benchmark has a committed split, pooled."""
    out = {}
    for key in POSITIVE:
        parts = [value for cell, value in by_cell.items()
                 if cell.endswith(f" {key}") and cell.split(" ")[0] in SPLIT_BENCHMARKS]
        if parts:
            out[key] = (np.concatenate([g for g, _ in parts]), np.concatenate([p for _, p in parts]))
    return out


if __name__ == "__main__":
    main()
