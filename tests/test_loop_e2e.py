"""The product's loop end to end (issue #35), against the real local argilla-server and a real browser: an input
flagged in the app reaches Argilla, a reviewer agrees with the flagger through the SDK, ``python -m training.loop``
learns from that review and ships v0001, and the app, still running, answers the input as corrected and names
the new release in its model line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annotate.workspace import Target, submit_review
from tests.test_annotate import CI, argilla, records_of, reviewer  # noqa: F401 (argilla: the server fixture)
from tests.test_app import CHROMIUM, chromium_page, launched_app
from tests.test_loop import CORRECTED, args, base_label, opposite, world  # noqa: F401 (world: the fixture)

DATASET = "loop-e2e"


@pytest.mark.slow
def test_a_flag_reviewed_in_argilla_comes_back_from_the_loop_into_the_running_app(
        argilla, world, taught_model_dir, tmp_path, monkeypatch):  # noqa: F811
    from training.loop.cli import main as loop
    from training.loop.releases import Releases

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing") if CI else pytest.skip("Debian's chromium is not installed")
    prompt = CORRECTED[0]
    wrong = base_label(world, prompt)
    loop_args = [arg for arg in args(world, tmp_path) if arg != "--no-reviews"]  # this round reads Argilla
    releases = Releases(tmp_path / "state" / "releases")
    releases.ensure_baseline(world["base"])  # v0000, served before any round
    monkeypatch.setenv("GUARDREASONER_RELEASES", str(releases.root))
    # The app's queue is not the loop's --flags: what the round learns has to come through the review.
    monkeypatch.setenv("GUARDREASONER_FLAG_QUEUE", str(tmp_path / "app-queue.jsonl"))
    monkeypatch.setenv("ANNOTATE_OUTBOX", str(tmp_path / "outbox.jsonl"))
    monkeypatch.setenv("ANNOTATE_DATASET", DATASET)
    with launched_app(taught_model_dir) as url, chromium_page(url, {"width": 1280, "height": 1400}) as page:
        page.locator("#reasoning-mode").get_by_text("off:").click()  # the served screen decides

        def analyze(release: str) -> str:
            """The request's verdict from a run whose model line names ``release`` (the last run's status
            still says done when the click lands, so the release tells this run's answer from it)."""
            page.locator("#analyze-button").click()
            page.wait_for_function("""(release) => document.querySelector('#run-status')?.dataset.state === 'done'
                && document.querySelector('#model-banner').innerText.includes('screen release ' + release)""",
                                   arg=release, timeout=60000)
            return page.locator("#chip-prompt_harmfulness").get_attribute("data-state")

        page.locator("#request-box textarea").fill(prompt)
        assert analyze("v0000") == wrong
        page.get_by_text("Flag this result as wrong").click()
        page.locator("#correct-request").get_by_text(opposite(wrong), exact=True).click()
        page.locator("#flag-button").click()
        page.wait_for_function(
            "() => (document.querySelector('#flag-status')?.textContent || '').includes('Argilla')",
            timeout=120000)
        assert "Sent to Argilla (1 record(s) delivered)" in page.locator("#flag-status").text_content()

        (record,) = records_of(Target(dataset=DATASET)).values()
        assert record.fields["prompt"] == prompt
        submit_review(reviewer(argilla, "reviewer_a.key"), record, {"prompt_harmfulness": opposite(wrong)})
        assert loop(loop_args) == 0
        assert releases.current() == "v0001"

        collected = json.loads((releases.root / "v0001" / "card" / "report.json").read_text())["collect"]
        assert collected["seen"] == {"flags": 0, "reviews": 1}  # the round learnt it from the review
        corrected = analyze("v0001")  # the same page, the same app process
    assert corrected == opposite(wrong)
