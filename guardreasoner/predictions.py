"""Prediction files (``<run>/<Benchmark>/generated_predictions.jsonl``): the one place that writes and reads them.

Evaluation writes them, scoring, the annotation workspace and training read them back. A record we write:

    {"index", "prompt", "response", "model_input", "labels": {verdict key: gold}, "label", "predict",
     "input_tokens", "output_tokens", "latency_s", "finish_reason"}

``prompt``/``response`` are the user's texts; ``model_input`` is what the model read; ``label``/``predict`` are
upstream's fields, kept so upstream's evaluate.py still scores our runs. Two older shapes are still read:
upstream's own files (``prompt`` = the whole model input, one ``label``) and this project's earlier files
(``request`` = the user's text, ``labels`` keyed by the paper's task names), the latter with a one-line note.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .parser import split_upstream_prompt
from .results import (
    LEGACY_TASK_KEYS,
    PROMPT_HARMFULNESS,
    RESPONSE_HARMFULNESS,
    RESPONSE_REFUSAL,
    current_verdict_keys,
    deprecated_names,
)
from .rows import append_lines, read_jsonl

PREDICTIONS_FILE = "generated_predictions.jsonl"


@dataclass
class PredictionRow:
    benchmark: str
    line: int  # 0-based position in its file
    prompt: str
    response: str | None
    output: str
    gold: dict[str, str]  # verdict key -> gold label, for the verdicts the benchmark labels


def upstream_label(labels: dict[str, str | None]) -> str:
    """Upstream's single ``label`` field: the label itself where one verdict is labelled, else all as JSON."""
    stated = [label for label in labels.values() if label is not None]
    return stated[0] if len(labels) == 1 and stated else json.dumps(labels)


def prediction_record(index: int, prompt: str, response: str | None, labels: dict[str, str | None], output: str,
                      *, model_input: str = "", result=None, latency_s: float | None = None) -> dict:
    """One line of a prediction file; ``result`` (a GuardResult) adds its token counts and timing."""
    record = {"index": index, "prompt": prompt, "response": response, "model_input": model_input,
              "labels": labels, "label": upstream_label(labels), "predict": output}
    if result is not None:
        record.update(input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                      latency_s=result.latency_s, finish_reason=result.finish_reason)
    elif latency_s is not None:
        record["latency_s"] = latency_s
    return record


def append_predictions(path: str | Path, records: list[dict]) -> None:
    """Append records to a prediction file, synced: an interrupted run loses at most what was in flight."""
    append_lines(path, [json.dumps(record, ensure_ascii=False) for record in records])


def user_texts(record: dict, where: str = "a prediction file") -> tuple[str, str | None] | None:
    """(prompt, response) of a record in any of the three shapes; None when the record does not say."""
    if "model_input" in record:
        return record["prompt"], record.get("response")
    if "request" in record:
        deprecated_names(where, "request", "prompt")
        return record["request"], record.get("response")
    try:
        return split_upstream_prompt(record.get("prompt") or "")
    except ValueError:
        return None


def gold_of(record: dict, response: str | None, where: str = "a prediction file") -> dict[str, str]:
    if isinstance(record.get("labels"), dict):
        labels = current_verdict_keys(record["labels"], LEGACY_TASK_KEYS, where)
        return {key: label for key, label in labels.items() if label is not None}
    label = str(record.get("label", "")).strip().lower()
    if label in ("refusal", "compliance"):
        return {RESPONSE_REFUSAL: label}
    if label in ("harmful", "unharmful"):
        # Upstream's files: a harm label answers the reply where there is one (true of every upstream
        # benchmark file, whose prompt-task rows have no reply).
        return {RESPONSE_HARMFULNESS if response is not None else PROMPT_HARMFULNESS: label}
    return {}


def read_predictions(path: str | Path, benchmark: str | None = None) -> list[PredictionRow]:
    path = Path(path)
    rows = []
    for line, record in enumerate(read_jsonl(path)):
        texts = user_texts(record, str(path))
        if texts is None:
            raise ValueError(f"{path}: line {line + 1} has neither the user's texts nor a GuardReasoner input")
        prompt, response = texts
        rows.append(PredictionRow(benchmark or path.parent.name, line, prompt, response, record["predict"],
                                  gold_of(record, response, str(path))))
    return rows


def read_run(run: str | Path) -> list[PredictionRow]:
    """Every benchmark's rows in a run folder, benchmarks in name order."""
    return [row for path in sorted(Path(run).glob(f"*/{PREDICTIONS_FILE}")) for row in read_predictions(path)]
