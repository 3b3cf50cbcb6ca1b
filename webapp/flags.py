"""The local flag queue: every flag a person raises in the app is appended here, so nothing is lost.

One JSON object per line; the annotation workspace (annotate/) reads this file and pushes it to Argilla. When
ARGILLA_API_URL is set the app runs that push right after each flag, as a separate process (the app and the
annotation workspace share only this file). The file is append-only: flagging the same result again appends a
newer record with the same id, and readers keep the last record per id (``records.latest_flags``).

Where the queue lives: GUARDREASONER_FLAG_QUEUE when set; else under the persistent storage a Hugging Face Space
mounts at /data (GUARDREASONER_PERSISTENT_ROOT names another root), when it exists; else ``flagged/`` in the
working folder, which a Space loses at every restart (the Flag status says so).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from guardreasoner.records import FlagRecord, PushReport, latest_flags
from guardreasoner.results import LABELS, PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL
from guardreasoner.rows import append_lines, read_jsonl

QUEUE_ENV = "GUARDREASONER_FLAG_QUEUE"
DEFAULT_QUEUE = Path("flagged") / "queue.jsonl"
CHECKOUT = Path(__file__).resolve().parents[1]


PERSISTENT_ROOT_ENV = "GUARDREASONER_PERSISTENT_ROOT"
SPACE_PERSISTENT_ROOT = "/data"
PLAIN_VERDICTS = {PROMPT_HARMFULNESS: "the prompt should be {}", RESPONSE_REFUSAL: "the response should be a {}",
                  RESPONSE_HARMFULNESS: "the response should be {}"}


def persistent_root() -> Path | None:
    root = Path(os.environ.get(PERSISTENT_ROOT_ENV, SPACE_PERSISTENT_ROOT))
    return root if root.is_dir() and os.access(root, os.W_OK) else None


def queue_path() -> Path:
    if os.environ.get(QUEUE_ENV):
        return Path(os.environ[QUEUE_ENV])
    root = persistent_root()
    return root / DEFAULT_QUEUE if root else DEFAULT_QUEUE


def on_a_space() -> bool:
    return bool(os.environ.get("SPACE_ID"))  # set by Hugging Face in every Space


def record_flag(flag: FlagRecord, path: Path | None = None) -> tuple[Path, bool]:
    """Append the flag; also say whether it updates an earlier flag of the same result."""
    path = path or queue_path()
    updated = any(earlier.id == flag.id for earlier in read_queue(path))
    return append_flag(flag, path), updated


def what_was_recorded(flag: FlagRecord, updated: bool) -> str:
    """"Recorded: the prompt should be unharmful." in words a visitor reads, no ids or paths."""
    said = [PLAIN_VERDICTS[key].format(label) for key, label in flag.corrected.items() if label in LABELS.get(key, ())]
    if flag.policy:
        said.append(f"for the policy {flag.policy} the item is {flag.policy_label}")
    text = "; ".join(said) or "no label chosen"
    if flag.comment:
        text += f' (comment: "{flag.comment}")'
    return ("Updated your earlier flag of this result: " if updated else "Recorded: ") + text + "."


def where_it_goes(path: Path) -> str:
    if os.environ.get("ARGILLA_API_URL"):
        return "It goes to the reviewers' Argilla workspace."
    root = persistent_root()
    if root and path.resolve().is_relative_to(root.resolve()):
        return "It waits for the reviewers in this Space's persistent storage."
    if on_a_space():
        return ("Flags are kept only until this Space restarts: to keep them, its owner sets ARGILLA_API_URL "
                "(and ARGILLA_API_KEY) to send them to Argilla, or turns on persistent storage (/data).")
    return "It waits for the reviewers in this server's review queue."


def make_flag(result: dict, corrected: dict[str, str | None], comment: str, *, policy: str | None = None,
              policy_label: str | None = None) -> FlagRecord:
    """A flag of a result; with ``policy``, the label the item should get for that policy, which
    ``python -m guardreasoner policy fit NAME --flags QUEUE`` (and the Policies tab's Fit) then learns from."""
    return replace(FlagRecord.for_result(result, corrected, comment), policy=policy, policy_label=policy_label)


def append_flag(flag: FlagRecord, path: Path | None = None) -> Path:
    path = path or queue_path()
    append_lines(path, [json.dumps(flag.to_dict(), ensure_ascii=False)])
    return path


def read_queue(path: Path | None = None) -> list[FlagRecord]:
    path = path or queue_path()
    if not path.exists():
        return []
    return latest_flags([FlagRecord.from_dict(record, str(path)) for record in read_jsonl(path)])


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
    if report.error and report.error.startswith("OutdatedDataset"):  # reachable, but the dataset is too old
        return f"Not sent to Argilla: {report.error.split(': ', 1)[1]}."
    if report.error:
        return f"Argilla unreachable: {report.pending} flag(s) kept in the outbox for the next push."
    return f"Sent to Argilla ({report.delivered} record(s) delivered)."
