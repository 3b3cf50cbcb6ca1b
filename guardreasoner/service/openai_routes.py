"""The OpenAI-compatible routes (completions and chat, SSE streaming) over a local backend that can complete
model-ready text (the transformers backend). The synthesis stage's local teacher and the tests use them; on
GPUs ``vllm serve`` speaks the same API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import StreamingResponse

from ..backends.base import Generation, SamplingConfig
from .schemas import ChatRequest, CompletionRequest, ErrorResponse

ERRORS = {status: {"model": ErrorResponse} for status in (401, 404, 413, 422, 504)}


def _sampling(body, logprobs: int, cap: int) -> SamplingConfig:
    wanted = body.max_tokens or body.max_completion_tokens
    if wanted is not None and wanted > cap:
        raise HTTPException(422, f"max_tokens={wanted} is over this server's cap of {cap}")
    return SamplingConfig(
        max_new_tokens=wanted or min(256, cap),
        # OpenAI's defaults when a field is absent or null.
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_logprobs=logprobs,
        seed=body.seed,
    )


def _usage(generations: list[Generation]) -> dict:
    prompt = sum(g.prompt_tokens for g in generations)
    completion = sum(g.completion_tokens for g in generations)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion_logprobs(generation: Generation) -> dict | None:
    if generation.tokens is None or generation.top_logprobs is None:
        return None
    offsets, position = [], 0
    for token in generation.tokens:
        offsets.append(position)
        position += len(token)
    return {
        "tokens": generation.tokens,
        "token_logprobs": [top.get(token) for token, top in zip(generation.tokens, generation.top_logprobs)],
        "top_logprobs": generation.top_logprobs,
        "text_offset": offsets,
    }


def _chat_logprobs(generation: Generation) -> dict | None:
    if generation.tokens is None or generation.top_logprobs is None:
        return None
    return {
        "content": [
            {
                "token": token,
                "logprob": top.get(token, -9999.0),
                "bytes": list(token.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top.items()],
            }
            for token, top in zip(generation.tokens, generation.top_logprobs)
        ]
    }


def _sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def openai_router(backend, name: str, settings, model_lock=lambda: None) -> APIRouter:
    """Routes serving ``backend`` (which has ``complete`` and ``complete_stream``) under the model ``name``,
    within ``settings``' limits. ``model_lock()`` gives the lock the service's batch worker holds while it uses
    the model (or None): these routes hold it too, since the tokenizer is not safe in two threads at once."""
    router = APIRouter(tags=["OpenAI-compatible"], responses=ERRORS)
    tokenizer = backend.tokenizer

    def check(body, texts: list[str]) -> None:
        if body.model not in (None, name):
            raise HTTPException(404, f"model {body.model!r} not served; this server has {name!r}")
        if len(texts) > settings.max_items:
            raise HTTPException(413, f"{len(texts)} prompts in one request; the limit is {settings.max_items}")
        longest = max(len(text) for text in texts)
        if longest > settings.max_prompt_chars:
            raise HTTPException(413, f"a prompt of {longest} characters; the limit is {settings.max_prompt_chars}")

    def locked(call, *args, **kwargs):
        lock = model_lock()
        with lock if lock is not None else contextlib.nullcontext():
            return call(*args, **kwargs)

    async def in_time(call, *args, **kwargs):
        try:
            return await asyncio.wait_for(run_in_threadpool(locked, call, *args, **kwargs),
                                          settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"generation took over the server's {settings.request_timeout_s} s limit")

    def streaming(events):
        async def holding():
            lock = model_lock()
            while lock is not None and not lock.acquire(blocking=False):  # see app.hold
                await asyncio.sleep(0.01)
            try:
                async for event in iterate_in_threadpool(events):
                    yield event
            finally:
                if lock is not None:
                    lock.release()

        return StreamingResponse(holding(), media_type="text/event-stream")

    @router.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "guardreasoner"}]}

    @router.post("/v1/completions")
    async def completions(body: CompletionRequest):
        prompts = body.prompts()
        if not prompts:
            raise HTTPException(422, "'prompt' must be a string or a non-empty list of strings")
        check(body, prompts)
        sampling = _sampling(body, body.logprobs or 0, settings.max_new_tokens)
        created, rid = int(time.time()), f"cmpl-{uuid.uuid4().hex}"
        if body.stream:
            if len(prompts) != 1:
                raise HTTPException(422, "streaming takes one prompt")
            include_usage = body.stream_options is not None and body.stream_options.include_usage

            def events():
                for chunk in backend.complete_stream(prompts[0], sampling):
                    base = {"id": rid, "object": "text_completion", "created": created, "model": name}
                    if chunk.generation is None:
                        yield _sse(base | {"choices": [{"index": 0, "text": chunk.text, "logprobs": None,
                                                        "finish_reason": None}]})
                        continue
                    yield _sse(base | {"choices": [{"index": 0, "text": "", "logprobs": None,
                                                    "finish_reason": chunk.generation.finish_reason}]})
                    if include_usage:
                        yield _sse(base | {"choices": [], "usage": _usage([chunk.generation])})
                yield _sse("[DONE]")

            return streaming(events())
        generations = await in_time(backend.complete, prompts, sampling)
        return {
            "id": rid, "object": "text_completion", "created": created, "model": name,
            "choices": [
                {"index": i, "text": g.text, "logprobs": _completion_logprobs(g), "finish_reason": g.finish_reason}
                for i, g in enumerate(generations)
            ],
            "usage": _usage(generations),
        }

    @router.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        messages = [message.model_dump() for message in body.messages]
        check(body, ["".join(message["content"] for message in messages)])
        if not getattr(tokenizer, "chat_template", None):
            raise HTTPException(422, f"{name} has no chat template; use /v1/completions")
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        sampling = _sampling(body, body.top_logprobs or (5 if body.logprobs else 0), settings.max_new_tokens)
        created, rid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = body.stream_options is not None and body.stream_options.include_usage

            def events():
                base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name}
                yield _sse(base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                "finish_reason": None}]})
                for chunk in backend.complete_stream(text, sampling, templated=True):
                    if chunk.generation is None:
                        yield _sse(base | {"choices": [{"index": 0, "delta": {"content": chunk.text},
                                                        "finish_reason": None}]})
                        continue
                    yield _sse(base | {"choices": [{"index": 0, "delta": {},
                                                    "finish_reason": chunk.generation.finish_reason}]})
                    if include_usage:
                        yield _sse(base | {"choices": [], "usage": _usage([chunk.generation])})
                yield _sse("[DONE]")

            return streaming(events())
        (generation,) = await in_time(backend.complete, [text], sampling, templated=True)
        return {
            "id": rid, "object": "chat.completion", "created": created, "model": name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": generation.text},
                "logprobs": _chat_logprobs(generation) if body.logprobs else None,
                "finish_reason": generation.finish_reason,
            }],
            "usage": _usage([generation]),
        }

    return router
