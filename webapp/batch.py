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

# Verdicts first, so that a narrow screen shows them before the long texts.
TABLE_COLUMNS = ["line", "prompt harmful", "response refusal", "response harmful", "status", "prompt", "response"]
COLUMN_WIDTHS = ["64px", "130px", "150px", "150px", "110px", "320px", "320px"]


@dataclass
class BatchOutcome:
    records: list[dict] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    total: int = 0  # valid rows in the file
    jsonl: Path | None = None
    csv: Path | None = None

    def table(self) -> list[list]:
        def short(text):
            return (text[:80] + "…") if text and len(text) > 80 else (text or "")

        return [[r["line"], *(r["labels"][key] or "n/a" for key in VERDICT_KEYS), r["status"], short(r["prompt"]),
                 short(r["response"])] for r in self.records]

    def downloads(self) -> list[str] | None:
        """The result files, written for the rows checked so far; None when there is nothing to download."""
        if not self.records:
            return None
        self.write_files()
        return [str(self.jsonl), str(self.csv)]

    def write_files(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="guard-batch-"))
        self.jsonl = folder / "results.jsonl"
        self.jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records))
        self.csv = folder / "results.csv"
        with self.csv.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["line", "prompt", "response", *VERDICT_KEYS, "status", "is_harmful", "fail_closed"])
            for r in self.records:
                writer.writerow([r["line"], r["prompt"], r["response"] or "",
                                 *(r["labels"][key] or "" for key in VERDICT_KEYS),
                                 r["status"], r["is_harmful"], r["fail_closed"]])


def check_file(guard, path: str | Path, *, chunk: int = 8,
               on_progress: Callable[[int, int], None] | None = None) -> BatchOutcome:
    """Classify every valid row of ``path``; ``on_progress(done, total)`` after each chunk."""
    rows, errors = split_rows(path)
    outcome = BatchOutcome(errors=errors, total=len(rows))
    for records in classify_rows(guard, rows, chunk):
        outcome.records.extend(records)
        if on_progress:
            on_progress(len(outcome.records), outcome.total)
    if outcome.records:
        outcome.write_files()
    return outcome


def progress_message(outcome: BatchOutcome, state: str, reason: str | None = None) -> str:
    """What the Batch tab says: rows checked so far (``state`` running, done, stopped, or aborted for
    ``reason``) and the bad rows."""
    done, total = len(outcome.records), outcome.total
    kept = "; the rows checked so far are ready to download." if done else "."
    text = {"running": f"Checking… {done} of {total} rows done.",
            "done": f"{done} rows checked.",
            "stopped": f"Stopped after {done} of {total} rows{kept}",
            "aborted": f"Stopped after {done} of {total} rows: {reason}{kept}"}[state]
    if outcome.errors:
        listed = "\n".join(f"- {error}" for error in outcome.errors)
        text += f" {len(outcome.errors)} rows could not be read and were skipped:\n{listed}"
    if state == "done" and not total:
        text = "No row could be checked, so there is nothing to download." + text[len(f"{done} rows checked."):]
    return text
