"""How well a cell's verdict probabilities mean what they say and rank its rows, for ``eval score``: expected
calibration error, Brier score, ROC AUC, average precision (the area under the precision-recall curve, step-wise)
and recall at 1% and 5% false-positive rate, per cell whose rows carry ``p_positive``; and the reliability
diagram, ROC curve and precision-recall curve of every such cell on one plotly page.

The figures are computed on the labelled rows that have a probability (``scored_rows``); rows without one (a
backend without token log-probabilities, a verdict the model never wrote) are counted as ``unscored_rows`` and
left out, not given 0.5. ECE and the reliability diagram use ten equal-width probability bins (as
``stagekit.metrics.calibration_error``); recall at a false-positive rate is read off the ROC curve
(``eval.verdict_ranking.recall_at_fpr``). AUC and the recalls need both classes among the scored rows (else
None). The report keeps each cell's bins, ROC and precision-recall points, so the page can be drawn again from
the JSON alone (``stagekit.curves``, which the app's Benchmarks tab draws too).
"""

from __future__ import annotations

import numpy as np

from stagekit.curves import curves_figure, has_scores
from stagekit.metrics import calibration_error

from .verdict_ranking import recall_at_fpr

BINS = 10
FPR_RATES = {"recall_at_1pct_fpr": 0.01, "recall_at_5pct_fpr": 0.05}
MAX_ROC_POINTS = 200  # a long curve is thinned to this many points (its ends kept) to keep reports small


def cell_probabilities(rows, golds: list[str | None], task: str, positive: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(gold is positive, probability) of the labelled rows with a probability for ``task``, and how many
    labelled rows had none."""
    gold, scores, unscored = [], [], 0
    for row, label in zip(rows, golds):
        if label is None:
            continue
        p = (row.p_positive or {}).get(task)
        if p is None:
            unscored += 1
            continue
        gold.append(label == positive)
        scores.append(float(p))
    return np.array(gold, dtype=bool), np.array(scores, dtype=float), unscored


def reliability_bins(gold: np.ndarray, p: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per non-empty equal-width bin: the mean probability, the share of positive rows, and the row count."""
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    return [{"mean_p": float(p[which == b].mean()), "positive_share": float(gold[which == b].mean()),
             "rows": int((which == b).sum())} for b in range(bins) if (which == b).any()]


def _thinned(xs: np.ndarray, ys: np.ndarray) -> tuple[list[float], list[float]]:
    """A curve's points, thinned to ``MAX_ROC_POINTS`` evenly spaced ones (its ends kept), rounded for the report."""
    if len(xs) > MAX_ROC_POINTS:
        keep = np.unique(np.r_[np.linspace(0, len(xs) - 1, MAX_ROC_POINTS).round().astype(int), len(xs) - 1])
        xs, ys = xs[keep], ys[keep]
    return [round(float(x), 5) for x in xs], [round(float(y), 5) for y in ys]


def roc_points(gold: np.ndarray, p: np.ndarray) -> dict[str, list[float]]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(gold, p)
    fpr, tpr = _thinned(fpr, tpr)
    return {"fpr": fpr, "tpr": tpr}


def pr_points(gold: np.ndarray, p: np.ndarray) -> dict[str, list[float]]:
    """The precision-recall curve from recall 0 up."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(gold, p)
    recall, precision = _thinned(recall[::-1], precision[::-1])  # sklearn gives them from the last threshold back
    return {"recall": recall, "precision": precision}


def ranking_figures(rows, golds: list[str | None], task: str, positive: str) -> dict:
    """The cell's calibration and ranking figures; {} where no labelled row has a probability."""
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    gold, p, unscored = cell_probabilities(rows, golds, task, positive)
    if not len(p):
        return {}
    both = bool(gold.any() and (~gold).any())
    figures = {
        "scored_rows": int(len(p)),
        "unscored_rows": unscored,
        "ece": calibration_error(p, gold, BINS),
        "brier": float(brier_score_loss(gold, p, pos_label=True)),
        "roc_auc": float(roc_auc_score(gold, p)) if both else None,
        "average_precision": float(average_precision_score(gold, p)) if both else None,
        **{name: (recall_at_fpr(gold, p, rate) if both else None) for name, rate in FPR_RATES.items()},
        "reliability": reliability_bins(gold, p),
    }
    if both:
        figures["roc"] = roc_points(gold, p)
        figures["pr"] = pr_points(gold, p)
    return figures


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _decimal(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown_table(report: dict) -> list[str]:
    """The figures per cell as markdown lines ([] where no cell has probabilities)."""
    cells = [cell for cell in report["cells"] if has_scores(cell)]
    if not cells:
        return []
    lines = ["| cell | scored rows | ECE | Brier | ROC AUC | recall at 1% FPR | recall at 5% FPR | average precision |",
             "|---|---|---|---|---|---|---|---|"]
    for cell in cells:
        unscored = f" (+{cell['unscored_rows']} without p)" if cell["unscored_rows"] else ""
        lines.append(f"| {cell['benchmark']} ({cell['task']}) | {cell['scored_rows']}{unscored} | "
                     f"{_decimal(cell['ece'])} | {_decimal(cell['brier'])} | {_decimal(cell['roc_auc'])} | "
                     f"{_percent(cell['recall_at_1pct_fpr'])} | {_percent(cell['recall_at_5pct_fpr'])} | "
                     f"{_decimal(cell.get('average_precision'))} |")
    return lines


def curves_html(report: dict, name: str = "this run") -> str | None:
    """A self-contained page (plotly.js inlined) of ``curves_figure``; None where no cell has probabilities."""
    figure = curves_figure(report, name)
    return None if figure is None else figure.to_html(full_html=True, include_plotlyjs=True)
