"""An OpenAI-compatible ``/v1/chat/completions`` in front of any OpenAI-compatible server (``vllm serve``, a
hosted API), guarding both ends of the call:

- the last user message is judged first (``prompt_harmfulness``); policy ``block`` answers a harmful one with a
  refusal (``finish_reason: content_filter``) and never calls the upstream, ``annotate`` forwards it and says so;
- a whole answer is judged before it is returned (``response_harmfulness``, with its request); a harmful one
  comes back empty with ``finish_reason: content_filter``;
- a streamed answer is relayed sentence by sentence (``relay.py``) and ends inside the first harmful sentence.

Every answer carries ``X-GuardReasoner-Verdicts`` (the verdicts applied) and ``X-GuardReasoner-Policy``; a cut or
annotated answer has a ``guardreasoner`` field with a short explanation. Keys: a proxy without keys of its own
passes the client's ``Authorization`` to the upstream; one with keys (as the service: ``--api-key``) checks the
client's and sends the upstream its own ``upstream_api_key``. Keys are never logged. The proxy is the service's
app (same keys, limits, metrics, batching) with this route added.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..proxy import POLICIES, REFUSAL
from ..results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS
from .checks import Checks
from .guardrails import last_user_message, text_of
from .moderations import bearer, openai_error
from .relay import MAX_HELD_CHARS, BrokenStream, relay, sse

VERDICTS_HEADER = "x-guardreasoner-verdicts"
POLICY_HEADER = "x-guardreasoner-policy"
router = APIRouter()


@dataclass
class ProxySettings:
    """``upstream``: the OpenAI base URL (``http://host:8000/v1``); ``upstream_timeout_s``: how long the upstream
    may stay silent (connecting, answering, between two streamed chunks)."""

    upstream: str
    upstream_api_key: str | None = None
    prompt_policy: Literal["block", "annotate"] = "block"
    upstream_timeout_s: float = 60.0
    refusal: str = REFUSAL
    max_held_chars: int = MAX_HELD_CHARS

    def __post_init__(self):
        if self.prompt_policy not in POLICIES:
            raise ValueError(f"prompt_policy={self.prompt_policy!r}; choose one of {', '.join(POLICIES)}")
        if not self.upstream.startswith(("http://", "https://")):
            raise ValueError(f"the upstream must be an http(s) URL, not {self.upstream!r}")
        self.upstream = self.upstream.rstrip("/")


class ChatRequest(BaseModel):
    """OpenAI's chat request; every field besides these is forwarded as sent."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    n: int | None = Field(None, ge=1)


def describe(verdict: dict) -> str:
    p = f", p={verdict['p_positive']:.2f}" if verdict["p_positive"] is not None else ""
    return f"{verdict['verdict']}={verdict['label']} ({verdict['decided_by']}{p})"


def explain(verdict: dict) -> str:
    if verdict["verdict"] == PROMPT_HARMFULNESS:
        return f"GuardReasoner judged the request harmful: {describe(verdict)}"
    return f"GuardReasoner stopped the reply: with its latest sentence it was judged harmful: {describe(verdict)}"


def upstream_headers(request: Request, settings: ProxySettings, proxy_has_keys: bool) -> dict[str, str]:
    if settings.upstream_api_key:
        return {"authorization": f"Bearer {settings.upstream_api_key}"}
    if not proxy_has_keys and "authorization" in request.headers:  # the client's key is the upstream's
        return {"authorization": request.headers["authorization"]}
    return {}


def refusal(body: ChatRequest, settings: ProxySettings, verdict: dict, headers: dict) -> Response:
    """A blocked request's answer: the refusal as the assistant's message, the upstream never called."""
    envelope = {"id": f"chatcmpl-guard-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": str(body.model_extra.get("model", "guardreasoner")),
                "guardreasoner": {"explanation": explain(verdict), "verdict": verdict}}
    if not body.stream:
        return JSONResponse({**envelope, "object": "chat.completion", "choices": [{
            "index": 0, "message": {"role": "assistant", "content": settings.refusal},
            "finish_reason": "content_filter"}]}, headers=headers)
    chunk = {**envelope, "object": "chat.completion.chunk", "choices": [{
        "index": 0, "delta": {"role": "assistant", "content": settings.refusal}, "finish_reason": "content_filter"}]}
    return StreamingResponse(iter([sse(chunk), sse("[DONE]")]), media_type="text/event-stream", headers=headers)


def passed_on(answer: httpx.Response, content: bytes, headers: dict) -> Response:
    """The upstream's error, with its status and body, as it sent them."""
    return Response(content, answer.status_code, headers=headers,
                    media_type=answer.headers.get("content-type", "application/json"))


async def read_whole(answer: httpx.Response) -> bytes:
    try:
        return await answer.aread()
    finally:
        await answer.aclose()


@router.post("/v1/chat/completions", tags=["proxy"], dependencies=[Depends(bearer)])
async def chat_completions(body: ChatRequest, request: Request):
    """OpenAI's chat completions, forwarded to the upstream with the request and the answer judged (see the
    module's docstring); upstream errors come back with their own status."""
    state = request.app.state
    serving, settings = state.serving, state.proxy
    prompt = last_user_message(body.messages)
    if prompt is None:
        raise HTTPException(422, "messages: no user message with text to check")
    if len(prompt) > serving.settings.max_item_chars:
        raise HTTPException(413, f"the last user message has {len(prompt)} characters; the limit is "
                                 f"{serving.settings.max_item_chars}")
    if body.stream and (body.n or 1) > 1:
        raise HTTPException(422, "n: a streamed answer is checked one choice at a time; ask for n=1")
    asked = await state.checks.judge(prompt)
    headers = {POLICY_HEADER: settings.prompt_policy, VERDICTS_HEADER: describe(asked)}
    if asked["label"] == "harmful" and settings.prompt_policy == "block":
        return refusal(body, settings, asked, headers)
    client: httpx.AsyncClient = state.upstream
    forwarded = client.build_request("POST", f"{settings.upstream}/chat/completions",
                                     json=body.model_dump(exclude_unset=True),
                                     headers=upstream_headers(request, settings, bool(serving.settings.api_keys)))
    try:
        answer = await client.send(forwarded, stream=body.stream)
        content = None if body.stream and answer.status_code == 200 else await read_whole(answer)
    except httpx.TimeoutException:
        return openai_error(504, f"the upstream gave no answer within {settings.upstream_timeout_s} s",
                            "upstream_timeout", headers)
    except httpx.HTTPError as error:
        return openai_error(502, f"the upstream cannot be reached ({type(error).__name__})", "upstream_unreachable",
                            headers)
    if answer.status_code != 200:
        return passed_on(answer, content, headers)
    annotation = asked if asked["label"] == "harmful" else None  # annotate: forwarded, and said so
    if body.stream:
        headers[VERDICTS_HEADER] += f"; {RESPONSE_HARMFULNESS}=per sentence"
        return StreamingResponse(_streamed(answer, state.checks, settings, prompt), media_type="text/event-stream",
                                 headers=headers)
    return await _whole(content, state.checks, prompt, annotation, headers)


async def _whole(content: bytes, checks: Checks, prompt: str, annotation: dict | None, headers: dict) -> Response:
    try:
        data = json.loads(content)
        choices = data["choices"]
    except (ValueError, KeyError, TypeError):
        return openai_error(502, "the upstream's answer is not a chat completion", "upstream_error", headers)
    cut = None
    for choice in choices:
        message = choice.get("message") or {}
        reply = text_of(message.get("content"))
        if not reply.strip():
            continue
        verdict = await checks.judge(prompt, reply)
        headers[VERDICTS_HEADER] += f"; {describe(verdict)}"
        if verdict["label"] == "harmful":
            message["content"], choice["finish_reason"], cut = "", "content_filter", verdict
    if cut or annotation:
        data["guardreasoner"] = {"explanation": explain(cut or annotation), "verdict": cut or annotation}
    return JSONResponse(data, headers=headers)


async def _streamed(answer: httpx.Response, checks: Checks, settings: ProxySettings, prompt: str):
    async def lines():
        try:
            async for line in answer.aiter_lines():
                yield line
        except httpx.TimeoutException:
            raise BrokenStream(f"the upstream sent nothing for {settings.upstream_timeout_s} s") from None
        except httpx.HTTPError as error:
            raise BrokenStream(f"the upstream connection failed ({type(error).__name__})") from None

    async def harmful(reply: str) -> dict | None:
        try:
            verdict = await checks.judge(prompt, reply)
        except HTTPException as error:  # the guard timed out: nothing unchecked goes out
            raise BrokenStream(f"the guard could not judge the reply ({error.detail})") from None
        return verdict if verdict["label"] == "harmful" else None

    try:
        async for event in relay(lines(), harmful, explain, settings.max_held_chars):
            yield event
    finally:  # done, cut, or the client left: the upstream stops generating
        await answer.aclose()


def create_proxy_app(guard, settings: ProxySettings, service=None, served_name: str | None = None):
    """The service's app (``service``: its ``ServiceSettings``) with ``/v1/chat/completions`` proxied to
    ``settings.upstream``."""
    from .app import create_app

    app = create_app(guard, served_name, service, extra_routers=(router,))
    app.state.proxy = settings
    app.state.checks = Checks(app.state.serving)
    serve_guard = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with serve_guard(app), httpx.AsyncClient(timeout=settings.upstream_timeout_s) as client:
            app.state.upstream = client
            app.state.checks.start()
            try:
                yield
            finally:
                await app.state.checks.close()

    app.router.lifespan_context = lifespan
    return app
