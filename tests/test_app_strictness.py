"""The app's Strictness control (webapp/strictness.py): a result re-labelled from its probabilities without running
the model, what the page shows for it, and Batch labelling every row at the chosen strictness. The browser check
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
