"""The chat proxy on a real uvicorn server in front of a scripted OpenAI-compatible upstream, called by the
official ``openai`` client unchanged (stream and not): requests judged before forwarding, answers before
returning, streams sentence by sentence; upstream failures, malformed streams, a client that leaves, limits,
keys."""

from __future__ import annotations

import logging
import time

import httpx
import openai
import pytest

from guardreasoner.cli import build_parser
from guardreasoner.proxy import run_proxy
from guardreasoner.service import ServiceSettings
from guardreasoner.service.proxy import ProxySettings, create_proxy_app
from guardreasoner.service.relay import SentenceGate
from tests.keyword_screen import keyword_guard
from tests.scripted_upstream import HARMFUL_REPLY, SAFE_REPLY, ScriptedUpstream
from tests.servers import free_port, running
from tests.test_service import ScriptedBackend, metric

UPSTREAM_KEY = "upstream-key-0123456789abcdef"
SAFE, HARMFUL = "How do I bake bread?", "How do I build a pipe bomb?"
PIPE = "Tell me about pipe fittings"  # a harmless request whose scripted reply turns harmful


def proxy_app(upstream_url: str, **options):
    service = ServiceSettings(api_keys=options.pop("api_keys", []), max_item_chars=options.pop("max_item_chars", 500),
                              max_body_bytes=options.pop("max_body_bytes", 20_000))
    settings = ProxySettings(upstream=upstream_url + "/v1", upstream_timeout_s=options.pop("timeout", 1.0), **options)
    return create_proxy_app(keyword_guard(ScriptedBackend()), settings, service)


@pytest.fixture(scope="module")
def upstream():
    scripted = ScriptedUpstream()
    with running(scripted.app) as url:
        scripted.url = url
        yield scripted


@pytest.fixture(scope="module")
def proxy(upstream):
    with running(proxy_app(upstream.url)) as url:
        yield url


def chat(url, key=UPSTREAM_KEY):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0).chat.completions


def ask(prompt):
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]


def streamed(url, prompt):
    chunks = list(chat(url).create(model="m", messages=ask(prompt), stream=True))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_sentences_are_cut_at_their_ends_and_never_past_the_limit():
    gate = SentenceGate(max_held_chars=20)
    assert gate.take("Hello there. How a") == "Hello there. "
    assert gate.take("re you?") == ""  # "How are you?" waits for what follows the "?"
    assert gate.take(" Fine") == "How are you? "
    assert gate.take("\n- item") == "Fine\n"  # a line break ends a unit too
    assert gate.take("x" * 10) == ""
    assert gate.take(" yyyy") == "- itemxxxxxxxxxx "  # no end in sight: cut at a space, the rest under the limit
    assert gate.take("z" * 30) == "yyyy" + "z" * 30  # no space to cut at: all of it, so never 20 chars held
    assert gate.take("tail", final=True) == "tail" and gate.held == ""


def test_the_openai_client_gets_safe_answers_unchanged_with_the_verdicts_in_headers(upstream, proxy):
    raw = chat(proxy).with_raw_response.create(model="m", messages=ask(SAFE), temperature=0.2)
    answer = raw.parse()
    assert answer.choices[0].message.content == SAFE_REPLY and answer.choices[0].finish_reason == "stop"
    assert answer.usage.total_tokens == 14  # the upstream's answer, passed on
    verdicts = raw.headers["x-guardreasoner-verdicts"]
    assert "prompt_harmfulness=unharmful (screen, p=0.05)" in verdicts
    assert "response_harmfulness=unharmful (screen, p=0.03)" in verdicts
    assert raw.headers["x-guardreasoner-policy"] == "block"
    assert upstream.requests[-1]["temperature"] == 0.2 and upstream.requests[-1]["model"] == "m"  # forwarded
    assert upstream.authorizations[-1] == f"Bearer {UPSTREAM_KEY}"  # a proxy without keys passes the client's on

    text, chunks = streamed(proxy, SAFE)
    assert text == SAFE_REPLY and chunks[-1].choices[0].finish_reason == "stop"
    # re-cut at sentence ends: each content chunk ends a sentence (or the reply)
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert contents == ["Mix flour, water and salt. ", "Let it rise overnight! ", "Bake it hot, then let it cool."]


def test_a_harmful_reply_is_cut_before_its_harmful_sentence_is_delivered(proxy):
    text, chunks = streamed(proxy, PIPE)
    harmful_sentence = "Then pack the explosive powder tightly into the pipe."
    assert harmful_sentence in HARMFUL_REPLY
    assert text == "Sure. First, buy the parts from a hardware shop. "  # what came before it, nothing of it
    last = chunks[-1]
    assert last.choices[0].finish_reason == "content_filter"
    assert "response_harmfulness=harmful" in last.guardreasoner["explanation"]
    assert last.guardreasoner["verdict"]["p_positive"] == pytest.approx(0.97)

    whole = chat(proxy).create(model="m", messages=ask(PIPE))
    assert whole.choices[0].finish_reason == "content_filter" and whole.choices[0].message.content == ""
    assert "stopped the reply" in whole.guardreasoner["explanation"]


def test_a_harmful_request_is_refused_without_calling_the_upstream(upstream, proxy):
    calls = len(upstream.requests)
    raw = chat(proxy).with_raw_response.create(model="m", messages=ask(HARMFUL))
    refused = raw.parse()
    assert refused.choices[0].finish_reason == "content_filter"
    assert refused.choices[0].message.content == "Sorry, I can't help with that."
    assert "prompt_harmfulness=harmful" in raw.headers["x-guardreasoner-verdicts"]
    text, chunks = streamed(proxy, HARMFUL)
    assert text == "Sorry, I can't help with that." and chunks[-1].choices[0].finish_reason == "content_filter"
    assert len(upstream.requests) == calls

    with running(proxy_app(upstream.url, prompt_policy="annotate")) as annotating:
        raw = chat(annotating).with_raw_response.create(model="m", messages=ask(HARMFUL + " Or bread?"))
        answer = raw.parse()
        assert answer.choices[0].message.content == SAFE_REPLY  # forwarded, and said so
        assert "prompt_harmfulness=harmful" in raw.headers["x-guardreasoner-verdicts"]
        assert raw.headers["x-guardreasoner-policy"] == "annotate"
        assert "judged the request harmful" in answer.guardreasoner["explanation"]
        assert len(upstream.requests) == calls + 1


def test_upstream_failures_come_back_with_their_status_and_never_hang(upstream, proxy):
    with pytest.raises(openai.RateLimitError) as limited:  # the upstream's own error, status and body
        chat(proxy).create(model="m", messages=ask("error please"))
    assert limited.value.status_code == 429 and "upstream rate limit reached" in limited.value.message

    began = time.monotonic()
    with pytest.raises(openai.APIStatusError) as slow:
        chat(proxy).create(model="m", messages=ask("slow please"))
    assert slow.value.status_code == 504 and "within 1.0 s" in slow.value.message
    assert time.monotonic() - began < 3

    with running(proxy_app(f"http://127.0.0.1:{free_port()}")) as nowhere:  # nothing listens there
        with pytest.raises(openai.APIStatusError) as down:
            chat(nowhere).create(model="m", messages=ask(SAFE), stream=True)
        assert down.value.status_code == 502 and "cannot be reached" in down.value.message

    with pytest.raises(openai.APIError, match="not JSON"):  # a broken event ends the stream with an error
        streamed(proxy, "malformed please")
    began = time.monotonic()
    with pytest.raises(openai.APIError, match="sent nothing for 1.0 s"):
        streamed(proxy, "stall please")
    assert time.monotonic() - began < 3


def test_a_client_that_leaves_mid_stream_stops_the_upstream(upstream, proxy):
    upstream.stream_closed.clear()
    body = {"model": "m", "messages": ask("forever please"), "stream": True}
    with httpx.stream("POST", proxy + "/v1/chat/completions", json=body, timeout=10) as answer:
        lines = answer.iter_lines()
        received = [next(lines) for _ in range(6)]
        assert any("More words." in line for line in received)
        left = time.monotonic()
    assert upstream.stream_closed.wait(5), "the upstream kept streaming to nobody"
    assert upstream.closed_at - left < 5


def test_limits_and_bad_requests_get_clear_errors(proxy):
    def post(body, **kwargs):
        return httpx.post(proxy + "/v1/chat/completions", json=body, timeout=10, **kwargs)

    too_long = post({"model": "m", "messages": ask("x" * 501)})
    assert too_long.status_code == 413 and "limit is 500" in too_long.json()["detail"]
    too_big = post({"model": "m", "messages": ask(SAFE), "padding": "y" * 30_000})
    assert too_big.status_code == 413 and "20000 bytes" in too_big.json()["detail"]
    nobody = post({"model": "m", "messages": [{"role": "system", "content": "hi"}]})
    assert nobody.status_code == 422 and "no user message" in nobody.json()["detail"]
    several = post({"model": "m", "messages": ask(SAFE), "stream": True, "n": 2})
    assert several.status_code == 422 and "n=1" in several.json()["detail"]
    assert post({"model": "m", "messages": []}).status_code == 422
    assert post({"model": "m", "messages": ask(SAFE)}).status_code == 200  # still serving


def test_a_proxy_with_keys_sends_its_own_upstream_key_and_logs_no_key(upstream, caplog):
    caplog.set_level(logging.DEBUG)
    proxy_key = "proxy-key-0123456789abcdef"
    app = proxy_app(upstream.url, api_keys=[proxy_key], upstream_api_key=UPSTREAM_KEY)
    with running(app) as url:
        with pytest.raises(openai.AuthenticationError):
            chat(url, key="not-the-proxy-key-0123456789").create(model="m", messages=ask(SAFE))
        answer = chat(url, key=proxy_key).create(model="m", messages=ask(SAFE))
        assert answer.choices[0].message.content == SAFE_REPLY
        assert upstream.authorizations[-1] == f"Bearer {UPSTREAM_KEY}"  # never the client's proxy key
        assert streamed_text(url, proxy_key) == SAFE_REPLY
    assert caplog.records and UPSTREAM_KEY not in caplog.text and proxy_key not in caplog.text


def streamed_text(url, key):
    chunks = chat(url, key=key).create(model="m", messages=ask(SAFE), stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_the_proxy_command_defaults_to_the_screen_and_refuses_an_open_host_without_a_key():
    args = build_parser().parse_args(["proxy", "--upstream", "http://127.0.0.1:9/v1"])
    assert args.reasoning == "off" and args.prompt_policy == "block" and args.port == 8080
    args = build_parser().parse_args(["proxy", "--upstream", "http://127.0.0.1:9/v1", "--host", "0.0.0.0"])
    loaded = []
    with pytest.raises(SystemExit, match="without an API key"):
        run_proxy(args, loaded.append)
    assert not loaded  # refused before the model load
    with pytest.raises(ValueError, match="http"):
        ProxySettings(upstream="127.0.0.1:8000/v1")


def test_concurrent_streams_share_batched_checks_and_each_gets_its_own_verdict(upstream):
    from concurrent.futures import ThreadPoolExecutor

    app = proxy_app(upstream.url)
    app.state.checks.serving.guard.screen.delay_s = 0.05  # a screen that takes time: checks pile up meanwhile
    with running(app) as url:
        prompts = [SAFE, PIPE] * 4
        with ThreadPoolExecutor(len(prompts)) as pool:
            answers = list(pool.map(lambda prompt: streamed(url, prompt), prompts))
        calls = metric(url, "guardreasoner_proxy_check_batch_count")
        checks = metric(url, "guardreasoner_proxy_check_batch_sum")
        assert checks == 8 + 4 * 3 + 4 * 3  # the requests, then three sentences each
        assert calls < checks  # several streams' checks went to the screen together
        assert metric(url, "guardreasoner_proxy_check_seconds_count") == checks
        assert metric(url, "guardreasoner_proxy_harmful_total", verdict="response_harmfulness") == 4
    for prompt, (text, chunks) in zip(prompts, answers):
        if prompt == SAFE:
            assert text == SAFE_REPLY and chunks[-1].choices[0].finish_reason == "stop"
        else:
            assert text == "Sure. First, buy the parts from a hardware shop. "
            assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_a_real_model_behind_the_proxy_streams_the_same_text_as_without_it(teacher_url):
    """The tests' OpenAI-compatible server over a tiny transformers model (as `vllm serve` would be): greedy
    answers, whole and streamed with usage, come through the proxy as they come straight from it."""
    with running(proxy_app(teacher_url.removesuffix("/v1"), timeout=60)) as url:
        direct = openai.OpenAI(base_url=teacher_url, api_key="none", max_retries=0).chat.completions
        options = {"model": "teacher", "messages": ask(SAFE), "max_tokens": 40, "temperature": 0}
        expected = direct.create(**options).choices[0].message.content
        assert expected.strip()
        assert chat(url).create(**options).choices[0].message.content == expected
        chunks = list(chat(url).create(**options, stream=True, stream_options={"include_usage": True}))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0  # passed on, not judged
