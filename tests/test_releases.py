"""Serving follows the releases training.loop ships (issue #35): the service and the app take the current
release's screen, switch when the pointer moves (the service's authenticated POST /v1/reload, or a look every
few seconds) without a restart, keep the policies, keep a request under way on the screen it started with, and
keep serving the old release when the new one cannot be loaded."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from guardreasoner import load_guard
from guardreasoner.releases import POINTER, ServedScreen
from guardreasoner.screen import shipped_screen_folder
from guardreasoner.service import ServiceSettings, create_app
from tests.servers import running

KEY = "release-key"
BREAD = "How do I bake bread?"


def make_release(root: Path, version: str, prompt_bias: float = 0.0) -> Path:
    """A release folder as training.loop writes it, its screen the shipped one with the prompt head's bias
    moved by ``prompt_bias`` (the body untouched, as a round of the loop leaves it)."""
    import torch
    from safetensors.torch import load_file, save_file

    screen = root / version / "screen"
    shutil.copytree(shipped_screen_folder(), screen)
    tensors = load_file(str(screen / "model.safetensors"))
    bias = tensors["heads.bias"].float()
    bias[0] += prompt_bias
    tensors["heads.bias"] = bias.to(torch.float16)
    save_file(tensors, str(screen / "model.safetensors"), metadata={"format": "pt"})
    (root / version / "release.json").write_text(json.dumps({"version": version}))
    return screen


def point(root: Path, version: str) -> None:
    (root / "current.tmp").write_text(version + "\n")
    os.replace(root / "current.tmp", root / POINTER)  # as the loop moves it: whole


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("releases")
    make_release(root, "v0000")
    make_release(root, "v0001", prompt_bias=30.0)  # this release calls every request harmful
    return root


@pytest.fixture(scope="module")
def cooking_policy(tmp_path_factory) -> Path:
    from guardreasoner.policy import fit_policy, read_examples, save_policy
    from guardreasoner.screen import load_screen
    from tests.test_policy import cooking_examples, write_csv

    folder = tmp_path_factory.mktemp("policy")
    examples, _ = read_examples(write_csv(folder / "cooking.csv", cooking_examples()))
    return save_policy(fit_policy("cooking", examples, load_screen(shipped_screen_folder())), folder / "cooking")


def test_the_service_follows_the_pointer_on_a_reload_call_and_keeps_its_policies(releases, cooking_policy,
                                                                                  tiny_model_dir):
    point(releases, "v0000")
    guard = load_guard(str(tiny_model_dir), "transformers", reasoning="off", max_new_tokens=8,
                       screen=str(shipped_screen_folder()), policies=[str(cooking_policy)])
    served = ServedScreen(releases, interval_s=3600)  # only the reload call looks
    auth = {"Authorization": f"Bearer {KEY}"}
    with running(create_app(guard, settings=ServiceSettings(api_keys=[KEY]), releases=served)) as url:
        def ask(prompt):
            body = {"items": [{"prompt": prompt}]}
            return httpx.post(url + "/v1/classify", json=body, headers=auth, timeout=60).json()["results"][0]

        assert httpx.get(url + "/health").json()["release"] == "v0000"
        before = ask(BREAD)
        assert before["verdicts"]["prompt_harmfulness"]["label"] == "unharmful"
        assert before["categories"]["cooking"]["label"] == "positive"
        point(releases, "v0001")
        assert ask(BREAD)["verdicts"]["prompt_harmfulness"]["label"] == "unharmful"  # not looked at yet
        assert httpx.post(url + "/v1/reload", timeout=30).status_code == 401  # the key is needed
        assert httpx.post(url + "/v1/reload", headers=auth, timeout=30).json() == {"release": "v0001",
                                                                                   "changed": True}
        after = ask(BREAD)
        assert after["verdicts"]["prompt_harmfulness"]["label"] == "harmful"
        assert after["categories"]["cooking"]["label"] == "positive"  # the body is the same: the policy stays
        assert httpx.get(url + "/health").json()["release"] == "v0001"
        assert httpx.post(url + "/v1/reload", headers=auth, timeout=30).json()["changed"] is False
        point(releases, refitted_release(releases, cooking_policy))
        assert httpx.post(url + "/v1/reload", headers=auth, timeout=30).json()["release"] == "v0005"
        assert ask(BREAD)["categories"]["cooking"]["label"] == "negative"  # the release's refit answers it
        point(releases, "v0000")  # a rollback is a move like any other
        assert httpx.post(url + "/v1/reload", headers=auth, timeout=30).json() == {"release": "v0000",
                                                                                   "changed": True}
        assert ask(BREAD)["verdicts"]["prompt_harmfulness"]["label"] == "unharmful"
        assert ask(BREAD)["categories"]["cooking"]["label"] == "positive"  # the policy the service started with


def refitted_release(root: Path, policy: Path) -> str:
    """v0005: the v0000 screen with a refitted ``cooking`` policy (as a round of the loop writes one in
    ``policies/``) that puts no item under the policy."""
    import torch
    from safetensors.torch import load_file, save_file

    make_release(root, "v0005")
    refit = shutil.copytree(policy, root / "v0005" / "policies" / "cooking")
    tensors = load_file(str(refit / "head.safetensors"))
    save_file({**tensors, "intercept": torch.full_like(tensors["intercept"], -60.0)}, str(refit / "head.safetensors"))
    return "v0005"


def test_a_request_under_way_keeps_its_screen_and_a_broken_release_is_not_served(releases, tiny_model_dir,
                                                                                    tmp_path, caplog):
    point(releases, "v0000")
    guard = load_guard(str(tiny_model_dir), "transformers", reasoning="off", max_new_tokens=8,
                       screen=str(shipped_screen_folder()))
    served = ServedScreen(releases, interval_s=0)  # every request looks
    started = served.applied(guard)
    assert served.applied(guard) is started  # the same guard until the pointer moves
    point(releases, "v0001")
    moved = served.applied(guard)
    assert moved is not started and served.version == "v0001"
    assert started.classify_one(BREAD).verdicts["prompt_harmfulness"].label == "unharmful"  # the old screen
    assert moved.classify_one(BREAD).verdicts["prompt_harmfulness"].label == "harmful"
    broken = make_release(releases, "v0002")
    (broken / "model.safetensors").write_bytes(b"not weights")
    point(releases, "v0002")
    with caplog.at_level("ERROR", logger="guardreasoner"):
        assert served.check(force=True) is False
    assert served.version == "v0001" and "v0002 cannot be served" in caplog.text
    assert served.applied(guard).classify_one(BREAD).verdicts["prompt_harmfulness"].label == "harmful"
    point(releases, "v0000")


def test_the_app_serves_the_release_and_names_it(releases, taught_model_dir, monkeypatch):
    from webapp.settings import RunSettings
    from webapp.state import AppState, GuardPool, model_banner

    point(releases, "v0001")
    state = AppState(GuardPool(str(taught_model_dir)), served=ServedScreen(releases, interval_s=0))
    guard = state.guard(RunSettings(reasoning="off"))
    assert guard.classify_one(BREAD).verdicts["prompt_harmfulness"].label == "harmful"
    assert "screen release `v0001`" in model_banner(guard, state.served.version)
    point(releases, "v0000")
    assert state.guard(RunSettings(reasoning="off")).classify_one(BREAD).verdicts[
        "prompt_harmfulness"].label == "unharmful"
    assert "`v0000`" in model_banner(guard, state.served.version)
