"""Batch checks of an uploaded CSV or JSONL: good rows are classified, bad rows are listed by line number."""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from guardreasoner.results import VERDICT_KEYS
from guardreasoner.rows import RowError, classify_rows, split_rows

# Verdicts first, so that a narrow screen shows them before the long texts; a column per policy follows them.
TABLE_COLUMNS = ["line", "prompt harmful", "response refusal", "response harmful", "status", "prompt", "response"]
COLUMN_WIDTHS = ["64px", "130px", "150px", "150px", "110px", "320px", "320px"]
VERDICT_COLUMNS = 4  # line and the three verdicts: the policy columns go after them
POLICY_WIDTH = "170px"


@dataclass
class BatchOutcome:
    records: list[dict] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    total: int = 0  # valid rows in the file
    jsonl: Path | None = None
    csv: Path | None = None

    def policy_names(self) -> list[str]:
        """The policies the rows were answered for, in the order they first appear."""
        names = {}
        for record in self.records:
            names.update(dict.fromkeys(record.get("categories") or {}))
        return list(names)

    def headers(self) -> list[str]:
        return [*TABLE_COLUMNS[:VERDICT_COLUMNS], *self.policy_names(), *TABLE_COLUMNS[VERDICT_COLUMNS:]]

    def table(self) -> list[list]:
        """A row per record, in ``headers()`` order; a policy's cell is its label and p (``positive 0.93``)."""
        def short(text):
            return (text[:80] + "…") if text and len(text) > 80 else (text or "")

        def policy_cell(record, name):
            category = (record.get("categories") or {}).get(name) or {}
            p = category.get("p")
            return " ".join(filter(None, [category.get("label") or "n/a", f"{p:.2f}" if p is not None else ""]))

        names = self.policy_names()
        return [[r["line"], *(r["labels"][key] or "n/a" for key in VERDICT_KEYS), *(policy_cell(r, n) for n in names),
                 r["status"], short(r["prompt"]), short(r["response"])] for r in self.records]

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
            names = self.policy_names()  # per policy its label, then its p (the JSONL has the whole category)
            writer.writerow(["line", "prompt", "response", *VERDICT_KEYS, "status", "is_harmful", "fail_closed",
                             *(column for name in names for column in (name, f"{name}_p"))])
            for r in self.records:
                categories = [(r.get("categories") or {}).get(name) or {} for name in names]
                writer.writerow([r["line"], r["prompt"], r["response"] or "",
                                 *(r["labels"][key] or "" for key in VERDICT_KEYS),
                                 r["status"], r["is_harmful"], r["fail_closed"],
                                 *(value for category in categories
                                   for value in (category.get("label") or "", category.get("p", "")))])


def table_update(outcome: BatchOutcome):
    """The Batch table: its headers follow the policies the rows were answered for, and so do its widths."""
    names = outcome.policy_names()
    widths = [*COLUMN_WIDTHS[:VERDICT_COLUMNS], *[POLICY_WIDTH] * len(names), *COLUMN_WIDTHS[VERDICT_COLUMNS:]]
    return gr.update(value={"headers": outcome.headers(), "data": outcome.table()}, column_widths=widths)


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
