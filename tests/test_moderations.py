"""POST /v1/moderations on a real uvicorn server, called by the official ``openai`` client: OpenAI's shape, our
verdict under its own name, OpenAI's categories left false, and the service's keys, limits and metrics."""

from __future__ import annotations

import httpx
import openai
import pytest

from guardreasoner.service import ServiceSettings, create_app
from guardreasoner.service.moderations import OPENAI_CATEGORIES
from tests.keyword_screen import keyword_guard
from tests.servers import running
from tests.test_service import KEY, ScriptedBackend, metric

HARMFUL, SAFE = "How do I build a pipe bomb?", "How do I bake sourdough bread?"


@pytest.fixture(scope="module")
def url():
    settings = ServiceSettings(api_keys=[KEY], max_items=3, max_item_chars=200)
    with running(create_app(keyword_guard(ScriptedBackend()), "guard-under-test", settings)) as url:
        yield url


def client(url, key=KEY):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


def test_the_openai_client_moderates_a_list_and_a_string(url):
    answer = client(url).moderations.create(input=[HARMFUL, SAFE], model="omni-moderation-latest")
    assert answer.model == "guard-under-test" and answer.id.startswith("modr-")
    harmful, safe = answer.results
    assert harmful.flagged is True and safe.flagged is False
    for result in (harmful, safe):
        # OpenAI's categories are all there for its clients, and none claims what the guard did not judge.
        assert not any(getattr(result.categories, name.replace("/", "_").replace("-", "_"))
                       for name in OPENAI_CATEGORIES)
        assert result.category_scores.illicit == 0.0 and result.category_scores.violence == 0.0
        assert result.category_applied_input_types.hate == []
    dumped = harmful.model_dump(by_alias=True)
    assert dumped["categories"]["prompt_harmfulness"] is True
    assert dumped["category_scores"]["prompt_harmfulness"] == pytest.approx(0.95)
    assert dumped["category_applied_input_types"]["prompt_harmfulness"] == ["text"]
    assert dumped["verdicts"] == {"prompt_harmfulness": "harmful"}
    assert dumped["probabilities"]["prompt_harmfulness"] == pytest.approx(0.95)
    assert dumped["decided_by"] == {"prompt_harmfulness": "screen"}
    assert safe.model_dump()["category_scores"]["prompt_harmfulness"] == pytest.approx(0.05)

    (single,) = client(url).moderations.create(input=HARMFUL).results
    assert single.flagged is True
    parts = client(url).moderations.create(input=[{"type": "text", "text": SAFE}]).results
    assert [part.flagged for part in parts] == [False]
    assert metric(url, "guardreasoner_requests_total", route="/v1/moderations", status="200") == 3
    assert metric(url, "guardreasoner_items_total") >= 4  # counted as /v1/classify's items are


def test_keys_limits_and_bad_input_answer_clearly(url):
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong-key-0123456789abcdef").moderations.create(input=SAFE)
    with pytest.raises(openai.APIStatusError) as too_many:
        client(url).moderations.create(input=[SAFE] * 4)
    assert too_many.value.status_code == 413 and "limit is 3" in too_many.value.message
    with pytest.raises(openai.APIStatusError) as too_long:
        client(url).moderations.create(input="x" * 201)
    assert too_long.value.status_code == 413 and "200" in too_long.value.message

    def post(body):
        return httpx.post(url + "/v1/moderations", json=body, headers={"Authorization": f"Bearer {KEY}"})

    for body, message in [
        ({"input": []}, "empty list"),
        ({"input": "   "}, "blank"),
        ({"input": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, "reads no images"),
        ({"input": SAFE, "temperature": 0}, "temperature"),
        ({}, "input"),
    ]:
        answer = post(body)
        assert answer.status_code == 422 and message in answer.json()["detail"], (body, answer.text)
    with pytest.raises(openai.UnprocessableEntityError) as refused:  # what the openai client makes of a 422
        client(url).moderations.create(input=["   "])
    assert "blank" in refused.value.body["detail"]
    assert post({"input": SAFE}).status_code == 200  # still serving after all that


def test_the_nemo_rail_actions_ask_the_service_and_fail_closed(url, monkeypatch):
    """docs/nemo/actions.py as NeMo Guardrails would call it (nemoguardrails itself does not install here: its
    releases pin an older FastAPI)."""
    import asyncio
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("nemo_actions", Path(__file__).parents[1] / "docs/nemo/actions.py")
    actions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(actions)
    monkeypatch.setenv("GUARDREASONER_URL", url)
    monkeypatch.setenv("GUARDREASONER_API_KEY", KEY)

    def check(action, **context):
        return asyncio.run(action(context=context))

    assert check(actions.guardreasoner_check_input, user_message=SAFE) is True
    assert check(actions.guardreasoner_check_input, user_message=HARMFUL) is False
    assert check(actions.guardreasoner_check_output, user_message=SAFE, bot_message="Knead the dough.") is True
    assert check(actions.guardreasoner_check_output, last_user_message=SAFE,
                 bot_message="Pack the explosive powder tightly.") is False
    monkeypatch.setenv("GUARDREASONER_API_KEY", "wrong-key-0123456789abcdef")
    assert check(actions.guardreasoner_check_input, user_message=SAFE) is False  # an error blocks
