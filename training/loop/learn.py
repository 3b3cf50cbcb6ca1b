"""Retrain the verdict encoder's three heads, and only them, with the corrections added.

The encoder body stays frozen, so a head is a logistic regression on the body's last-layer means
(``features.py``). Each verdict's head starts from the shipped one and is pulled back towards it (an L2 penalty
on the distance from the shipped weights: the fit moves only as far as the rows ask), with the fit rows at
weight 1 and each correction at ``correction_weight``. Then, on the validation rows, each head gets its
temperature anew (``training.encoder.fit_temperature``), so that ``p`` keeps meaning what it says, and keeps the
shipped thresholds: they are probabilities, and choosing them again on the validation rows every round would
move them by that choice's own noise (the best-F1 cut on these rows is reported beside the kept one). A
correction the heads still answer wrongly gets its weight multiplied by ``BOOST`` and the heads are fitted
again, up to ``boosts`` times: each correction is pressed only as hard as it needs.

The candidate folder is the shipped folder with new heads: the body's stored tensors are copied byte for byte,
the heads stored in float16 as ``pack_weights`` stores them (and scored as stored).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from guardreasoner.encoder import WEIGHTS_FILE
from guardreasoner.results import VERDICT_KEYS
from guardreasoner.screen import CARD_FILE

from .features import Heads, read_card

BOOST = 4.0


@dataclass
class LearnSettings:
    """Defaults chosen with ``python -m benchmarks.loop_refit`` on the shipped screen (200 test rows a benchmark,
    four real flags the shipped screen got wrong, margin 0.05): l2 1e-2 and weight 5 answered all four as
    corrected with the smallest cell drops measured (mean strict F1 delta +0.22 over the 13 cells, largest drop
    -2.88, no cell below its interval; l2 1e-3: -0.74 and -6.13; 3e-2: -0.25 and -3.40); l2 0 lets the weights
    run off (temperatures at the grid's end, three cells below their intervals), and l2 1 holds the heads so hard
    that the boosted corrections pull two prompt cells below theirs and one correction stays wrong."""

    correction_weight: float = 5.0  # each correction's weight at the first fit (a fit row weighs 1)
    l2: float = 1e-2  # the penalty on the distance from the shipped head, per unit of mean row loss
    boosts: int = 3  # refits that multiply the weight of corrections still answered wrongly by BOOST
    # A correction counts as learnt only this far past the cut (in probability), so that it stays answered as
    # corrected where serving computes in another dtype, and when a later round moves the heads a little.
    margin: float = 0.05
    max_iterations: int = 500


def fit_head(x: np.ndarray, y: np.ndarray, weights: np.ndarray, start_weight: np.ndarray, start_bias: float,
             l2: float, max_iterations: int) -> tuple[np.ndarray, float]:
    """argmin over (w, b) of the weighted mean log-loss of sigmoid(x w + b) + l2/2 |w - start_weight|^2."""
    from scipy.optimize import minimize
    from scipy.special import expit

    total = weights.sum()

    def loss_and_gradient(theta):
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        loss = np.sum(weights * (np.logaddexp(0.0, z) - y * z)) / total + 0.5 * l2 * np.sum((w - start_weight) ** 2)
        residual = weights * (expit(z) - y) / total
        gradient = np.concatenate([x.T @ residual + l2 * (w - start_weight), [residual.sum()]])
        return loss, gradient

    start = np.concatenate([start_weight, [start_bias]]).astype(np.float64)
    found = minimize(loss_and_gradient, start, jac=True, method="L-BFGS-B",
                     options={"maxiter": max_iterations})
    return found.x[:-1], float(found.x[-1])


def stored(values: np.ndarray) -> np.ndarray:
    """As the folder will hold them: float16."""
    return values.astype(np.float16).astype(np.float32)


def calibrated(logits: np.ndarray, labels: np.ndarray, shipped_heads: list[dict]) -> tuple[list[dict], dict]:
    """The card's head entries with each temperature fitted anew on the validation rows (the shipped one kept
    where they lack a label), thresholds kept; and per verdict what was measured there."""
    from stagekit.metrics import calibration_error, f1_of_flags
    from training.encoder import fit_temperature
    from training.screen import choose_cut

    entries, report = [], {}
    for shipped in sorted(shipped_heads, key=lambda head: head["position"]):
        column, key = shipped["position"], VERDICT_KEYS[shipped["position"]]
        mask = labels[:, column] >= 0
        y = labels[mask, column].astype(bool)
        if not mask.any() or y.all() or not y.any():
            entries.append(dict(shipped))
            report[key] = {"rows": int(mask.sum()), "kept": "validation rows lack a label: the shipped temperature "
                                                            "stays"}
            continue
        raw = logits[mask, column]
        temperature = fit_temperature(raw, y.astype(np.float64))
        p = 1 / (1 + np.exp(-np.clip(raw / temperature, -60, 60)))
        cut = shipped["thresholds"]["cut"]
        entries.append({**shipped, "temperature": round(temperature, 4)})
        report[key] = {"rows": int(mask.sum()), "positive": int(y.sum()), "temperature": round(temperature, 4),
                       "shipped_temperature": shipped.get("temperature"),
                       "ece": round(calibration_error(p, y), 4), "cut": cut,
                       "f1_at_cut": round(100 * f1_of_flags(y, p >= cut), 2),
                       "best_cut_here": choose_cut(p, y)}
    return entries, report


@dataclass
class Learnt:
    heads: Heads  # as stored (float16 weights)
    card_heads: list[dict]  # the card's head entries
    validation: dict  # per verdict: how temperature and thresholds were chosen
    correction_weights: np.ndarray  # per correction row and verdict, as last fitted
    wrong: list[tuple[int, int]]  # (correction row, verdict column) still answered wrongly on the features
    fits: int = 0
    wall_s: float = 0.0
    kept: list[str] = field(default_factory=list)  # verdicts whose shipped head stayed (no rows to refit on)


def learn(x: np.ndarray, labels: np.ndarray, corrections_x: np.ndarray, corrections_labels: np.ndarray,
          validation_x: np.ndarray, validation_labels: np.ndarray, shipped: Heads, card: dict,
          settings: LearnSettings) -> Learnt:
    """New heads from the fit rows (``x``, ``labels``: rows x verdicts, -1 unlabelled) and the corrections."""
    began = time.perf_counter()
    boost = np.where(corrections_labels >= 0, settings.correction_weight, 0.0)
    fits = 0
    while True:
        weight, bias = shipped.weight.astype(np.float64).copy(), shipped.bias.astype(np.float64).copy()
        kept = []
        for column, key in enumerate(VERDICT_KEYS):
            rows = np.concatenate([labels[:, column], corrections_labels[:, column]])
            mask = rows >= 0
            y = rows[mask]
            if not mask.any() or y.min() == y.max():
                kept.append(key)  # nothing to learn from: the shipped head stays as it is
                continue
            row_weights = np.concatenate([np.ones(len(x)), boost[:, column]])[mask]
            features = np.concatenate([x, corrections_x])[mask].astype(np.float64)
            weight[column], bias[column] = fit_head(features, y, row_weights, weight[column], bias[column],
                                                    settings.l2, settings.max_iterations)
        fits += 1
        weight, bias = stored(weight), stored(bias)
        entries, validation = calibrated(validation_x @ weight.T + bias, validation_labels, card["heads"])
        heads = Heads(weight, bias, np.array([_entry(entries, c)["temperature"] for c in range(len(VERDICT_KEYS))]),
                      np.array([_entry(entries, c)["thresholds"]["cut"] for c in range(len(VERDICT_KEYS))]))
        wrong = wrong_corrections(heads, corrections_x, corrections_labels, settings.margin)
        if not wrong or fits > settings.boosts:
            return Learnt(heads, entries, validation, boost, wrong, fits, time.perf_counter() - began, kept)
        for row, column in wrong:
            boost[row, column] *= BOOST


def _entry(entries: list[dict], position: int) -> dict:
    return next((entry for entry in entries if entry["position"] == position),
                {"temperature": np.nan, "thresholds": {"cut": np.nan}})


def wrong_corrections(heads: Heads, x: np.ndarray, labels: np.ndarray, margin: float = 0.0
                      ) -> list[tuple[int, int]]:
    """(row, verdict column) of every correction label the heads answer otherwise, or within ``margin`` of
    the cut."""
    if not len(x):
        return []
    p = heads.probabilities(x)
    return [(int(row), int(column)) for row, column in zip(*np.nonzero(labels >= 0))
            if (p[row, column] - heads.cut[column]) * (1 if labels[row, column] else -1) < margin]


def write_candidate(shipped_folder: Path, out: Path, learnt: Learnt, loop_section: dict) -> Path:
    """The shipped screen folder with the new heads: body tensors copied as stored, heads in float16, the card's
    heads replaced and a ``loop`` section added (everything else in the card kept)."""
    import torch
    from safetensors.torch import load_file, save_file

    shipped_folder, out = Path(shipped_folder), Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for path in shipped_folder.iterdir():
        if path.is_file() and path.name not in (WEIGHTS_FILE, CARD_FILE):
            shutil.copyfile(path, out / path.name)
    tensors = load_file(str(shipped_folder / WEIGHTS_FILE))
    for name in ("heads.weight", "heads.bias"):
        tensors.pop(name + ".int8_scale", None)
    tensors["heads.weight"] = torch.from_numpy(learnt.heads.weight).to(torch.float16).contiguous()
    tensors["heads.bias"] = torch.from_numpy(learnt.heads.bias).to(torch.float16).contiguous()
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    card = read_card(shipped_folder)
    card["heads"] = learnt.card_heads
    card["loop"] = loop_section
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return out
