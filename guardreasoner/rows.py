"""Rows to classify from JSONL or CSV, each with its line number; bad rows become errors, not exceptions."""

from __future__ import annotations

import csv
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    line: int  # 1-based line in the file (for CSV, the line where the record starts)
    prompt: str
    response: str | None
    extra: dict  # other columns, carried into the output (ids, gold labels)


@dataclass
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def _check(line: int, record) -> Row | RowError:
    if not isinstance(record, dict):
        return RowError(line, "expected an object with a 'prompt' field")
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return RowError(line, "missing or empty 'prompt'")
    response = record.get("response")
    if response is not None and not isinstance(response, str):
        return RowError(line, f"'response' must be text, got {type(response).__name__}")
    extra = {k: v for k, v in record.items() if k not in ("prompt", "response")}
    return Row(line, prompt, response or None, extra)


def leading_comments(path: str | Path) -> list[str]:
    """The ``#`` lines a file opens with (a policy's ``# description: ...``), without their ``#``."""
    comments = []
    with Path(path).open(encoding="utf-8") as handle:
        for text in handle:
            if not text.startswith("#"):
                break
            comments.append(text[1:].strip())
    return comments


def read_rows(path: str | Path) -> Iterator[Row | RowError]:
    """Yield a Row or RowError per record of a .jsonl/.json-lines or .csv file (with a header row). Lines starting
    with ``#`` at the top of the file are comments (line numbers still count them)."""
    path = Path(path)
    skipped = len(leading_comments(path))
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            for _ in range(skipped):
                handle.readline()
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "prompt" not in reader.fieldnames:
                yield RowError(skipped + 1, f"the CSV header needs a 'prompt' column; found {reader.fieldnames}")
                return
            start = skipped + reader.line_num + 1
            for record in reader:
                if None in record:
                    yield RowError(start, "more fields than the header names")
                else:
                    yield _check(start, record)
                start = skipped + reader.line_num + 1
        return
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip() or number <= skipped:
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                yield RowError(number, f"invalid JSON ({error.msg} at column {error.colno})")
                continue
            yield _check(number, record)


def split_rows(path: str | Path) -> tuple[list[Row], list[RowError]]:
    """The readable rows of a file and the errors of the others, each in file order."""
    rows: list[Row] = []
    errors: list[RowError] = []
    for row in read_rows(path):
        (errors if isinstance(row, RowError) else rows).append(row)
    return rows, errors


def classify_rows(guard, rows: list[Row], batch_size: int) -> Iterator[list[dict]]:
    """Classify rows in batches; yield each batch's records: its line, its other columns, and the result."""
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        results = guard.classify([{"prompt": row.prompt, "response": row.response} for row in batch])
        yield [{"line": row.line, **row.extra, **result.to_dict()} for row, result in zip(batch, results)]


def seeded_sample(items: list, size: int | None, seed: int = 0) -> list:
    """A seeded random ``size`` of ``items``, kept in their order (all of them when there are no more than
    ``size``, or ``size`` is None): the same seed picks the same positions, so every model is evaluated, and every
    screen trained, on the same rows, and a run resumes cleanly."""
    if size is None or len(items) <= size:
        return list(items)
    chosen = set(random.Random(seed).sample(range(len(items)), size))
    return [item for position, item in enumerate(items) if position in chosen]


def read_jsonl(path: str | Path) -> list[dict]:
    """Every record of a JSONL file; a bad line raises ValueError with its number.

    Lines are split on "\n" only: ``str.splitlines`` would also split on U+2028 and other separators that
    JSON strings may hold unescaped (real model outputs do)."""
    path = Path(path)
    records = []
    with path.open(encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
    return records


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    """Write records as a JSONL file (its folder made if needed), text kept as written rather than escaped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def append_lines(path: str | Path, lines: list[str]) -> None:
    """Append lines and sync them to disk before returning: a record said to be saved survives a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())


def trim_partial_line(path: str | Path) -> None:
    """Cut a last line left half-written by an interruption, so records appended next start on their own line."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def done_lines(output: str | Path, key: str = "line") -> set[int]:
    """The ``key`` of every record already in the JSONL ``output``, so an interrupted run resumes after them.

    A last line cut off mid-write (the interruption) is removed from the file, so records appended next start
    on a line of their own, and that row is redone."""
    path = Path(output)
    done: set[int] = set()
    if not path.exists():
        return done
    trim_partial_line(path)
    with path.open(encoding="utf-8") as handle:
        for text in handle:
            try:
                done.add(int(json.loads(text)[key]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
    return done
