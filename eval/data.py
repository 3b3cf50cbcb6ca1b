"""Benchmark rows and gold labels from the GuardReasoner benchmark format, and run folders (ours or upstream's)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from guardreasoner.parser import split_upstream_prompt
from guardreasoner.predictions import PREDICTIONS_FILE, Prediction
from guardreasoner.results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL
from stagekit.label_specs import read_label

from .registry import BENCHMARKS, CELLS, LABEL_COLUMNS, canonical_name

logger = logging.getLogger("eval")
# How upstream reads a gold label out of an Answers block (evaluate.py, process_label=True).
ANSWER_PATTERNS = {
    PROMPT_HARMFULNESS: re.compile(r"Request:\s*(harmful|unharmful)", re.IGNORECASE),
    RESPONSE_HARMFULNESS: re.compile(r"Response:\s*(harmful|unharmful)", re.IGNORECASE),
    RESPONSE_REFUSAL: re.compile(r"Completion:\s*(compliance|refusal)", re.IGNORECASE),
}


@dataclass
class EvalRow:
    index: int
    prompt: str
    response: str | None
    labels: dict[str, str | None] = field(default_factory=dict)  # verdict key -> gold label (None: unlabelled)


def tasks_of(benchmark: str) -> list[str]:
    return [cell.task for cell in CELLS if cell.benchmark == benchmark]


def gold_from_answers(text: str, task: str) -> str | None:
    match = ANSWER_PATTERNS[task].search(text or "")
    return match.group(1) if match else None


def _labels(benchmark: str, record: dict) -> dict[str, str | None]:
    source = BENCHMARKS[benchmark].label_source
    labels = {}
    for task in tasks_of(benchmark):
        if source == "columns":
            labels[task] = record.get(LABEL_COLUMNS[task])
        elif source == "answers":
            labels[task] = gold_from_answers(record["output"], task)
        else:
            labels[task] = record["output"]
    return labels


def load_from_hub(benchmark: str) -> list[EvalRow]:
    """The benchmark's rows from its public hub dataset (needs the hub, and for gated sets a login)."""
    source = BENCHMARKS[benchmark].hub
    if source is None:
        raise FileNotFoundError(
            f"{benchmark}: the paper's rows are a subset with no public hub source; "
            "pass --data-dir with the GuardReasoner benchmark files"
        )
    from datasets import load_dataset

    data = load_dataset(source.repo, source.config, split=source.split)
    prompt_column = next((c for c in source.prompt if c in data.column_names), None)
    if prompt_column is None:
        raise ValueError(f"{benchmark}: {source.repo} has none of the columns {source.prompt}; "
                         f"found {data.column_names}")
    if source.rows is not None and len(data) != source.rows:
        logger.warning("%s: %s [%s] has %d rows, the paper used %d: figures are not comparable with the paper's",
                       benchmark, source.repo, source.split, len(data), source.rows)
    rows = []
    for index, record in enumerate(data):
        response = record.get(source.response) if source.response else None
        labels = {task: read_label(record, spec, task) for task, spec in source.labels}
        rows.append(EvalRow(index, record[prompt_column], response or None, labels))
    return rows


def load_benchmark(benchmark: str, data_dir: str | Path | None) -> list[EvalRow]:
    """Rows of one benchmark with their gold labels per task: from the GuardReasoner benchmark file under
    ``data_dir``, or (``data_dir`` None) from the public hub dataset."""
    if data_dir is None:
        return load_from_hub(benchmark)
    path = Path(data_dir) / BENCHMARKS[benchmark].file
    if not path.is_file():
        raise FileNotFoundError(f"{benchmark}: {path} not found (is --data-dir the GuardReasoner benchmark folder?)")
    rows = []
    for index, record in enumerate(json.loads(path.read_text(encoding="utf-8"))):
        prompt, response = split_upstream_prompt(record["input"])
        rows.append(EvalRow(index, prompt, response, _labels(benchmark, record)))
    return rows


def find_run_folder(run: Path, benchmark: str) -> Path | None:
    """The folder of ``benchmark`` in a run, under its canonical name or one of upstream's spellings."""
    for name in (benchmark, *BENCHMARKS[benchmark].folder_aliases):
        if (run / name / PREDICTIONS_FILE).is_file():
            return run / name
    return None


def gold_labels(benchmark: str, task: str, rows: list[Prediction], data_dir: Path | None) -> list[str | None]:
    """Gold labels for prediction rows: our runs store them per task; upstream folders need the label field
    (or, for WildGuardTest, the benchmark file's label columns by row position, as upstream does)."""
    if all(row.labels is not None for row in rows):
        return [row.labels.get(task) for row in rows]
    source = BENCHMARKS[benchmark].label_source
    if source == "output":
        return [row.label for row in rows]
    if source == "answers":
        return [gold_from_answers(row.label, task) for row in rows]
    if data_dir is None:
        raise FileNotFoundError(f"{benchmark} labels come from the benchmark file: pass --data-dir")
    benchmark_rows = load_benchmark(benchmark, data_dir)
    return [benchmark_rows[i].labels[task] if i < len(benchmark_rows) else None for i in range(len(rows))]


__all__ = ["EvalRow", "PREDICTIONS_FILE", "canonical_name", "find_run_folder", "gold_labels", "load_benchmark",
           "tasks_of"]
