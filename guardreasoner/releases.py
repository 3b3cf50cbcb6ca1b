"""Which encoder-screen release is served: the pointer ``python -m training.loop`` moves, read the one way.

A releases folder holds ``vNNNN/screen/`` folders and a one-line ``current`` file naming the version served;
the loop replaces that file whole (``os.replace``) when it ships or rolls back, so a reader sees the old name or
the new one. Serving looks its screen up through ``served_release`` and compares ``stamp`` to notice a move
without reading the folder again (the inode changes even where two moves share a clock tick).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import GuardReasonerError

POINTER = "current"
RELEASES_ENV = "GUARDREASONER_RELEASES"


class ReleaseError(GuardReasonerError, ValueError):
    """A releases folder that cannot be read or moved as asked; the message says what is wrong."""


@dataclass(frozen=True)
class ServedRelease:
    version: str
    screen: Path  # the screen folder load_screen reads
    stamp: tuple[int, int]  # the pointer's inode and mtime: a move replaces the file, so both change


def served_release(root: str | Path | None = None) -> ServedRelease | None:
    """The release the pointer in ``root`` (default ``$GUARDREASONER_RELEASES``) names; None where no root is
    given or nothing is served there yet. A pointer naming a missing release is an error."""
    root = root or os.environ.get(RELEASES_ENV)
    if not root:
        return None
    pointer = Path(root) / POINTER
    try:
        status = pointer.stat()
        version = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    screen = Path(root) / version / "screen"
    if not version or not (Path(root) / version / "release.json").is_file() or not screen.is_dir():
        raise ReleaseError(f"{pointer} names {version!r}, which is no complete release in {root}")
    return ServedRelease(version, screen, (status.st_ino, status.st_mtime_ns))
