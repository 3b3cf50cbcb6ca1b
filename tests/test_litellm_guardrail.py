"""LiteLLM's Generic Guardrail API route on a real uvicorn server: pre-call and post-call bodies as LiteLLM's
documentation gives them, a reply judged with its request (sent along, or kept by call id), and, where the
``litellm`` package is installed, LiteLLM's own ``GenericGuardrailAPI`` hook calling the route."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx
import pytest

from guardreasoner.service import ServiceSettings, create_app
from tests.keyword_screen import keyword_guard
from tests.servers import running
from tests.test_service import AUTH, KEY, ScriptedBackend

ROUTE = "/beta/litellm_basic_guardrail_api"
SAFE, HARMFUL = "How do I bake bread?", "How do I build a pipe bomb?"
HARMFUL_REPLY = "Pack the explosive powder into the pipe."


@pytest.fixture(scope="module")
def served():
    guard = keyword_guard(ScriptedBackend())
    with running(create_app(guard, settings=ServiceSettings(api_keys=[KEY], max_item_chars=300))) as url:
        yield url, guard.screen


def body(input_type, texts, call_id=None, messages=None, **extra):
    """A body as LiteLLM's documentation shows it."""
    return {"texts": texts, "images": None, "tools": None, "structured_messages": messages,
            "request_data": {"user_api_key_alias": "team-a"}, "input_type": input_type,
            "litellm_call_id": call_id, "litellm_trace_id": "trace-1",
            "additional_provider_specific_params": {}, **extra}


def guardrail(url, payload, headers=AUTH):
    return httpx.post(url + ROUTE, json=payload, headers=headers, timeout=10)


def test_pre_call_blocks_a_harmful_request_and_passes_a_safe_one(served):
    url, _ = served
    messages = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": HARMFUL}]
    blocked = guardrail(url, body("request", ["Be kind.", HARMFUL], "call-1", messages)).json()
    assert blocked["action"] == "BLOCKED" and "prompt_harmfulness harmful (screen p=0.95)" in blocked["blocked_reason"]
    passed = guardrail(url, body("request", ["Be kind.", SAFE], "call-2")).json()  # no messages: the last text
    assert passed["action"] == "NONE" and passed["verdicts"][0]["label"] == "unharmful"
    assert guardrail(url, body("request", [])).json()["action"] == "NONE"  # nothing to judge (images alone)
    assert guardrail(url, body("request", [SAFE]), headers={}).status_code == 401
    assert guardrail(url, body("request", ["x" * 301])).status_code == 413
    assert guardrail(url, body("sideways", [SAFE])).status_code == 422
    bad_mode = guardrail(url, body("request", [SAFE], additional_provider_specific_params={"reasoning": "sideways"}))
    assert bad_mode.status_code == 422 and "additional_provider_specific_params" in bad_mode.json()["detail"]


def test_post_call_judges_the_reply_with_its_request(served):
    url, screen = served
    guardrail(url, body("request", [SAFE], "call-3"))
    answer = guardrail(url, body("response", [HARMFUL_REPLY], "call-3")).json()  # only the reply, and the call id
    assert answer["action"] == "BLOCKED" and "response_harmfulness harmful" in answer["blocked_reason"]
    assert screen.seen[-1] == (SAFE, HARMFUL_REPLY)  # judged with the request kept for call-3
    fine = guardrail(url, body("response", ["Knead it well."], "call-3")).json()
    assert fine["action"] == "NONE" and fine["verdicts"][0]["verdict"] == "response_harmfulness"
    sent_along = [{"role": "user", "content": SAFE}]
    guardrail(url, body("response", [HARMFUL_REPLY], None, sent_along))
    assert screen.seen[-1] == (SAFE, HARMFUL_REPLY)
    alone = guardrail(url, body("response", ["Knead it well."], "never-seen")).json()  # judged as a text
    assert alone["verdicts"][0]["verdict"] == "prompt_harmfulness" and screen.seen[-1] == ("Knead it well.", None)


def test_litellm_own_hook_calls_the_route(served, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch from the network at import
    pytest.importorskip("litellm")
    from litellm.proxy.guardrails.guardrail_hooks.generic_guardrail_api import GenericGuardrailAPI

    url, screen = served
    hook = GenericGuardrailAPI(api_base=url, headers={"Authorization": f"Bearer {KEY}"},
                               guardrail_name="guardreasoner", event_hook="pre_call")
    call = SimpleNamespace(litellm_call_id="litellm-call-1", litellm_trace_id="trace")

    def apply(texts, input_type, **inputs):
        return asyncio.run(hook.apply_guardrail(inputs={"texts": texts, **inputs}, request_data={},
                                                input_type=input_type, logging_obj=call))

    assert apply([SAFE], "request")["texts"] == [SAFE]
    with pytest.raises(Exception, match="GuardReasoner: prompt_harmfulness harmful"):
        apply([HARMFUL], "request", structured_messages=[{"role": "user", "content": HARMFUL}])
    apply([SAFE], "request")
    with pytest.raises(Exception, match="response_harmfulness harmful"):
        apply([HARMFUL_REPLY], "response")
    assert screen.seen[-1] == (SAFE, HARMFUL_REPLY)
