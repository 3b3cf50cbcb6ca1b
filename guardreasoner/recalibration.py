"""Platt maps: a verdict probability made to mean what it says on the user's own labelled rows.

A map is ``p' = sigmoid(a * logit(p) + b)``, fitted per verdict by ``python -m guardreasoner calibrate`` on the
rows it chooses thresholds on, and kept in the operating point with them. It serves both kinds of probability:
the reasoning model's verdict-token share (never calibrated by the model itself) and the screen's tempered head
(calibrated on the benchmarks' validation rows, which need not resemble a user's traffic). The map is monotone
(``a > 0``), so it never reorders rows: an operating point's thresholds are chosen on, and cut, the mapped
probability that every result then reports, and ``Verdict.calibration`` names the map.

Two parameters by Newton's method on the log-loss (with a faint ridge so that rows a threshold separates
perfectly still give a finite map) rather than scikit-learn, which the core does not otherwise need.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .results import Verdict

EDGE = 1e-6  # probabilities are clipped to [EDGE, 1 - EDGE] before the logit: a 0 or 1 maps to a finite value
RIDGE = 1e-3  # on (a - 1) and b: with no evidence the map stays near the identity
MIN_ROWS_PER_CLASS = 5  # fewer of either class and the two parameters are not worth fitting


@dataclass(frozen=True)
class PlattMap:
    a: float
    b: float
    rows: int  # labelled rows it was fitted on
    point: str = ""  # the operating point that holds it (named in each result it maps)

    def __call__(self, p: float) -> float:
        return float(_sigmoid(self.a * _logit(np.asarray(p, dtype=float)) + self.b))

    def describe(self) -> str:
        where = f" of operating point {self.point}" if self.point else ""
        return f"platt: sigmoid({self.a:.3f} * logit(p) {self.b:+.3f}), fitted on {self.rows} labelled rows{where}"

    def to_dict(self) -> dict:
        return {"method": "platt", "a": self.a, "b": self.b, "rows": self.rows}

    @classmethod
    def from_dict(cls, data: dict, point: str = "") -> PlattMap:
        if not isinstance(data, dict) or data.get("method") != "platt":
            raise ValueError("a calibration map must be {'method': 'platt', 'a': ..., 'b': ..., 'rows': ...}")
        a, b, rows = data.get("a"), data.get("b"), data.get("rows")
        if not all(isinstance(value, (int, float)) and math.isfinite(value) for value in (a, b)) or a <= 0:
            raise ValueError("a calibration map needs finite numbers a > 0 and b")
        return cls(float(a), float(b), int(rows or 0), point)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EDGE, 1 - EDGE)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -z))  # 1 / (1 + e^-z) without overflow


def fit_platt(scores, positive) -> tuple[PlattMap | None, str | None]:
    """The map fitted on these rows, or None and why not (too few of a class, or probabilities that do not
    rank the rows: a map with ``a <= 0`` would reverse them)."""
    scores, y = np.asarray(scores, dtype=float), np.asarray(positive, dtype=float)
    counts = int(y.sum()), int(len(y) - y.sum())
    if min(counts) < MIN_ROWS_PER_CLASS:
        return None, (f"not fitted: {counts[0]} positive and {counts[1]} negative rows (at least "
                      f"{MIN_ROWS_PER_CLASS} of each needed)")
    x = _logit(scores)
    features = np.column_stack([x, np.ones_like(x)])
    prior = np.array([1.0, 0.0])  # start at, and lean towards, the identity map

    def loss(weights: np.ndarray) -> float:
        z = features @ weights
        return float(np.mean(np.logaddexp(0, z) - y * z) + RIDGE / 2 * np.sum((weights - prior) ** 2))

    weights = prior.copy()
    for _ in range(100):
        p = _sigmoid(features @ weights)
        gradient = features.T @ (p - y) / len(y) + RIDGE * (weights - prior)
        hessian = (features.T * (p * (1 - p))) @ features / len(y) + RIDGE * np.eye(2)
        step, before = np.linalg.solve(hessian, gradient), loss(weights)
        while loss(weights - step) > before and np.abs(step).max() > 1e-12:
            step = step / 2  # a full Newton step can overshoot far from the optimum: halve it until it helps
        weights = weights - step
        if np.abs(step).max() < 1e-9:
            break
    a, b = (float(value) for value in weights)
    if not a > 0:
        return None, f"not fitted: these probabilities do not rank the rows (the fitted slope is {a:.3f})"
    return PlattMap(a, b, len(y)), None


def calibration_error(p, y, bins: int = 10) -> float:
    """Expected calibration error: the row-weighted gap between the mean probability and the positive share in
    ``bins`` equal-width probability bins (0: ``p`` means what it says)."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    return float(sum(abs(p[which == b].mean() - y[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def recalibrate(verdict: Verdict, mapping: PlattMap) -> None:
    """Put ``verdict``'s probability through the map (none: nothing to map) and name the map in its calibration.
    Idempotent: a probability the map already made is left alone (the app re-labels results a guard with the
    same operating point may have made)."""
    described = mapping.describe()
    if verdict.p_positive is None or (verdict.calibration or "").startswith(described):
        return
    verdict.p_positive = mapping(verdict.p_positive)
    verdict.calibration = f"{described}; over {verdict.calibration or 'an unnamed probability'}"
