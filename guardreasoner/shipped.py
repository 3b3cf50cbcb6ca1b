"""The files the library ships (the embedded guard's adapter, the published figures, screen heads), found the
same way in a checkout and in an installed wheel.

In the repository they live in the top-level ``assets/`` folder, where the Space and the training stages read
and write them. The wheel carries that folder as the package data of ``guardreasoner.assets``
(pyproject.toml maps the one onto the other with ``package-dir``), so installed it sits inside the package.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
PACKAGED_ASSETS = _PACKAGE / "assets"  # an installed wheel
CHECKOUT_ASSETS = _PACKAGE.parent / "assets"  # the repository, and an editable install of it


def assets_dir() -> Path:
    """The folder holding the shipped files: inside the package when installed from a wheel, else the
    checkout's top-level ``assets/`` (a checkout has no ``guardreasoner/assets``)."""
    return PACKAGED_ASSETS if PACKAGED_ASSETS.is_dir() else CHECKOUT_ASSETS


def asset_path(relative: str) -> Path:
    """A shipped file or folder, e.g. ``asset_path("published_f1.json")``; FileNotFoundError names the path."""
    path = assets_dir() / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: the guardreasoner installation lacks its shipped {relative}"
                                " (reinstall it from a wheel built with its assets, or use a full checkout)")
    return path

