"""Scores, written once: the F1 of a positive label (from counts, label lists or flags, and bootstrapped) and the
measures over a scored report's cells. Used by the scorer, the screen's threshold search, the comparison tables,
``training.ship`` and the analyses alike."""

from __future__ import annotations

import numpy as np

from guardreasoner.recalibration import calibration_error  # noqa: F401  (the core's, which results use too)

BOOTSTRAP_SAMPLES = 1000


def f1_from_counts(tp: float, fp: float, fn: float, scale: float = 1.0) -> float:
    """F1 of the positive label, 2TP / (2TP + FP + FN) times ``scale`` (100: percent), 0 where nothing positive
    was found. Scaled before dividing, so the figures equal those of reports written before this module."""
    return scale * 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1_percent(labels: list[str], predictions: list[str], positive: str) -> float:
    """Binary F1 of ``positive`` x 100, as sklearn's f1_score(pos_label=positive) with zero_division=0."""
    tp = sum(1 for gold, pred in zip(labels, predictions) if gold == positive and pred == positive)
    fp = sum(1 for gold, pred in zip(labels, predictions) if gold != positive and pred == positive)
    fn = sum(1 for gold, pred in zip(labels, predictions) if gold == positive and pred != positive)
    return f1_from_counts(tp, fp, fn, 100.0)


def f1_of_flags(gold_positive: np.ndarray, pred_positive: np.ndarray) -> float:
    """F1 (a fraction) of boolean arrays: which rows are gold positive, which are called positive."""
    gold, pred = np.asarray(gold_positive, dtype=bool), np.asarray(pred_positive, dtype=bool)
    return f1_from_counts(int(np.sum(gold & pred)), int(np.sum(~gold & pred)), int(np.sum(gold & ~pred)))


def confusion(gold_positive: np.ndarray, pred_positive: np.ndarray) -> dict[str, int]:
    gold, pred = np.asarray(gold_positive, dtype=bool), np.asarray(pred_positive, dtype=bool)
    return {"tp": int((gold & pred).sum()), "fp": int((~gold & pred).sum()),
            "fn": int((gold & ~pred).sum()), "tn": int((~gold & ~pred).sum())}


def bootstrap_f1_interval(gold_positive: np.ndarray, pred_positive: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The 95% bootstrap interval of F1 x 100 (rows resampled with replacement, ``BOOTSTRAP_SAMPLES`` times)."""
    n = len(gold_positive)
    if n == 0:
        return 0.0, 0.0
    samples = np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP_SAMPLES, n))
    gold, pred = gold_positive[samples], pred_positive[samples]
    tp = (gold & pred).sum(axis=1)
    fp = (~gold & pred).sum(axis=1)
    fn = (gold & ~pred).sum(axis=1)
    denominator = 2 * tp + fp + fn  # f1_from_counts, vectorised over the samples
    f1 = np.where(denominator > 0, 200.0 * tp / np.maximum(denominator, 1), 0.0)
    low, high = np.percentile(f1, [2.5, 97.5])
    return float(low), float(high)


def all_positive_f1_of(positives: int, negatives: int) -> float:
    """F1 x 100 of calling every row positive: 2P / (2P + N)."""
    return f1_from_counts(positives, negatives, 0, 100.0)


def all_positive_interval(positives: int, negatives: int) -> tuple[float, float]:
    """The 95% bootstrap interval of calling every row positive, resampled as the systems' rows are."""
    gold = np.array([True] * positives + [False] * negatives, dtype=bool)
    return bootstrap_f1_interval(gold, np.ones_like(gold))


def mean_cell_f1(report: dict) -> float | None:
    """The mean F1 over the cells a report scored (each benchmark and task counted once, unweighted): the one
    figure ``training.ship`` ranks candidates by and comparison tables show."""
    values = [cell["f1"] for cell in report["cells"] if cell.get("f1") is not None]
    return sum(values) / len(values) if values else None


def _gold_counts(cell: dict) -> tuple[int, int] | None:
    counts = cell.get("confusion")
    if not counts:
        return None  # paper-mode reports keep no confusion matrix
    return counts["tp"] + counts["fn"], counts["fp"] + counts["tn"]


def all_positive_f1(cell: dict) -> float | None:
    """The F1 (x 100) of calling every labelled row of a strict cell positive (harmful, or refusal): 2P / (2P + N).
    F1 of the positive label pays a guard that says "harmful" of nearly everything about this much, so a guard
    has learnt something only where it beats it."""
    counts = _gold_counts(cell)
    if counts is None:
        return None
    return all_positive_f1_of(*counts)


def balanced_accuracy(cell: dict) -> float | None:
    """The mean of the recall of both labels (x 100) of a strict cell: 50 is chance, and calling every row one
    label scores 50 whatever the balance of labels, where F1 rewards it."""
    counts = _gold_counts(cell)
    if counts is None or not all(counts):
        return None
    matrix = cell["confusion"]
    return 50.0 * (matrix["tp"] / counts[0] + matrix["tn"] / counts[1])


def mean_over_cells(report: dict, measure) -> float | None:
    """The unweighted mean of ``measure(cell)`` over a report's cells; None unless every cell has it."""
    values = [measure(cell) for cell in report["cells"]]
    return sum(values) / len(values) if values and None not in values else None
