"""Decide whether the candidate ships: the 13 cells' test rows, and every correction ever made.

Cells: reasoning off (the screen alone), strict F1 per cell on the same test rows for the shipped screen and the
candidate, each with its 95% bootstrap interval (``stagekit.metrics``). Both score the body's cached vectors
through their heads (``features.Heads``: what the screen serves in ``off``, in float32). A cell fails when the
candidate's F1 is below the shipped screen's interval.

Corrections: every correction ever accepted is asked of both screens as they are served (each folder loaded by
``load_screen``, in the dtype serving would choose). A correction the shipped screen answered as corrected and
the candidate does not is a regression and fails the gate; one neither answers as corrected is listed with why
(it is a held-out row and was not trained on, or the heads could not fit it), and fails the gate only with
``require_every_correction``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from guardreasoner.results import LABELS, PROMPT_HARMFULNESS, VERDICT_KEYS
from stagekit.metrics import bootstrap_f1_interval, f1_of_flags

from .data import Item
from .features import Heads


@dataclass
class GateResult:
    cells: list[dict] = field(default_factory=list)
    fixed: list[dict] = field(default_factory=list)
    still_wrong: list[dict] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reasons": self.reasons, "cells": self.cells,
                "corrections": {"fixed": self.fixed, "still_wrong": self.still_wrong}}


def _scored(gold: np.ndarray, said: np.ndarray) -> dict:
    low, high = bootstrap_f1_interval(gold, said)
    return {"f1": round(100 * f1_of_flags(gold, said), 2), "ci95": [round(low, 2), round(high, 2)]}


def cell_scores(tests: dict[str, list[Item]], vectors: dict[str, np.ndarray], shipped: Heads,
                candidate: Heads) -> list[dict]:
    """Per cell: rows, and the shipped and candidate strict F1 with intervals; ``passed`` where the candidate's
    F1 is not below the shipped interval."""
    from eval.registry import CELLS

    out = []
    for cell in CELLS:
        items, column = tests.get(cell.benchmark, []), VERDICT_KEYS.index(cell.task)
        labelled = [row for row, item in enumerate(items) if cell.task in item.labels]
        if not labelled:
            out.append({"benchmark": cell.benchmark, "task": cell.task, "n": 0, "skipped": "no labelled test rows"})
            continue
        gold = np.array([items[row].labels[cell.task] == cell.positive for row in labelled])
        # the screen gives no reply verdict without a reply: strict scoring counts that row as wrong
        answerable = np.array([cell.task == PROMPT_HARMFULNESS or items[row].response is not None
                               for row in labelled])
        entry = {"benchmark": cell.benchmark, "task": cell.task, "n": len(labelled)}
        for name, heads in (("shipped", shipped), ("candidate", candidate)):
            said = heads.positive(vectors[cell.benchmark][labelled])[:, column]
            entry[name] = _scored(gold, np.where(answerable, said, ~gold))
        entry["delta"] = round(entry["candidate"]["f1"] - entry["shipped"]["f1"], 2)
        entry["passed"] = entry["candidate"]["f1"] >= entry["shipped"]["ci95"][0]
        out.append(entry)
    return out


def answers(folder: Path, corrections: list[dict]) -> list[dict[str, tuple[float, str]]]:
    """Per correction, per verdict it corrects: the screen's probability and its ``off`` label, as served."""
    from guardreasoner.screen import load_screen

    screen = load_screen(folder)
    found = screen.probabilities([(c["prompt"], c["response"]) for c in corrections]) if corrections else []
    out = []
    for correction, probabilities in zip(corrections, found):
        said = {}
        for key in correction["labels"]:
            p, head = probabilities.get(key), screen.heads.get(key)
            if p is None or head is None:
                said[key] = (None, None)
            else:
                said[key] = (round(p, 4), LABELS[key][0] if p >= head.thresholds.cut else LABELS[key][1])
        out.append(said)
    return out


def check_corrections(corrections: list[dict], shipped_folder: Path, candidate_folder: Path,
                      held_out: set[str], result: GateResult, require_every: bool = False) -> None:
    shipped, candidate = answers(shipped_folder, corrections), answers(candidate_folder, corrections)
    cuts = _cuts(candidate_folder)
    for correction, before, after in zip(corrections, shipped, candidate):
        wrong = {key: label for key, label in correction["labels"].items() if after[key][1] != label}
        summary = {"key": correction["key"], "source": correction["source"], "origin": correction["origin"],
                   "prompt": correction["prompt"][:200], "labels": correction["labels"]}
        if not wrong:
            result.fixed.append({**summary, "was_wrong_before": sorted(
                key for key, label in correction["labels"].items() if before[key][1] != label)})
            continue
        for key, label in wrong.items():
            regression = before[key][1] == label
            if correction["key"] in held_out:
                why = "a held-out test row: kept out of training, so the gate never scores a row it learnt"
            elif regression:
                why = "the shipped screen answers it as corrected; the candidate does not"
            else:
                why = (f"the {key} head could not fit it at the highest weight tried (p {after[key][0]} against "
                       f"the cut {cuts.get(key)}): rows like it say otherwise")
            result.still_wrong.append({**summary, "verdict": key, "expected": label, "candidate": after[key][1],
                                       "candidate_p": after[key][0], "shipped": before[key][1],
                                       "shipped_p": before[key][0], "regression": regression, "why": why})
            if regression or require_every:
                result.reasons.append(f"correction {correction['key']} ({key} = {label}) is not answered as "
                                      f"corrected by the candidate: {why}")


def _cuts(folder: Path) -> dict[str, float]:
    from .features import read_card

    return {VERDICT_KEYS[head["position"]]: head["thresholds"]["cut"] for head in read_card(folder)["heads"]}


def judge_cells(result: GateResult) -> None:
    for cell in result.cells:
        if cell.get("passed") is False:
            result.reasons.append(
                f"{cell['benchmark']} {cell['task']}: the candidate's strict F1 {cell['candidate']['f1']:.2f} is "
                f"below the shipped screen's 95% interval [{cell['shipped']['ci95'][0]:.2f}, "
                f"{cell['shipped']['ci95'][1]:.2f}] (shipped {cell['shipped']['f1']:.2f})")

