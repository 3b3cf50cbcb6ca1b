"""The loop's state folder: the lock that keeps two loops apart, the rounds ledger and the corrections ledger.

    STATE/loop.lock          held (flock) while a round or a rollback runs; names the holder's pid
    STATE/rounds.jsonl       one line per finished round: its outcome and the fingerprints of the inputs it used
    STATE/corrections.jsonl  every correction ever accepted (append-only; the last record of an item wins,
                             except that a flag never replaces a reviewed correction): the regression set
    STATE/rounds/r0001/      a round's working files (features cache, candidate screen, DPO pairs, report)
    STATE/features/          the frozen encoder body's last-layer means, cached by item

Both ledgers are appended with fsync, and a round writes its ledger line last: a round killed half-way has
consumed nothing, and the next run sees its inputs as new again.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from guardreasoner.errors import GuardReasonerError
from guardreasoner.rows import append_lines, read_jsonl, trim_partial_line

DEFAULT_STATE = Path("runs") / "loop"
STATE_ENV = "GUARDREASONER_LOOP_STATE"
# Outcomes whose inputs count as used: a refused round's inputs stay in the corrections ledger (and so in every
# later training set and regression check), so running it again would only repeat the refusal.
CONSUMING = ("shipped", "refused", "nothing-to-learn")


class LoopBusy(GuardReasonerError, RuntimeError):
    """Another loop (a round or a rollback) holds the state folder's lock."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_state() -> Path:
    return Path(os.environ.get(STATE_ENV, DEFAULT_STATE))


@dataclass
class LoopState:
    root: Path

    @property
    def rounds_file(self) -> Path:
        return self.root / "rounds.jsonl"

    @property
    def corrections_file(self) -> Path:
        return self.root / "corrections.jsonl"

    @property
    def lock_file(self) -> Path:
        return self.root / "loop.lock"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    def rounds(self) -> list[dict]:
        return _records(self.rounds_file)

    def next_round(self) -> int:
        return max((entry["round"] for entry in self.rounds()), default=0) + 1

    def round_dir(self, number: int) -> Path:
        return self.root / "rounds" / f"r{number:04d}"

    def used_inputs(self) -> set[str]:
        """Fingerprints of every input an earlier round used (flags and reviews, as collect names them)."""
        return {fingerprint for entry in self.rounds() if entry.get("outcome") in CONSUMING
                for fingerprint in entry.get("inputs", [])}

    def record_round(self, entry: dict) -> None:
        trim_partial_line(self.rounds_file)
        append_lines(self.rounds_file, [json.dumps(entry, ensure_ascii=False)])

    def correction_records(self) -> list[dict]:
        return _records(self.corrections_file)

    def add_corrections(self, records: list[dict]) -> None:
        if records:
            trim_partial_line(self.corrections_file)
            append_lines(self.corrections_file, [json.dumps(record, ensure_ascii=False) for record in records])


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    trim_partial_line(path)
    return read_jsonl(path)


class Lock:
    """An exclusive flock on ``STATE/loop.lock``: released by the kernel when its holder exits, so a crashed loop
    never leaves a lock that blocks the next one. A second holder is refused at once (no waiting)."""

    def __init__(self, state: LoopState):
        self.path = state.lock_file
        self.handle = None

    def __enter__(self) -> Lock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LoopBusy(f"{self.path}: another loop is running ({holder}); wait for it to finish") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {now()}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        self.handle.seek(0)
        self.handle.truncate()
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None
