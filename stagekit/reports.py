"""Evaluation reports as files hold them: the published figures the app and the reports compare against, and
reports written by ``python -m eval score --json`` (earlier versions' task names still read). The measures over
a report's cells are in ``metrics``."""

from __future__ import annotations

import json
from functools import lru_cache

from guardreasoner.results import LEGACY_TASK_KEYS, deprecated_names
from guardreasoner.shipped import asset_path

_PUBLISHED_FILE = "published_f1.json"


@lru_cache(maxsize=1)
def published_f1() -> dict[str, dict]:
    """The paper's F1 per system, verdict key (task) and benchmark, with each task's weighted ``avg``."""
    return json.loads(asset_path(_PUBLISHED_FILE).read_text(encoding="utf-8"))["systems"]


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
