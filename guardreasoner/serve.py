"""A small OpenAI-compatible server over the transformers backend (completions and chat, SSE streaming).

For CPUs, tests and the synthesis stage's local teacher; on GPUs use ``vllm serve``, which speaks the same API.
"""

from __future__ import annotations

import json
import time
import uuid

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import StreamingResponse

from .backends.base import Generation, SamplingConfig
from .backends.transformers_backend import TransformersBackend


def _sampling(body: dict, logprobs: int) -> SamplingConfig:
    return SamplingConfig(
        max_new_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 256),
        # OpenAI's defaults when a field is absent or null.
        temperature=float(body["temperature"]) if body.get("temperature") is not None else 1.0,
        top_p=float(body["top_p"]) if body.get("top_p") is not None else 1.0,
        top_logprobs=logprobs,
        seed=body.get("seed"),
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


def create_app(backend: TransformersBackend, served_name: str | None = None):
    """A FastAPI app serving ``backend``'s model under ``served_name``."""
    app = FastAPI(title="GuardReasoner OpenAI-compatible server")
    name = served_name or backend.model_id
    tokenizer = backend.tokenizer

    def check_model(body: dict) -> None:
        if body.get("model") not in (None, name):
            raise HTTPException(404, f"model {body.get('model')!r} not served; this server has {name!r}")

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "guardreasoner"}]}

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        check_model(body)
        prompts = body.get("prompt")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise HTTPException(400, "'prompt' must be a string or a list of strings")
        sampling = _sampling(body, int(body.get("logprobs") or 0))
        created, rid = int(time.time()), f"cmpl-{uuid.uuid4().hex}"
        if body.get("stream"):
            if len(prompts) != 1:
                raise HTTPException(400, "streaming takes one prompt")
            include_usage = (body.get("stream_options") or {}).get("include_usage")

            def events():
                for chunk in backend.complete_stream(prompts[0], sampling):
                    base = {"id": rid, "object": "text_completion", "created": created, "model": name}
                    if chunk.generation is None:
                        yield _sse(base | {"choices": [{"index": 0, "text": chunk.text, "logprobs": None, "finish_reason": None}]})
                        continue
                    yield _sse(base | {"choices": [{"index": 0, "text": "", "logprobs": None,
                                                    "finish_reason": chunk.generation.finish_reason}]})
                    if include_usage:
                        yield _sse(base | {"choices": [], "usage": _usage([chunk.generation])})
                yield _sse("[DONE]")

            return StreamingResponse(iterate_in_threadpool(events()), media_type="text/event-stream")
        generations = await run_in_threadpool(backend.complete, prompts, sampling)
        return {
            "id": rid, "object": "text_completion", "created": created, "model": name,
            "choices": [
                {"index": i, "text": g.text, "logprobs": _completion_logprobs(g), "finish_reason": g.finish_reason}
                for i, g in enumerate(generations)
            ],
            "usage": _usage(generations),
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        check_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HTTPException(400, "'messages' must be a non-empty list")
        if not getattr(tokenizer, "chat_template", None):
            raise HTTPException(400, f"{name} has no chat template; use /v1/completions")
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        sampling = _sampling(body, int(body.get("top_logprobs") or (5 if body.get("logprobs") else 0)))
        created, rid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        if body.get("stream"):
            include_usage = (body.get("stream_options") or {}).get("include_usage")

            def events():
                base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name}
                yield _sse(base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
                for chunk in backend.complete_stream(text, sampling, templated=True):
                    if chunk.generation is None:
                        yield _sse(base | {"choices": [{"index": 0, "delta": {"content": chunk.text}, "finish_reason": None}]})
                        continue
                    yield _sse(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": chunk.generation.finish_reason}]})
                    if include_usage:
                        yield _sse(base | {"choices": [], "usage": _usage([chunk.generation])})
                yield _sse("[DONE]")

            return StreamingResponse(iterate_in_threadpool(events()), media_type="text/event-stream")
        (generation,) = await run_in_threadpool(backend.complete, [text], sampling, templated=True)
        return {
            "id": rid, "object": "chat.completion", "created": created, "model": name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": generation.text},
                "logprobs": _chat_logprobs(generation) if body.get("logprobs") else None,
                "finish_reason": generation.finish_reason,
            }],
            "usage": _usage([generation]),
        }

    return app


def serve(model: str, host: str = "127.0.0.1", port: int = 8000, *, fallback: bool = True) -> None:
    import uvicorn

    from .models import model_folder, resolve_model

    spec = resolve_model(model, fallback=fallback)
    backend = TransformersBackend(model_folder(spec), model_id=spec.name)
    uvicorn.run(create_app(backend), host=host, port=port, log_level="info")
