"""Which encoder-screen release is served: the pointer ``python -m training.loop`` moves, read the one way.

A releases folder holds ``vNNNN/screen/`` folders (and ``vNNNN/policies/NAME/``, the custom policies the loop
refitted from reviewers' corrections) and a one-line ``current`` file naming the version served;
the loop replaces that file whole (``os.replace``) when it ships or rolls back, so a reader sees the old name or
the new one. Serving looks its screen up through ``served_release`` and compares ``stamp`` to notice a move
without reading the folder again (the inode changes even where two moves share a clock tick).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GuardReasonerError

logger = logging.getLogger("guardreasoner")
POINTER = "current"
RELEASES_ENV = "GUARDREASONER_RELEASES"


class ReleaseError(GuardReasonerError, ValueError):
    """A releases folder that cannot be read or moved as asked; the message says what is wrong."""


@dataclass(frozen=True)
class ServedRelease:
    version: str
    screen: Path  # the screen folder load_screen reads
    stamp: tuple[int, int]  # the pointer's inode and mtime: a move replaces the file, so both change
    policies: dict[str, Path] = field(default_factory=dict)  # name -> policy folder the loop refitted


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
    return ServedRelease(version, screen, (status.st_ino, status.st_mtime_ns), release_policies(Path(root) / version))


def release_policies(release: Path) -> dict[str, Path]:
    """Name -> folder of the custom policies a release folder holds (``policies/NAME``; none: {})."""
    folder = release / "policies"
    return {path.name: path for path in sorted(folder.iterdir()) if path.is_dir()} if folder.is_dir() else {}


def with_screen(guard, screen, policies: dict[str, Path] | None = None):
    """``guard`` (a ``Guard`` or a ``Cascade``) with ``screen`` in place of its own, its policies kept (they read
    the encoder's body, which a release of the loop leaves as it was: a policy fitted on another body is an
    error), nothing else loaded again. A policy the guard answers that ``policies`` (a release's refitted ones)
    also names is answered by the release's; the release adds no policy the guard was not started with. A guard
    without a screen gets it in ``full``, as ``load_guard`` gives one."""
    from .cascade import Cascade
    from .policy import PolicyScreen, load_policy

    base, reasoning = getattr(guard, "guard", guard), getattr(guard, "reasoning", "full")
    old = getattr(guard, "screen", None)
    if isinstance(old, PolicyScreen):
        heads = []
        for policy in old.policies:
            folder = (policies or {}).get(policy.name) or policy.folder
            heads.append(load_policy(folder, screen) if folder else policy)
        screen = PolicyScreen(screen, heads, old.texts)
    return Cascade(base, screen.bind(base), reasoning)


class ServedScreen:
    """The screen of the release served from ``root`` (default ``$GUARDREASONER_RELEASES``), followed without a
    restart: the pointer is checked at most every ``interval_s`` seconds (a stat), a moved pointer's screen is
    loaded once, and ``applied(guard)`` gives the guard with it. A request already running keeps the guard it
    started with; the one that notices a move loads the new screen while the others go on with the old one."""

    def __init__(self, root: str | Path | None = None, interval_s: float = 2.0, loader=None):
        from .screen import load_screen

        self.root = root or os.environ.get(RELEASES_ENV)
        self.interval_s = interval_s
        self._loader = loader or load_screen
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self.release: ServedRelease | None = None
        self.screen = None
        self._applied: dict[int, tuple] = {}  # id(guard) -> (guard, stamp, guard with the release's screen)
        self.check(force=True)

    @property
    def version(self) -> str | None:
        return self.release.version if self.release else None

    def check(self, force: bool = False) -> bool:
        """Look at the pointer (if ``interval_s`` has passed, or ``force``) and load a moved release's screen;
        True where the served release changed. A release that cannot be loaded keeps the one served, logged."""
        now = time.monotonic()
        if not self.root or (not force and now - self._checked < self.interval_s):
            return False
        if not self._lock.acquire(blocking=force):  # another request is loading it: go on with the old one
            return False
        try:
            self._checked = now
            release = served_release(self.root)
            if release is None or (self.release and release.stamp == self.release.stamp):
                return False
            if self.release and release.version == self.release.version:
                self.release = release  # the pointer was rewritten naming the same release
                return False
            try:
                screen = self._loader(release.screen)
            except Exception as error:  # whatever breaks a release (a card, torn weights), the served one stays
                logger.error("release %s cannot be served (%s); %s stays", release.version, error, self.version)
                return False
            self.release, self.screen = release, screen
            logger.info("serving the screen of release %s (%s)", release.version, release.screen)
            return True
        finally:
            self._lock.release()

    def applied(self, guard):
        """``guard`` with the served release's screen (the same object until the release moves), or ``guard``
        itself where nothing is served from a releases folder."""
        self.check()
        release, screen = self.release, self.screen
        if release is None:
            return guard
        kept = self._applied.get(id(guard))
        if kept is None or kept[0] is not guard or kept[1] != release.stamp:
            kept = (guard, release.stamp, with_screen(guard, screen, release.policies))
            self._applied[id(guard)] = kept
        return kept[2]
