"""Evaluation reports as files hold them: the published figures the app and the reports compare against, and
reports written by ``python -m eval score --json`` (earlier versions' task names still read)."""

from __future__ import annotations

import json
from functools import lru_cache

from .results import LEGACY_TASK_KEYS, deprecated_names
from .shipped import asset_path

_PUBLISHED_FILE = "published_f1.json"


@lru_cache(maxsize=1)
def published_f1() -> dict[str, dict]:
    """The paper's F1 per system, verdict key (task) and benchmark, with each task's weighted ``avg``."""
    return json.loads(asset_path(_PUBLISHED_FILE).read_text(encoding="utf-8"))["systems"]


def mean_cell_f1(report: dict) -> float | None:
    """The mean F1 over the cells a report scored (each benchmark and task counted once, unweighted): the one
    figure ``training.ship`` ranks candidates by and comparison tables show."""
    values = [cell["f1"] for cell in report["cells"] if cell.get("f1") is not None]
    return sum(values) / len(values) if values else None


def _gold_counts(cell: dict) -> tuple[int, int] | None:
    confusion = cell.get("confusion")
    if not confusion:
        return None  # paper-mode reports keep no confusion matrix
    return confusion["tp"] + confusion["fn"], confusion["fp"] + confusion["tn"]


def all_positive_f1(cell: dict) -> float | None:
    """The F1 (x 100) of calling every labelled row of a strict cell positive (harmful, or refusal): 2P / (2P + N).
    F1 of the positive label pays a guard that says "harmful" of nearly everything about this much, so a guard
    has learnt something only where it beats it."""
    counts = _gold_counts(cell)
    if counts is None:
        return None
    positives, negatives = counts
    return 100.0 * 2 * positives / (2 * positives + negatives) if positives else 0.0


def balanced_accuracy(cell: dict) -> float | None:
    """The mean of the recall of both labels (x 100) of a strict cell: 50 is chance, and calling every row one
    label scores 50 whatever the balance of labels, where F1 rewards it."""
    counts = _gold_counts(cell)
    if counts is None or not all(counts):
        return None
    confusion = cell["confusion"]
    return 50.0 * (confusion["tp"] / counts[0] + confusion["tn"] / counts[1])


def mean_over_cells(report: dict, measure) -> float | None:
    """The unweighted mean of ``measure(cell)`` over a report's cells; None unless every cell has it."""
    values = [measure(cell) for cell in report["cells"]]
    return sum(values) / len(values) if values and None not in values else None


def current_report(report: dict, where: str = "a report") -> dict:
    """A scored report with task names as verdict keys (reports of earlier versions used prompt/response/refusal)."""
    if not any(cell.get("task") in LEGACY_TASK_KEYS for cell in report.get("cells", [])):
        return report
    deprecated_names(where, "prompt/response/refusal", "verdict keys")
    renamed = dict(report)
    renamed["cells"] = [{**cell, "task": LEGACY_TASK_KEYS.get(cell["task"], cell["task"])} for cell in report["cells"]]
    renamed["missing"] = [{**m, "task": LEGACY_TASK_KEYS.get(m["task"], m["task"])} for m in report.get("missing", [])]
    renamed["tasks"] = {LEGACY_TASK_KEYS.get(task, task): value for task, value in report.get("tasks", {}).items()}
    for cell in renamed["cells"]:
        if "mean_completion_tokens" in cell:
            cell["mean_output_tokens"] = cell.pop("mean_completion_tokens")
    return renamed
