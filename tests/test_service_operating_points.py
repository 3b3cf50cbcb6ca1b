"""Operating points in the guard service, against a real uvicorn server on 127.0.0.1: a request names one and
its thresholds label that request alone (the server's guard is not reloaded or changed), the server's default
point applies only in its own mode, /health lists what is loaded, and bad names, mismatched modes and
thresholds outside (0, 1) get a 422 that says why."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from guardreasoner.cascade import Cascade
from guardreasoner.cli import build_parser
from guardreasoner.client import GuardClient
from guardreasoner.guard import Guard
from guardreasoner.operating_point import FORMAT, OPERATING_POINT_FILE, OperatingPointError, load_operating_point
from guardreasoner.screen import Thresholds
from guardreasoner.service import ServiceSettings, create_app
from tests.servers import running
from tests.test_screen import StubScreen
from tests.test_service import AUTH, KEY, ScriptedBackend
from tests.tiny_models import HARMFUL_REQUEST, SAFE_REQUEST

PROMPT_KEY = "prompt_harmfulness"


def write_point(folder: Path, threshold: float, *, reasoning: str = "off", model: str = "scripted",
                target: dict | None = None):
    """An operating point folder as calibrate writes it (the fields the service reads), loaded back."""
    folder.mkdir(parents=True)
    point = {"format": FORMAT, "model": model, "reasoning": reasoning, "screen": None,
             "target": target or {"fpr": 0.05}, "thresholds": {PROMPT_KEY: threshold}}
    (folder / OPERATING_POINT_FILE).write_text(json.dumps(point), encoding="utf-8")
    return load_operating_point(folder)


@pytest.fixture()
def points(tmp_path):
    return {"strict": write_point(tmp_path / "strict", 0.3, target={"recall": 0.95}),
            "lenient": write_point(tmp_path / "lenient", 0.98),
            "full-strict": write_point(tmp_path / "full-strict", 0.1, reasoning="full")}


def screened_guard(backend, default=None) -> Cascade:
    """The screen is sure the bomb request is harmful (0.97) and puts the bread one at 0.4, under its cut of 0.5;
    ``default`` is the point the guard was loaded with, as load_guard(operating_point=...) sets it."""
    stub = StubScreen({HARMFUL_REQUEST: {PROMPT_KEY: 0.97}, SAFE_REQUEST: {PROMPT_KEY: 0.4}},
                      Thresholds(cut=0.5, low=0.2, high=0.9))
    guard = Guard(backend)
    if default is not None:
        guard = guard.with_operating_point(default.name, default.thresholds)
    return Cascade(guard, stub, "off")


def prompt_verdicts(results) -> list[tuple[str, float | None, str | None]]:
    return [(r.verdicts[PROMPT_KEY].label, r.verdicts[PROMPT_KEY].threshold, r.operating_point) for r in results]


def test_each_request_cuts_by_the_point_it_names_and_the_default_stays(points):
    backend = ScriptedBackend()
    guard = screened_guard(backend, default=points["lenient"])
    app = create_app(guard, settings=ServiceSettings(api_keys=[KEY]), operating_points=tuple(points.values()))
    with running(app) as url:
        client = GuardClient(url, KEY)
        health = httpx.get(url + "/health").json()["operating_points"]
        assert health["default"] == "lenient"
        assert [(p["name"], p["reasoning"], p["thresholds"], p["target"]) for p in health["offered"]] == [
            ("strict", "off", {PROMPT_KEY: 0.3}, {"recall": 0.95}),
            ("lenient", "off", {PROMPT_KEY: 0.98}, {"fpr": 0.05}),
            ("full-strict", "full", {PROMPT_KEY: 0.1}, {"fpr": 0.05})]
        items = [HARMFUL_REQUEST, SAFE_REQUEST]  # the screen's 0.97 and 0.4

        # The default point: 0.97 is under lenient's 0.98.
        assert prompt_verdicts(client.classify(items)) == [("unharmful", 0.98, "lenient")] * 2
        # A request naming strict: 0.4 is over 0.3. The next request that names none is lenient again.
        assert prompt_verdicts(client.classify(items, operating_point="strict")) == [("harmful", 0.3, "strict")] * 2
        assert prompt_verdicts(client.classify(items)) == [("unharmful", 0.98, "lenient")] * 2
        assert guard.thresholds == {PROMPT_KEY: 0.98} and guard.operating_point == "lenient"
        # A request's thresholds override the point's per verdict; the result then names no point.
        tuned = client.classify(items, operating_point="strict", thresholds={PROMPT_KEY: 0.5})
        assert prompt_verdicts(tuned) == [("harmful", 0.5, None), ("unharmful", 0.5, None)]
        # The stream cuts by the named point too.
        events = list(client.stream([SAFE_REQUEST], operating_point="strict"))
        (final,) = [data["result"] for kind, data in events if kind == "result"]
        assert final["operating_point"] == "strict" and final["verdicts"][PROMPT_KEY]["label"] == "harmful"
        assert backend.calls == []  # all in off: the model never ran

        # A point calibrated in full runs the request in full (the reasoning model decides, and the result names
        # the point); the default point (off) does not apply to a request that asks for full.
        (pointed,) = client.classify([SAFE_REQUEST], operating_point="full-strict")
        assert pointed.verdicts[PROMPT_KEY].decided_by == "reasoning" and pointed.operating_point == "full-strict"
        (plain,) = client.classify([SAFE_REQUEST], reasoning="full")
        assert plain.verdicts[PROMPT_KEY].decided_by == "reasoning" and plain.operating_point is None
        assert backend.calls == [1, 1]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"operating_point": "loose"}, 422,
     "this server has no operating point 'loose'; it offers ['full-strict', 'lenient', 'strict']"),
    ({"operating_point": "strict", "reasoning": "full"}, 422,
     "the operating point 'strict' was calibrated with reasoning off: its thresholds do not fit full's"),
    ({"thresholds": {PROMPT_KEY: 0}}, 422, "must be strictly between 0 and 1, not 0"),
    ({"thresholds": {PROMPT_KEY: 1.0}}, 422, "must be strictly between 0 and 1, not 1.0"),
    ({"operating_point": ""}, 422, "this server has no operating point ''"),
])
def test_a_bad_point_or_threshold_gets_a_422_that_says_why(points, body, status, message):
    with running(create_app(screened_guard(ScriptedBackend()), settings=ServiceSettings(api_keys=[KEY]),
                            operating_points=tuple(points.values()))) as url:
        answer = httpx.post(url + "/v1/classify", json={"items": [{"prompt": SAFE_REQUEST}], **body}, headers=AUTH)
        assert answer.status_code == status and message in answer.json()["detail"], answer.json()
        streamed = httpx.post(url + "/v1/classify/stream", json={"items": [{"prompt": SAFE_REQUEST}], **body},
                              headers=AUTH)
        assert streamed.status_code == status and message in streamed.json()["detail"]
        # The server stays up and answers in its default, without a point.
        assert prompt_verdicts(GuardClient(url, KEY).classify([SAFE_REQUEST])) == [("unharmful", None, None)]


def test_a_server_without_points_says_so_and_a_point_that_cannot_apply_stops_start_up(points, tmp_path):
    with running(create_app(Guard(ScriptedBackend()), settings=ServiceSettings(api_keys=[KEY]))) as url:
        assert httpx.get(url + "/health").json()["operating_points"] == {"default": None, "offered": []}
        answer = httpx.post(url + "/v1/classify", json={"items": [{"prompt": "hi"}], "operating_point": "strict"},
                            headers=AUTH)
        assert answer.status_code == 422
        assert "it offers none (serve --operating-point DIR loads one)" in answer.json()["detail"]
    with pytest.raises(OperatingPointError, match="calibrated with reasoning off, which this server does not offer"):
        create_app(Guard(ScriptedBackend()), operating_points=(points["strict"],))  # no screen: full only
    other = write_point(tmp_path / "other-model", 0.5, model="GuardReasoner-8B")
    with pytest.raises(OperatingPointError, match="was calibrated for GuardReasoner-8B, not scripted"):
        create_app(screened_guard(ScriptedBackend()), operating_points=(other,))
    twin = write_point(tmp_path / "twin" / "strict", 0.4)
    with pytest.raises(OperatingPointError, match="two operating points are named 'strict'"):
        create_app(screened_guard(ScriptedBackend()), operating_points=(points["strict"], twin))
    args = build_parser().parse_args(["serve", "--operating-point", "a", "--operating-point", "b"])
    assert args.operating_point == ["a", "b"]


def test_a_point_with_a_map_maps_each_requests_probability_before_its_threshold(tmp_path):
    """A point with a Platt map: /health says so, and a request naming it gets the mapped probability (the one
    its threshold cuts), with the map named in the verdict's calibration."""
    from guardreasoner.recalibration import PlattMap

    folder = tmp_path / "mapped"
    write_point(folder, 0.5)
    point = json.loads((folder / OPERATING_POINT_FILE).read_text())
    point["calibrations"] = {PROMPT_KEY: {"method": "platt", "a": 1.0, "b": 2.0, "rows": 40}}
    (folder / OPERATING_POINT_FILE).write_text(json.dumps(point))
    mapped = load_operating_point(folder)
    mapping = PlattMap(1.0, 2.0, 40, "mapped")
    app = create_app(screened_guard(ScriptedBackend()), settings=ServiceSettings(api_keys=[KEY]),
                     operating_points=(mapped,))
    with running(app) as url:
        (offered,) = httpx.get(url + "/health").json()["operating_points"]["offered"]
        assert offered["calibrations"] == {PROMPT_KEY: mapping.describe()}
        (result,) = GuardClient(url, KEY).classify([SAFE_REQUEST], operating_point="mapped")
        verdict = result.verdicts[PROMPT_KEY]  # the screen's 0.4 becomes 0.83: over the point's 0.5
        assert verdict.p_positive == pytest.approx(mapping(0.4)) and verdict.label == "harmful"
        assert verdict.calibration.startswith(mapping.describe())
        (plain,) = GuardClient(url, KEY).classify([SAFE_REQUEST])  # no point: the screen's own probability
        assert plain.verdicts[PROMPT_KEY].p_positive == pytest.approx(0.4)
