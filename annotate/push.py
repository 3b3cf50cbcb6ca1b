"""Push items to Argilla through a local outbox, so that nothing is lost while the server is unreachable.

Every pushed item is first appended (fsynced) to the outbox; delivery then sends the items not yet recorded in
``<outbox>.delivered`` and records each batch once the server has accepted it. A failed delivery leaves the
items in the outbox, and the next push delivers them. Records are upserted by their content id, so even a batch
sent twice (accepted, then the machine died before recording it) leaves one record.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from guardreasoner.records import PushReport
from guardreasoner.rows import append_lines, read_jsonl, trim_partial_line

from .workspace import POLICY, OutdatedDataset, Target, check_takes_policies, dataset, to_record

logger = logging.getLogger(__name__)

OUTBOX_ENV = "ANNOTATE_OUTBOX"
DEFAULT_OUTBOX = Path("flagged") / "outbox.jsonl"


def outbox_path() -> Path:
    return Path(os.environ.get(OUTBOX_ENV, DEFAULT_OUTBOX))




def _read(path: Path) -> list[dict]:
    trim_partial_line(path)
    return read_jsonl(path) if path.exists() else []


def _delivered_ids(outbox: Path) -> set[str]:
    path = Path(str(outbox) + ".delivered")
    trim_partial_line(path)
    return set(path.read_text(encoding="utf-8").split()) if path.exists() else set()


def enqueue(items: list[dict], outbox: Path | None = None) -> int:
    outbox = outbox or outbox_path()
    known = {item["id"] for item in _read(outbox)}
    new = [item for item in {item["id"]: item for item in items}.values() if item["id"] not in known]
    append_lines(outbox, [json.dumps(item, ensure_ascii=False) for item in new])
    return len(new)


def pending(outbox: Path | None = None) -> list[dict]:
    outbox = outbox or outbox_path()
    delivered = _delivered_ids(outbox)
    return [item for item in _read(outbox) if item["id"] not in delivered]


def deliver(target: Target, outbox: Path | None = None, batch_size: int = 100) -> int:
    """Send what the outbox holds and the ledger lacks; returns how many were sent. Raises when unreachable, and
    OutdatedDataset (nothing sent) where an item names a policy and the dataset predates policies."""
    outbox = outbox or outbox_path()
    todo = pending(outbox)
    if not todo:
        return 0
    found = dataset(target)
    if any(item["metadata"].get(POLICY) for item in todo):
        check_takes_policies(found, target.dataset)
    records = found.records
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        records.log([to_record(item) for item in batch])
        append_lines(Path(str(outbox) + ".delivered"), [item["id"] for item in batch])
    return len(todo)


def push(items: list[dict], target: Target | None = None, outbox: Path | None = None) -> PushReport:
    target = target or Target()
    outbox = outbox or outbox_path()
    queued = enqueue(items, outbox)
    try:
        delivered = deliver(target, outbox)
    except OutdatedDataset as error:  # reachable, but nothing will fit until the dataset is replaced
        logger.warning("%s (%d item(s) kept in %s)", error, len(pending(outbox)), outbox)
        return PushReport(queued, 0, len(pending(outbox)), f"{type(error).__name__}: {error}")
    except Exception as error:  # noqa: BLE001 - any failure to reach Argilla keeps the items for the next push
        logger.warning("Argilla unreachable (%s); %d item(s) kept in %s for the next push",
                       error, len(pending(outbox)), outbox)
        return PushReport(queued, 0, len(pending(outbox)), f"{type(error).__name__}: {error}")
    return PushReport(queued, delivered, 0)
