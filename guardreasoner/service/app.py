"""The guard as an HTTP service: thin routes over the ``GuardServing`` on ``app.state.serving``, error answers,
and the middleware for keys, body size and metrics."""

from __future__ import annotations

import contextlib
import logging

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..backends.base import Backend
from ..guard import Classifier, Guard
from ..operating_point import OperatingPoint
from . import guardrails, moderations
from .metrics import MetricsMiddleware
from .schemas import ClassifyRequest, ClassifyResponse, ErrorResponse, Health, Reload, StreamEvent
from .security import APIKeyMiddleware, BodyLimitMiddleware
from .serving import GuardServing, ServiceSettings

log = logging.getLogger(__name__)

# Only documents the scheme in /docs (APIKeyMiddleware checks the keys, before any body is read).
bearer = HTTPBearer(auto_error=False, description="an API key given to the server with --api-key(-file)")
ERRORS = {status: {"model": ErrorResponse} for status in (401, 413, 422, 504)}
router = APIRouter()


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"  # so /docs files the stream's event schema under this type


def serving(request: Request) -> GuardServing:
    return request.app.state.serving


@router.post("/v1/classify", response_model=ClassifyResponse, responses=ERRORS, tags=["guard"],
             dependencies=[Depends(bearer)])
async def classify(body: ClassifyRequest, request: Request):
    """Classify every item; the results come back in order, each the library's `GuardResult.to_dict()`."""
    return await serving(request).classify(body)


@router.post("/v1/classify/stream", response_class=EventStreamResponse, tags=["guard"],
             responses={200: {"model": StreamEvent, "description": "server-sent events"}, **ERRORS},
             dependencies=[Depends(bearer)])
async def classify_stream(body: ClassifyRequest, request: Request):
    """Server-sent events as the model writes, item after item: `screen` (mode auto: the screen's verdicts,
    before any reasoning), `delta` (new text and what it settled: steps, conclusions, verdicts), `result`
    (an item's full result, as /v1/classify gives it), then `done`; `error` if generation fails or runs
    over the time limit."""
    return EventStreamResponse(serving(request).stream(body))


@router.get("/health", response_model=Health, tags=["service"])
def health(request: Request):
    """Liveness, the model, and the limits a client must keep to (open: no key needed)."""
    return serving(request).health()


@router.post("/v1/reload", response_model=Reload, responses=ERRORS, tags=["service"], dependencies=[Depends(bearer)])
def reload(request: Request):
    """Look at the releases folder now (serve --releases; it is also looked at every few seconds as requests
    come): a new release's screen serves the requests that start after it, those under way finish as they began."""
    release, changed = serving(request).reload()
    return Reload(release=release, changed=changed)


@router.get("/metrics", tags=["service"], response_class=Response, dependencies=[Depends(bearer)])
def prometheus(request: Request):
    """Prometheus text format: requests by route and status, latency, tokens, parse failures, fail-closed."""
    metrics = serving(request).metrics
    return Response(metrics.render(), media_type=metrics.content_type)


def _error_text(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"] if part != "body") or "body"
    if error["type"] == "json_invalid":
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')} at {where})"
    return f"{where}: {error['msg']}"


async def invalid(request: Request, error: RequestValidationError):
    # pydantic's own entries echo the input (possibly huge); keep where, what and why.
    details = [{"loc": [part for part in e["loc"] if part != "body"], "msg": _error_text(e), "type": e["type"]}
               for e in error.errors()]
    return JSONResponse({"detail": "; ".join(d["msg"] for d in details[:5]), "errors": details}, 422)


async def http_error(request: Request, error: StarletteHTTPException):
    if error.status_code == 400 and isinstance(error.__cause__, UnicodeDecodeError):
        # FastAPI's body reader says only "There was an error parsing the body" for this.
        return JSONResponse({"detail": "the body is not valid UTF-8 JSON"}, 422)
    return await http_exception_handler(request, error)


async def crashed(request: Request, error: Exception):
    log.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse({"detail": "internal error; the server's log has the details"}, 500)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.serving.start()
    try:
        yield
    finally:
        app.state.serving.close()


def create_app(guard: Classifier | Backend, served_name: str | None = None,
               settings: ServiceSettings | None = None, extra_routers: tuple[APIRouter, ...] = (),
               operating_points: tuple[OperatingPoint, ...] = (), releases=None):
    """A FastAPI app serving ``guard`` (a ``Guard`` or a ``Cascade``; a bare backend is wrapped in a default
    guard) under ``served_name``, with the drop-in routes (/v1/moderations, LiteLLM's guardrail API) and any
    ``extra_routers`` (the proxy's). ``operating_points`` (``load_operating_point``'s, for this model) are
    offered to requests by name; the guard's own (``load_guard(..., operating_point=)``) is the default.
    ``releases``: a folder ``training.loop`` ships to (or a ``releases.ServedScreen``): the service serves its
    current release's screen and follows it (``POST /v1/reload``, and a look every few seconds) without a restart."""
    from ..releases import ServedScreen

    guard = guard if isinstance(guard, Classifier) else Guard(guard)
    app = FastAPI(
        title="GuardReasoner service",
        summary="Classify a human user's request and an AI reply: harmful or not, refusal or compliance.",
        lifespan=lifespan,
        exception_handlers={RequestValidationError: invalid, StarletteHTTPException: http_error, Exception: crashed},
    )
    served = releases if isinstance(releases, ServedScreen) or releases is None else ServedScreen(releases)
    app.state.serving = GuardServing(guard, served_name or guard.model_name, settings, tuple(operating_points),
                                     served)
    app.state.guardrail = guardrails.Guardrail()
    routers = (router, moderations.router, guardrails.router, *extra_routers)
    for included in routers:
        app.include_router(included)
    # Starlette runs the last added middleware first: metrics see every answer, keys are checked before the
    # body is read, and the body limit guards every read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=app.state.serving.settings.max_body_bytes)
    app.add_middleware(APIKeyMiddleware, keys=app.state.serving.settings.api_keys)
    paths = {route.path for routes in (app.routes, *(r.routes for r in routers)) for route in routes
             if hasattr(route, "path")}
    app.add_middleware(MetricsMiddleware, metrics=app.state.serving.metrics, routes=paths)
    return app
