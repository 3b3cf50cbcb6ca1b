"""An OpenAI-compatible server (models, completions and chat, SSE streaming) over a local backend that can
complete model-ready text (the transformers backend), for the tests: the synthesis stage's teacher and the
OpenAI backend talk to it as they would to ``vllm serve``. Not part of the library: the guard service serves
the guard, not a generic LLM."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Literal

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from guardreasoner.backends.base import Generation, SamplingConfig
from guardreasoner.service.serving import holding


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    # Unknown OpenAI fields (n, user, echo, ...) are ignored rather than refused, as OpenAI clients send them.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="one prompt, or a list of prompts")
    logprobs: int | None = Field(None, ge=0, le=20)

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)


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


class OpenAIServing:
    """Completions and chat for ``backend`` (which has ``complete`` and ``complete_stream``) under the model
    ``name``; at most ``max_tokens`` new tokens a request. One request uses the model at a time (a fast
    tokenizer is not safe in two threads at once)."""

    def __init__(self, backend, name: str, max_tokens: int = 2048, timeout_s: float = 300.0):
        self.backend, self.name, self.max_tokens, self.timeout_s = backend, name, max_tokens, timeout_s
        self.lock = threading.Lock()

    def sampling(self, body: _Sampling, logprobs: int) -> SamplingConfig:
        if body.model not in (None, self.name):
            raise HTTPException(404, f"model {body.model!r} not served; this server has {self.name!r}")
        wanted = body.max_tokens or body.max_completion_tokens
        if wanted is not None and wanted > self.max_tokens:
            raise HTTPException(422, f"max_tokens={wanted} is over this server's cap of {self.max_tokens}")
        return SamplingConfig(
            max_new_tokens=wanted or min(256, self.max_tokens),
            # OpenAI's defaults when a field is absent or null.
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_logprobs=logprobs,
            seed=body.seed,
        )

    async def generate(self, texts: list[str], sampling: SamplingConfig, templated: bool = False):
        def locked():
            with self.lock:
                return self.backend.complete(texts, sampling, templated=templated)

        try:
            return await asyncio.wait_for(run_in_threadpool(locked), self.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"generation took over the server's {self.timeout_s} s limit")

    def stream(self, text: str, sampling: SamplingConfig, templated: bool, chunk_event, include_usage: bool,
               base: dict, opening: dict | None = None) -> StreamingResponse:
        """Each chunk as ``chunk_event(chunk)`` gives its choice, after the ``opening`` choice if any."""
        def events():
            if opening is not None:
                yield _sse(base | {"choices": [opening]})
            for chunk in self.backend.complete_stream(text, sampling, templated=templated):
                yield _sse(base | {"choices": [chunk_event(chunk)]})
                if chunk.generation is not None and include_usage:
                    yield _sse(base | {"choices": [], "usage": _usage([chunk.generation])})
            yield _sse("[DONE]")

        async def held():
            async with holding(self.lock):
                async for event in iterate_in_threadpool(events()):
                    yield event

        return StreamingResponse(held(), media_type="text/event-stream")

    async def completions(self, body: CompletionRequest):
        prompts = body.prompts()
        if not prompts:
            raise HTTPException(422, "'prompt' must be a string or a non-empty list of strings")
        sampling = self.sampling(body, body.logprobs or 0)
        base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.name}
        if body.stream:
            if len(prompts) != 1:
                raise HTTPException(422, "streaming takes one prompt")

            def choice(chunk):
                finish = chunk.generation.finish_reason if chunk.generation is not None else None
                return {"index": 0, "text": chunk.text if finish is None else "", "logprobs": None,
                        "finish_reason": finish}

            include_usage = body.stream_options is not None and body.stream_options.include_usage
            return self.stream(prompts[0], sampling, False, choice, include_usage, base)
        generations = await self.generate(prompts, sampling)
        return base | {
            "choices": [
                {"index": i, "text": g.text, "logprobs": _completion_logprobs(g), "finish_reason": g.finish_reason}
                for i, g in enumerate(generations)
            ],
            "usage": _usage(generations),
        }

    async def chat(self, body: ChatRequest):
        tokenizer = self.backend.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise HTTPException(422, f"{self.name} has no chat template; use /v1/completions")
        messages = [message.model_dump() for message in body.messages]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        sampling = self.sampling(body, body.top_logprobs or (5 if body.logprobs else 0))
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            def choice(chunk):
                if chunk.generation is not None:
                    return {"index": 0, "delta": {}, "finish_reason": chunk.generation.finish_reason}
                return {"index": 0, "delta": {"content": chunk.text}, "finish_reason": None}

            include_usage = body.stream_options is not None and body.stream_options.include_usage
            base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": self.name}
            opening = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            return self.stream(text, sampling, True, choice, include_usage, base, opening)
        (generation,) = await self.generate([text], sampling, templated=True)
        return {
            "id": rid, "object": "chat.completion", "created": created, "model": self.name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": generation.text},
                "logprobs": _chat_logprobs(generation) if body.logprobs else None,
                "finish_reason": generation.finish_reason,
            }],
            "usage": _usage([generation]),
        }


router = APIRouter()


def _serving(request: Request) -> OpenAIServing:
    return request.app.state.serving


@router.get("/v1/models")
def models(request: Request):
    name = _serving(request).name
    return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "guardreasoner-tests"}]}


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    return await _serving(request).completions(body)


@router.post("/v1/chat/completions")
async def chat(body: ChatRequest, request: Request):
    return await _serving(request).chat(body)


def openai_app(backend, name: str, **options) -> FastAPI:
    """A FastAPI app serving ``backend`` as the model ``name`` (``options``: ``OpenAIServing``'s)."""
    app = FastAPI(title="OpenAI-compatible test server")
    app.state.serving = OpenAIServing(backend, name, **options)
    app.include_router(router)
    return app
