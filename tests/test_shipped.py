"""The shipped files are found in a checkout, and a missing embedded adapter is an error, never the bare model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from guardreasoner import models, shipped
from guardreasoner.models import ModelUnavailable, resolve_model

ROOT = Path(__file__).resolve().parents[1]


def test_a_checkout_reads_its_top_level_assets_folder():
    assert not shipped.PACKAGED_ASSETS.exists()  # only a wheel has guardreasoner/assets
    assert shipped.assets_dir() == ROOT / "assets"
    assert shipped.asset_path("embedded-guard") == models.SHIPPED_ADAPTER == ROOT / "assets" / "embedded-guard"
    assert shipped.asset_path("published_f1.json").is_file()  # stagekit.reports reads it in a checkout


def test_an_installed_package_reads_its_packaged_assets_first(tmp_path, monkeypatch):
    packaged = tmp_path / "guardreasoner" / "assets"
    (packaged / "embedded-guard").mkdir(parents=True)
    monkeypatch.setattr(shipped, "PACKAGED_ASSETS", packaged)
    assert shipped.asset_path("embedded-guard") == packaged / "embedded-guard"
    with pytest.raises(FileNotFoundError, match="published_f1.json is missing"):
        shipped.asset_path("published_f1.json")


def test_a_missing_adapter_is_an_error_that_names_it(tmp_path, monkeypatch):
    monkeypatch.delenv(models.EMBEDDED_ADAPTER_ENV, raising=False)
    monkeypatch.setattr(models, "SHIPPED_ADAPTER", tmp_path / "embedded-guard")  # an install without its assets
    with pytest.raises(ModelUnavailable, match=r"embedded-guard/adapter_config.json is missing \(the adapter shipped"):
        resolve_model("embedded")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="the embedded fallback is unavailable too: .*adapter_config.json"):
        resolve_model("someone/unreachable-guard", fallback=True)  # the app's offline fallback does not downgrade
    monkeypatch.setenv(models.EMBEDDED_ADAPTER_ENV, str(tmp_path / "my-adapter"))
    with pytest.raises(ModelUnavailable, match="my-adapter/adapter_config.json is missing"):
        resolve_model("embedded")
    # Asking for the untrained base model is still possible, on purpose.
    assert resolve_model("smollm2").name == models.EMBEDDED_NAME
    monkeypatch.setenv(models.EMBEDDED_ADAPTER_ENV, "none")
    assert resolve_model("embedded").name == models.EMBEDDED_NAME


def test_installed_the_shipped_screen_and_its_recommended_mode_come_from_the_packaged_assets(tmp_path, monkeypatch):
    """Laid out as a wheel installs it, the screen and the mode its card records are found inside the package,
    as in the checkout (they were once looked up next to the source tree, so a wheel found neither)."""
    from guardreasoner.models import EMBEDDED_GUARD_NAME
    from guardreasoner.screen import CARD_FILE, recommended_reasoning, shipped_screen_folder

    packaged = tmp_path / "guardreasoner" / "assets"
    folder = packaged / "screen" / "encoder"
    shutil.copytree(ROOT / "assets" / "screen" / "encoder", folder)
    monkeypatch.setattr(shipped, "PACKAGED_ASSETS", packaged)
    assert shipped_screen_folder(EMBEDDED_GUARD_NAME) == folder == shipped_screen_folder("GuardReasoner-1B")
    measured = json.loads((folder / CARD_FILE).read_text())["recommended_reasoning"]
    assert measured["model"] == EMBEDDED_GUARD_NAME
    assert recommended_reasoning(EMBEDDED_GUARD_NAME) == measured["mode"]
    assert recommended_reasoning("GuardReasoner-1B") == "full"  # measured with the embedded guard only
    card = json.loads((folder / CARD_FILE).read_text())
    card["recommended_reasoning"]["mode"] = "auto" if measured["mode"] != "auto" else "off"  # the card's, not
    (folder / CARD_FILE).write_text(json.dumps(card))                                        # the code's
    assert recommended_reasoning(EMBEDDED_GUARD_NAME) == card["recommended_reasoning"]["mode"]
    shutil.rmtree(folder)  # an installation without the screen reasons, whatever the checkout holds
    assert shipped_screen_folder(EMBEDDED_GUARD_NAME) is None
    assert recommended_reasoning(EMBEDDED_GUARD_NAME) == "full"
    assert shipped.find_asset("screen/encoder") is None
