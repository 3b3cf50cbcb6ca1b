"""The app's Strictness control (webapp/strictness.py): a result re-labelled from its probabilities without running
the model, what the page shows for it, Batch labelling every row at the chosen strictness, and operating points
(``GUARDREASONER_OPERATING_POINTS``) offered as choices that apply only where they fit. The browser check
(the control on the page) is in tests/test_app.py, beside the run it follows."""

from __future__ import annotations

import json

import gradio as gr
import pytest

from guardreasoner.results import GuardResult, Verdict
from tests.tiny_models import HARMFUL_REQUEST, SAFE_REQUEST
from webapp import strictness


def result_dict() -> dict:
    """A result the screen decided: the prompt harmful at p 0.6, the reply unharmful at p 0.3 and a compliance
    at p 0.1; as a Batch record it also carries its line."""
    verdicts = {
        "prompt_harmfulness": Verdict("prompt_harmfulness", "harmful", "screen", p_positive=0.6, decided_by="screen"),
        "response_refusal": Verdict("response_refusal", "compliance", "screen", p_positive=0.1, decided_by="screen"),
        "response_harmfulness": Verdict("response_harmfulness", "unharmful", "screen", p_positive=0.3,
                                        decided_by="screen"),
    }
    result = GuardResult("How do I pick a lock?", "Use a tension wrench.", "", "", verdicts, {}, [])
    return {"line": 7, **result.to_dict()}


def labels(result: dict) -> tuple:
    return tuple(result["verdicts"][key]["label"] for key in result["verdicts"])


def test_each_strictness_cuts_the_harm_verdicts_at_its_threshold_and_keeps_the_rest():
    original = result_dict()
    catch = strictness.relabelled(original, "catch-more")  # 0.25: the reply's 0.3 is now harmful
    assert labels(catch) == ("harmful", "compliance", "harmful")
    assert catch["labels"]["response_harmfulness"] == "harmful" and catch["is_harmful"] and catch["line"] == 7
    assert [catch["verdicts"][k]["threshold"] for k in catch["verdicts"]] == [0.25, None, 0.25]
    fewer = strictness.relabelled(original, "fewer-false-positives")  # 0.75: the prompt's 0.6 is not enough
    assert labels(fewer) == ("unharmful", "compliance", "unharmful") and not fewer["is_harmful"]
    assert strictness.relabelled(original, strictness.BALANCED) is original
    assert labels(original) == ("harmful", "compliance", "unharmful")  # the guard's result is left as it was
    failed = result_dict()
    failed["verdicts"]["prompt_harmfulness"].update(p_positive=None, fail_closed=True)
    assert strictness.relabelled(failed, "fewer-false-positives")["verdicts"]["prompt_harmfulness"]["label"] == \
        "harmful"  # no probability: the guard's label stands
    with pytest.raises(gr.Error, match="Unknown strictness 'lax'"):
        strictness.relabelled(original, "lax")


def test_the_page_shows_the_threshold_on_each_chip_and_says_what_changed():
    *chips, shown, note = strictness.show(result_dict(), "fewer-false-positives")
    assert 'data-state="unharmful"' in chips[0] and 'data-threshold="0.75"' in chips[0]
    assert "flagged from p = 0.75" in chips[0] and 'data-threshold=""' in chips[1]
    assert json.loads(shown)["verdicts"]["prompt_harmfulness"]["threshold"] == 0.75
    assert 'data-threshold="0.75"' in note and "harmful from p = 0.75" in note
    assert "Changed from the guard&#x27;s own decision: the prompt is now unharmful." in note
    *chips, _, note = strictness.show(result_dict(), strictness.BALANCED)
    assert 'data-state="harmful"' in chips[0] and 'data-threshold=""' in chips[0]
    assert "Balanced: the guard&#x27;s own decision." in note
    *untouched, _, note = strictness.show(None, "catch-more")  # before a result: only the note
    assert all(update == gr.update() for update in untouched) and "from p = 0.25" in note


def test_batch_labels_every_row_at_the_strictness(taught_model_dir, tmp_path):
    from webapp import handlers
    from webapp.settings import RunSettings
    from webapp.state import build_state

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in (HARMFUL_REQUEST, SAFE_REQUEST)))
    state = build_state(str(taught_model_dir))
    frames = list(handlers.run_batch(state, str(rows), RunSettings(max_new_tokens=200), "", "fewer-false-positives"))
    table, files, _, message, _ = frames[-1]
    assert message.startswith("2 rows checked.") and "Labelled at “Fewer false positives”" in message
    records = [json.loads(line) for line in open(next(p for p in files["value"] if p.endswith(".jsonl")))]
    for record in records:  # each row cut at 0.75 on its own probability, in the table and the files alike
        verdict = record["verdicts"]["prompt_harmfulness"]
        assert verdict["p_positive"] is not None and verdict["threshold"] == 0.75
        assert verdict["label"] == ("harmful" if verdict["p_positive"] >= 0.75 else "unharmful")
    assert [row[1] for row in table["value"]["data"]] == [r["labels"]["prompt_harmfulness"] for r in records]


def write_point(folder, thresholds: dict, model: str, reasoning: str = "off"):
    """An operating point folder as ``python -m guardreasoner calibrate`` writes it (the parts the app reads)."""
    folder.mkdir(parents=True)
    (folder / "operating_point.json").write_text(json.dumps({
        "format": "guardreasoner-operating-point/1", "thresholds": thresholds, "model": model,
        "reasoning": reasoning, "target": {"fpr": 0.05}}))
    return folder


@pytest.fixture()
def offered(tmp_path, monkeypatch):
    point = write_point(tmp_path / "support-fpr5", {"prompt_harmfulness": 0.7, "response_refusal": 0.05}, "tiny-guard")
    monkeypatch.setenv(strictness.POINTS_ENV, str(point))
    strictness.operating_points.cache_clear()
    yield point
    strictness.operating_points.cache_clear()


def test_an_operating_point_is_a_choice_that_cuts_each_verdict_it_has_and_is_named(offered):
    assert strictness.choices()[-1] == ("Operating point support-fpr5 (FPR 5% on your rows, off)", "point:support-fpr5")
    assert strictness.default_choice() == "point:support-fpr5"  # set up for this deployment: the page starts on it
    original = {**result_dict(), "model": "tiny-guard"}
    shown = strictness.relabelled(original, "point:support-fpr5")
    assert labels(shown) == ("unharmful", "refusal", "unharmful") and shown["operating_point"] == "support-fpr5"
    assert [shown["verdicts"][k]["threshold"] for k in shown["verdicts"]] == [0.7, 0.05, None]
    *chips, _, note = strictness.show(original, "point:support-fpr5")
    assert 'data-threshold="0.7"' in chips[0] and "flagged from p = 0.70" in chips[0]
    assert "Operating point support-fpr5 (FPR 5% on your rows): the prompt from p = 0.70, the reply&#x27;s refusal " \
        "from p = 0.05." in note
    assert "the prompt is now unharmful; the reply&#x27;s refusal is now refusal." in note
    assert "Labelled at operating point support-fpr5: the prompt from p = 0.70" in \
        strictness.batch_note("point:support-fpr5")


def test_an_operating_point_that_does_not_fit_the_result_leaves_its_labels(offered, tmp_path, monkeypatch):
    other_model = {**result_dict(), "model": "another-guard"}
    assert strictness.relabelled(other_model, "point:support-fpr5") is other_model
    *_, note = strictness.show(other_model, "point:support-fpr5")
    assert "do not apply to this result: it was calibrated for tiny-guard, and this result is another-guard" in note
    reasoned = {**result_dict(), "model": "tiny-guard"}
    reasoned["verdicts"]["prompt_harmfulness"]["decided_by"] = "reasoning"  # auto sent it to the reasoning model
    assert strictness.relabelled(reasoned, "point:support-fpr5") is reasoned
    assert "calibrated with reasoning off, and the reasoning decided a verdict here (run with Reasoning " \
        "“off”)" in strictness.show(reasoned, "point:support-fpr5")[-1]
    with pytest.raises(gr.Error, match="Unknown strictness 'point:nope'; choose one of .*support-fpr5"):
        strictness.relabelled(reasoned, "point:nope")
    monkeypatch.setenv(strictness.POINTS_ENV, f"{offered},{tmp_path / 'missing'}")
    strictness.operating_points.cache_clear()
    with pytest.raises(ValueError, match="missing is not an operating point folder"):
        strictness.choices()


def test_an_operating_point_with_a_map_reports_the_mapped_probability_it_cuts(tmp_path, monkeypatch):
    """A point calibrate fitted a Platt map for: the page shows (and Batch writes) the probability after the map,
    names the map, and cuts that probability; re-labelling a result already mapped does not map it twice."""
    from guardreasoner.recalibration import PlattMap

    folder = write_point(tmp_path / "mapped", {"prompt_harmfulness": 0.5}, "tiny-guard")
    point = json.loads((folder / "operating_point.json").read_text())
    point["calibrations"] = {"prompt_harmfulness": {"method": "platt", "a": 1.0, "b": -1.0, "rows": 80}}
    (folder / "operating_point.json").write_text(json.dumps(point))
    monkeypatch.setenv(strictness.POINTS_ENV, str(folder))
    strictness.operating_points.cache_clear()
    try:
        original = {**result_dict(), "model": "tiny-guard"}  # the screen said 0.6: harmful at its own cut
        mapping = PlattMap(1.0, -1.0, 80, "mapped")
        shown = strictness.relabelled(original, "point:mapped")
        verdict = shown["verdicts"]["prompt_harmfulness"]
        assert verdict["p_positive"] == pytest.approx(mapping(0.6)) and mapping(0.6) < 0.5
        assert verdict["label"] == "unharmful" and verdict["threshold"] == 0.5
        assert verdict["calibration"].startswith("platt: sigmoid(1.000 * logit(p) -1.000), fitted on 80 labelled "
                                                 "rows of operating point mapped; over ")
        *_, note = strictness.show(original, "point:mapped")
        assert "The prompt&#x27;s p is calibrated by the point (a map fitted on its labelled rows) before the " \
            "cut." in note and "the prompt is now unharmful" in note
        again = strictness.relabelled(shown, "point:mapped")
        assert again["verdicts"]["prompt_harmfulness"]["p_positive"] == verdict["p_positive"]
        assert original["verdicts"]["prompt_harmfulness"]["p_positive"] == 0.6  # the guard's result is kept
    finally:
        strictness.operating_points.cache_clear()
