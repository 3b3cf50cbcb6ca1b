"""The local flag queue: every flag a person raises in the app is appended here, so nothing is lost.

One JSON object per line; the annotation workspace (annotate/) reads this file and pushes it to Argilla.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path

QUEUE_ENV = "GUARDREASONER_FLAG_QUEUE"
DEFAULT_QUEUE = Path("flagged") / "queue.jsonl"


def queue_path() -> Path:
    return Path(os.environ.get(QUEUE_ENV, DEFAULT_QUEUE))


def flag_id(request: str, response: str | None, output: str) -> str:
    """Stable id from the content, so flagging the same result twice names the same record."""
    digest = hashlib.sha256(json.dumps([request, response, output]).encode()).hexdigest()
    return f"flag-{digest[:16]}"


def make_flag(result: dict, corrected: dict[str, str | None], comment: str) -> dict:
    return {
        "id": flag_id(result["prompt"], result.get("response"), result.get("output", "")),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": "app_flag",
        "model": result.get("model"),
        "request": result["prompt"],
        "response": result.get("response"),
        "output": result.get("output", ""),
        "model_verdicts": result.get("verdicts", {}),
        "corrected": corrected,
        "comment": comment or "",
    }


def append_flag(flag: dict, path: Path | None = None) -> Path:
    path = path or queue_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(flag, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return path


def read_queue(path: Path | None = None) -> list[dict]:
    path = path or queue_path()
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
