"""Rows of a prediction file (``<run>/<Benchmark>/generated_predictions.jsonl``), upstream's or ours, read as
request, reply, model output and gold verdicts: the one format that evaluation writes and that the annotation
and training stages read back.

Our rows carry ``labels`` per benchmark task. Upstream's carry one ``label``: refusal/compliance answers the
refusal task; harmful/unharmful answers the reply's harm where there is a reply, else the request's (true of
every upstream benchmark file, where prompt-task rows have no reply).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .parser import split_upstream_prompt
from .results import VERDICT_OF_TASK
from .rows import read_jsonl

PREDICTIONS_FILE = "generated_predictions.jsonl"


@dataclass
class PredictionRow:
    benchmark: str
    line: int  # 0-based position in its file
    request: str
    reply: str | None
    output: str
    gold: dict[str, str]  # verdict key -> gold label, for the tasks the benchmark labels


def gold_of(record: dict, reply: str | None) -> dict[str, str]:
    if isinstance(record.get("labels"), dict):
        return {VERDICT_OF_TASK[task]: label for task, label in record["labels"].items() if label is not None}
    label = str(record.get("label", "")).strip().lower()
    if label in ("refusal", "compliance"):
        return {"completion": label}
    if label in ("harmful", "unharmful"):
        return {"response" if reply is not None else "request": label}
    return {}


def read_predictions(path: str | Path, benchmark: str | None = None) -> list[PredictionRow]:
    path = Path(path)
    rows = []
    for line, record in enumerate(read_jsonl(path)):
        if "request" in record:
            request, reply = record["request"], record.get("response")
        else:
            request, reply = split_upstream_prompt(record["prompt"])
        rows.append(PredictionRow(benchmark or path.parent.name, line, request, reply, record["predict"],
                                  gold_of(record, reply)))
    return rows


def read_run(run: str | Path) -> list[PredictionRow]:
    """Every benchmark's rows in a run folder, benchmarks in name order."""
    return [row for path in sorted(Path(run).glob(f"*/{PREDICTIONS_FILE}")) for row in read_predictions(path)]
