"""The local flag queue: every flag a person raises in the app is appended here, so nothing is lost.

One JSON object per line; the annotation workspace (annotate/) reads this file and pushes it to Argilla. When
ARGILLA_API_URL is set the app runs that push right after each flag, as a separate process (the app and the
annotation workspace share only this file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from guardreasoner.records import FlagRecord, PushReport
from guardreasoner.rows import append_lines, read_jsonl

QUEUE_ENV = "GUARDREASONER_FLAG_QUEUE"
DEFAULT_QUEUE = Path("flagged") / "queue.jsonl"
CHECKOUT = Path(__file__).resolve().parents[1]


def queue_path() -> Path:
    return Path(os.environ.get(QUEUE_ENV, DEFAULT_QUEUE))


def make_flag(result: dict, corrected: dict[str, str | None], comment: str) -> FlagRecord:
    return FlagRecord.for_result(result, corrected, comment)


def append_flag(flag: FlagRecord, path: Path | None = None) -> Path:
    path = path or queue_path()
    append_lines(path, [json.dumps(flag.to_dict(), ensure_ascii=False)])
    return path


def read_queue(path: Path | None = None) -> list[FlagRecord]:
    path = path or queue_path()
    if not path.exists():
        return []
    return [FlagRecord.from_dict(record, str(path)) for record in read_jsonl(path)]


def deliver_to_argilla(queue: Path, timeout: float = 90.0) -> str | None:
    """Push the queue with ``python -m annotate push``; a sentence for the person who flagged, or None when
    no Argilla server is configured. An unreachable server leaves the flag in annotate's outbox for later."""
    if not os.environ.get("ARGILLA_API_URL"):
        return None
    # annotate/ is not installed (only the guardreasoner library is): find it beside webapp/ whatever the cwd.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="guard-push-") as folder:
        report_file = Path(folder) / "push.json"
        try:
            done = subprocess.run([sys.executable, "-m", "annotate", "push", "--flags", str(queue),
                                   "--report", str(report_file)],
                                  capture_output=True, text=True, timeout=timeout, env=env, check=False)
        except subprocess.TimeoutExpired:
            return "Argilla did not answer in time; the flag waits in the outbox for the next push."
        if not report_file.is_file():
            return f"Pushing to Argilla failed: {(done.stderr or done.stdout).strip()[-300:]}"
        report = PushReport.from_dict(json.loads(report_file.read_text(encoding="utf-8")))
    if report.error:
        return f"Argilla unreachable: {report.pending} flag(s) kept in the outbox for the next push."
    return f"Sent to Argilla ({report.delivered} record(s) delivered)."
