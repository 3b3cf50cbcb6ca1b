"""The guard as an HTTP service: typed classify routes, health and metrics, behind keys and limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from dataclasses import asdict, dataclass, field, replace

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..backends.base import Backend
from ..cascade import REASONING_MODES
from ..guard import Guard
from .batching import Batcher, generate_unbatched
from .metrics import Metrics, MetricsMiddleware
from .openai_routes import openai_router
from .schemas import ClassifyRequest, ClassifyResponse, ErrorResponse, Health
from .security import APIKeyMiddleware, BodyLimitMiddleware

log = logging.getLogger(__name__)

# Backends that reach a model over the network: the far side batches (vLLM) or runs requests concurrently, so
# the service sends each request straight on instead of queueing it for one local worker.
REMOTE_BACKENDS = frozenset({"openai"})


@dataclass
class ServiceSettings:
    """Keys, limits and batching. ``max_new_tokens`` None: the guard's own setting is the cap."""

    api_keys: list[str] = field(default_factory=list)
    max_items: int = 32
    max_item_chars: int = 20_000
    max_new_tokens: int | None = None
    max_body_bytes: int = 1_000_000
    request_timeout_s: float = 300.0
    batch_max_size: int = 8
    batch_wait_ms: float = 10.0

    @property
    def max_prompt_chars(self) -> int:
        """For the OpenAI routes, whose texts hold the guard's instruction around a request and a reply."""
        return 2 * self.max_item_chars + 10_000

    def limits(self) -> dict:
        return {"max_items": self.max_items, "max_item_chars": self.max_item_chars,
                "max_new_tokens": self.max_new_tokens, "max_body_bytes": self.max_body_bytes,
                "request_timeout_s": self.request_timeout_s}


def _error_text(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"] if part != "body") or "body"
    if error["type"] == "json_invalid":
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')} at {where})"
    return f"{where}: {error['msg']}"


def _errors(error: RequestValidationError) -> list[dict]:
    # pydantic's own entries echo the input (possibly huge); keep where, what and why.
    return [{"loc": [part for part in e["loc"] if part != "body"], "msg": _error_text(e), "type": e["type"]}
            for e in error.errors()]


async def hold(lock: threading.Lock) -> threading.Lock:
    """Acquire ``lock`` without blocking the event loop or leaking it when the request is cancelled (a thread
    blocked in acquire() would take it after the client left, and nobody would release it)."""
    while not lock.acquire(blocking=False):
        await asyncio.sleep(0.01)
    return lock


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def create_app(guard: Guard | Backend, served_name: str | None = None, settings: ServiceSettings | None = None):
    """A FastAPI app serving ``guard`` (or a bare backend, wrapped in a default guard) under ``served_name``."""
    guard = guard if isinstance(guard, Guard) else Guard(guard)
    settings = replace(settings or ServiceSettings())  # a copy: the cap is filled in below
    if settings.max_new_tokens is None:
        settings.max_new_tokens = guard.sampling.max_new_tokens
    name = served_name or guard.model_name
    metrics = Metrics()
    remote = guard.backend.name in REMOTE_BACKENDS
    batcher: Batcher | None = None

    def batcher_lock():
        """The lock the batch worker holds while it uses the model (None before start-up, or remote)."""
        return batcher.lock if batcher is not None else None

    def on_batch(items: int, results) -> None:
        metrics.batches.inc()
        metrics.batch_items.observe(items)
        metrics.record_results(results)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        nonlocal batcher
        if not remote:
            batcher = Batcher(guard, settings.batch_max_size, settings.batch_wait_ms / 1000, on_batch)
        try:
            yield
        finally:
            if batcher:
                batcher.close()

    app = FastAPI(
        title="GuardReasoner service",
        summary="Classify a human user's request and an AI reply: harmful or not, refusal or compliance.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.guard = guard
    # Only documents the scheme in /docs (APIKeyMiddleware checks the keys, before any body is read).
    bearer = HTTPBearer(auto_error=False, description="an API key given to the server with --api-key(-file)")
    errors = {status: {"model": ErrorResponse} for status in (401, 413, 422, 504)}

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        details = _errors(error)
        return JSONResponse({"detail": "; ".join(d["msg"] for d in details[:5]), "errors": details}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        if error.status_code == 400 and isinstance(error.__cause__, UnicodeDecodeError):
            # FastAPI's body reader says only "There was an error parsing the body" for this.
            return JSONResponse({"detail": "the body is not valid UTF-8 JSON"}, 422)
        return await http_exception_handler(request, error)

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server's log has the details"}, 500)

    modes = [mode for mode in REASONING_MODES if mode == "full" or guard.screen is not None]

    def request_guard(body: ClassifyRequest) -> Guard:
        """The server's guard, or a copy with this request's max_new_tokens, thresholds and reasoning mode."""
        if body.max_new_tokens is not None and body.max_new_tokens > settings.max_new_tokens:
            raise HTTPException(422, f"max_new_tokens={body.max_new_tokens} is over this server's cap of "
                                     f"{settings.max_new_tokens}")
        if body.reasoning is not None and body.reasoning not in modes:
            raise HTTPException(422, f"reasoning={body.reasoning!r} needs a screen, and this server has none; "
                                     f"it offers {modes}")
        chosen = guard
        if body.max_new_tokens is not None or body.thresholds:
            chosen = guard.with_sampling(max_new_tokens=body.max_new_tokens or guard.sampling.max_new_tokens)
            chosen.thresholds = {**guard.thresholds, **(body.thresholds or {})}
        if body.reasoning is not None and body.reasoning != guard.reasoning:
            chosen = chosen.with_reasoning(body.reasoning)
        return chosen

    def classify_with_screen(chosen: Guard, items: list[tuple[str, str | None]]):
        """Modes auto and off: the cascade (screen, then the model for what the screen leaves), with the model's
        lock held the whole time so that the batch worker does not use the model meanwhile."""
        lock = batcher_lock()
        with lock if lock is not None else contextlib.nullcontext():
            return chosen.classify([{"prompt": prompt, "response": response} for prompt, response in items])

    def check_limits(body: ClassifyRequest) -> None:
        if len(body.items) > settings.max_items:
            raise HTTPException(413, f"{len(body.items)} items in one request; the limit is {settings.max_items}")
        for index, item in enumerate(body.items):
            for part in ("prompt", "response"):
                length = len(getattr(item, part) or "")
                if length > settings.max_item_chars:
                    raise HTTPException(413, f"items.{index}.{part} has {length} characters; the limit is "
                                             f"{settings.max_item_chars}")

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=errors, tags=["guard"],
              dependencies=[Depends(bearer)])
    async def classify(body: ClassifyRequest):
        """Classify every item; the results come back in order, each the library's `GuardResult.to_dict()`."""
        check_limits(body)
        chosen = request_guard(body)
        items = [(item.prompt, item.response) for item in body.items]
        batched = batcher is not None and chosen.reasoning == "full"
        try:
            if chosen.reasoning != "full":
                work = run_in_threadpool(classify_with_screen, chosen, items)
            elif batched:
                work = batcher.classify(chosen, items)
            else:
                work = run_in_threadpool(generate_unbatched, chosen, items)
            results = await asyncio.wait_for(work, settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"classifying took over the server's {settings.request_timeout_s} s limit")
        except ValueError as error:  # an item the guard cannot build a prompt from
            raise HTTPException(422, str(error))
        if not batched:  # the batch worker records its own results
            metrics.record_results(results)
        return {"model": name, "results": [result.to_dict() for result in results]}

    @app.post("/v1/classify/stream", tags=["guard"], responses=errors, dependencies=[Depends(bearer)],
              response_class=StreamingResponse)
    async def classify_stream(body: ClassifyRequest):
        """Server-sent events as the model writes, item after item: `screen` (mode auto: the screen's verdicts,
        before any reasoning), `delta` (new text and what it settled: steps, conclusions, verdicts), `result`
        (an item's full result, as /v1/classify gives it), then `done`; `error` if generation fails or runs
        over the time limit."""
        check_limits(body)
        chosen = request_guard(body)
        stop = threading.Event()

        async def events():
            timer = threading.Timer(settings.request_timeout_s, stop.set)
            timer.start()
            held = await hold(batcher.lock) if batcher is not None else None
            try:
                for index, item in enumerate(body.items):
                    updates = chosen.stream(item.prompt, item.response, stop=stop)
                    async for update in iterate_in_threadpool(updates):
                        settled = [asdict(event) for event in update.events]
                        if update.screen is not None and update.result is None:  # auto: the screen first
                            yield _sse("screen", {"index": index, "result": update.screen.to_dict()})
                        if update.result is None:
                            yield _sse("delta", {"index": index, "delta": update.delta, "events": settled})
                            continue
                        if stop.is_set():
                            yield _sse("error", {"index": index, "detail": "generation took over the server's "
                                                 f"{settings.request_timeout_s} s limit"})
                            return
                        metrics.record_results([update.result])
                        yield _sse("result", {"index": index, "events": settled, "result": update.result.to_dict()})
                yield _sse("done", {"model": name})
            except Exception:
                log.exception("streaming classification failed")
                yield _sse("error", {"detail": "generation failed; the server's log has the details"})
            finally:
                timer.cancel()
                stop.set()  # the client left or we are done: the model stops writing
                if held is not None:
                    held.release()

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health", response_model=Health, tags=["service"])
    def health():
        """Liveness, the model, and the limits a client must keep to (open: no key needed)."""
        return Health(model=name, backend=guard.backend.name or type(guard.backend).__name__,
                      batching={"enabled": batcher is not None, "max_size": settings.batch_max_size,
                                "wait_ms": settings.batch_wait_ms},
                      limits=settings.limits(), auth=bool(settings.api_keys),
                      reasoning={"default": guard.reasoning, "modes": modes})

    @app.get("/metrics", tags=["service"], response_class=Response, dependencies=[Depends(bearer)])
    def prometheus():
        """Prometheus text format: requests by route and status, latency, tokens, parse failures, fail-closed."""
        return Response(metrics.render(), media_type=metrics.content_type)

    routes = {route.path for route in app.routes if hasattr(route, "path")}
    backend = guard.backend
    if hasattr(backend, "complete") and hasattr(backend, "complete_stream"):
        openai = openai_router(backend, name, settings, batcher_lock)
        routes |= {route.path for route in openai.routes}
        app.include_router(openai, dependencies=[Depends(bearer)])

    # Starlette runs the last added middleware first: metrics see every answer, keys are checked before the
    # body is read, and the body limit guards every read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(APIKeyMiddleware, keys=settings.api_keys)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=routes)
    return app

