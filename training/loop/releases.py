"""Versioned releases of the encoder screen, and the pointer that names the one served.

    RELEASES/v0000/            the screen shipped before the first round (a copy of the base folder)
    RELEASES/v0001/screen/     a screen folder as ``load_screen`` reads it (body as shipped, the round's heads)
    RELEASES/v0001/policies/   the custom policies refitted so far (this round's, and the parent's others)
    RELEASES/v0001/card/       the round's report (JSON, markdown, chart) and its changelog entry
    RELEASES/v0001/release.json  version, parent, round, when
    RELEASES/current           one line: the version served (``current_screen`` resolves it)
    RELEASES/CHANGELOG.md      every release's entry, oldest first
    RELEASES/pointer.log       every move of the pointer (ship, rollback), one JSON line each

Serving reads the pointer through ``guardreasoner.releases.served_release`` (the core defines its format).

A release folder is written under a hidden partial name and renamed into place, and the pointer is replaced
with ``os.replace``: a reader sees the old version or the new one, never half of either, and a round killed
while shipping leaves the served version as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from guardreasoner.releases import POINTER, ReleaseError, release_policies, served_release
from guardreasoner.rows import append_lines

from .state import now

VERSION = re.compile(r"^v(\d{4,})$")


def version_name(number: int) -> str:
    return f"v{number:04d}"


def _fsync_write(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


class Releases:
    def __init__(self, root: Path):
        self.root = Path(root)

    def versions(self) -> list[str]:
        """Every complete release, oldest first."""
        if not self.root.is_dir():
            return []
        found = [path.name for path in self.root.iterdir()
                 if VERSION.match(path.name) and (path / "release.json").is_file()]
        return sorted(found, key=lambda name: int(VERSION.match(name).group(1)))

    def current(self) -> str | None:
        pointer = self.root / POINTER
        if not pointer.is_file():
            return None
        version = pointer.read_text(encoding="utf-8").strip()
        if version not in self.versions():
            raise ReleaseError(f"{pointer} names {version!r}, which is no complete release in {self.root}")
        return version

    def screen(self, version: str) -> Path:
        return self.root / version / "screen"

    def policies(self, version: str) -> dict[str, Path]:
        """Name -> folder of the policies ``version`` refitted (its own or carried from its parent)."""
        return release_policies(self.root / version)

    def info(self, version: str) -> dict:
        return json.loads((self.root / version / "release.json").read_text(encoding="utf-8"))

    def next_version(self) -> str:
        numbers = [int(VERSION.match(name).group(1)) for name in self.versions()]
        return version_name(max(numbers, default=-1) + 1)

    def point(self, version: str, why: str) -> None:
        """Serve ``version`` from now on: the pointer is replaced whole."""
        if version not in self.versions():
            raise ReleaseError(f"no complete release {version!r} in {self.root}")
        before = self.current()
        partial = self.root / (POINTER + ".partial")
        _fsync_write(partial, version + "\n")
        os.replace(partial, self.root / POINTER)
        append_lines(self.root / "pointer.log", [json.dumps({"at": now(), "from": before, "to": version,
                                                             "why": why})])

    def publish(self, screen_folder: Path, card_files: dict[str, str], info: dict,
                changelog: str, policies: dict[str, Path] | None = None) -> str:
        """A new release from a screen folder, the refitted policies' folders and its card's files; it is not
        served until ``point``."""
        version = self.next_version()
        partial = self.root / f".{version}.partial"
        if partial.exists():
            shutil.rmtree(partial)
        shutil.copytree(screen_folder, partial / "screen")
        for name, folder in (policies or {}).items():
            shutil.copytree(folder, partial / "policies" / name)
        (partial / "card").mkdir()
        for name, text in {**card_files, "CHANGELOG.md": changelog}.items():
            (partial / "card" / name).write_text(text, encoding="utf-8")
        _fsync_write(partial / "release.json", json.dumps({"version": version, "at": now(), **info}, indent=2)
                     + "\n")
        os.rename(partial, self.root / version)
        with (self.root / "CHANGELOG.md").open("a", encoding="utf-8") as handle:
            handle.write(changelog.rstrip("\n") + "\n\n")
        return version

    def ensure_baseline(self, base_screen: Path) -> str:
        """The served version, making ``v0000`` from the base screen folder on first use."""
        current = self.current()
        if current is not None:
            return current
        if self.versions():
            raise ReleaseError(f"{self.root} holds releases but no {POINTER} pointer: point one with rollback "
                               "or mend the pointer by hand")
        if not (Path(base_screen) / "screen.json").is_file():
            raise ReleaseError(f"{base_screen}: no screen folder here (its screen.json is missing)")
        self.root.mkdir(parents=True, exist_ok=True)
        version = self.publish(Path(base_screen), {}, {"parent": None, "round": None, "from": str(base_screen)},
                               f"## {version_name(0)}\n\nThe screen shipped before the first round "
                               f"({base_screen}).\n")
        self.point(version, "baseline")
        return version

    def rollback(self) -> tuple[str, str]:
        """Serve the release before the current one; (from, to)."""
        current = self.current()
        if current is None:
            raise ReleaseError(f"{self.root}: nothing is served yet, so there is nothing to roll back")
        earlier = [name for name in self.versions()
                   if int(VERSION.match(name).group(1)) < int(VERSION.match(current).group(1))]
        if not earlier:
            raise ReleaseError(f"{current} is the first release in {self.root}: there is no earlier one")
        self.point(earlier[-1], f"rollback from {current}")
        return current, earlier[-1]


def current_screen(root: str | Path | None = None) -> Path | None:
    """The screen folder the releases' pointer names (``GUARDREASONER_RELEASES`` when no root is given); None
    when no release is served there: ``guardreasoner.releases.served_release``, which serving reads."""
    served = served_release(root)
    return served.screen if served else None
