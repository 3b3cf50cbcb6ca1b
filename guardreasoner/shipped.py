"""The files the library ships (the embedded guard's adapter, the published figures, screen heads), found the
same way in a checkout and in an installed wheel: every module finds them through ``find_asset``/``asset_path``.

In the repository they live in the top-level ``assets/`` folder, where the Space and the training stages read
and write them. The wheel carries that folder as the package data of ``guardreasoner.assets``
(pyproject.toml maps the one onto the other with ``package-dir``), so installed it sits inside the package. The
wheel carries only what running the guard reads; the evidence beside it (``reports/`` folders, the cards' READMEs
of screens, the benchmark splits) stays in the repository.
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


def find_asset(relative: str) -> Path | None:
    """A shipped file or folder, e.g. ``find_asset("screen/embedded-minilm")``, or None where this installation
    has none (the one lookup every shipped file goes through, so a wheel and a checkout find the same files)."""
    path = assets_dir() / relative
    return path if path.exists() else None


def asset_path(relative: str) -> Path:
    """A shipped file or folder that must be there, e.g. ``asset_path("published_f1.json")``; FileNotFoundError
    names the path."""
    path = find_asset(relative)
    if path is None:
        raise FileNotFoundError(f"{assets_dir() / relative} is missing: the guardreasoner installation lacks its"
                                f" shipped {relative} (reinstall it from a wheel built with its assets, or use a"
                                " full checkout)")
    return path

