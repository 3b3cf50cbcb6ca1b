"""Batch checks of an uploaded CSV or JSONL: good rows are classified, bad rows are listed by line number."""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from guardreasoner.results import VERDICT_KEYS
from guardreasoner.rows import RowError, classify_rows, split_rows

TABLE_COLUMNS = ["line", "prompt", "response", "prompt harmful", "reply refusal", "reply harmful", "status"]


@dataclass
class BatchOutcome:
    records: list[dict] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    jsonl: Path | None = None
    csv: Path | None = None

    def table(self) -> list[list]:
        def short(text):
            return (text[:80] + "…") if text and len(text) > 80 else (text or "")

        return [[r["line"], short(r["prompt"]), short(r["response"]), *(r["labels"][key] for key in VERDICT_KEYS),
                 r["status"]] for r in self.records]


def check_file(guard, path: str | Path, *, chunk: int = 8,
               on_progress: Callable[[int, int], None] | None = None) -> BatchOutcome:
    """Classify every valid row of ``path``; ``on_progress(done, total)`` after each chunk."""
    rows, errors = split_rows(path)
    outcome = BatchOutcome(errors=errors)
    for records in classify_rows(guard, rows, chunk):
        outcome.records.extend(records)
        if on_progress:
            on_progress(len(outcome.records), len(rows))
    folder = Path(tempfile.mkdtemp(prefix="guard-batch-"))
    outcome.jsonl = folder / "results.jsonl"
    outcome.jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in outcome.records))
    outcome.csv = folder / "results.csv"
    with outcome.csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "prompt", "response", *VERDICT_KEYS, "status", "is_harmful", "fail_closed"])
        for r in outcome.records:
            writer.writerow([r["line"], r["prompt"], r["response"] or "", *(r["labels"][key] or "" for key in VERDICT_KEYS),
                             r["status"], r["is_harmful"], r["fail_closed"]])
    return outcome
