"""What the service's routes do, held in one object on ``app.state.serving`` (vLLM's ``OpenAIServing*`` shape):
the guard, the settings, the metrics and the batch worker, and one method per endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field, replace

from fastapi import HTTPException
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool

from ..cascade import REASONING_MODES, Cascade
from ..guard import Guard
from ..operating_point import OperatingPoint, OperatingPointError, check_model
from ..releases import ServedScreen
from .batching import Batcher, generate_unbatched
from .metrics import Metrics
from .schemas import (
    Batching,
    ClassifyRequest,
    ClassifyResponse,
    DeltaEvent,
    DoneEvent,
    ErrorEvent,
    Health,
    Limits,
    OfferedPoint,
    OperatingPoints,
    Reasoning,
    ResultEvent,
    ScreenEvent,
)

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

    def limits(self) -> Limits:
        return Limits(max_items=self.max_items, max_item_chars=self.max_item_chars,
                      max_new_tokens=self.max_new_tokens, max_body_bytes=self.max_body_bytes,
                      request_timeout_s=self.request_timeout_s)


@contextlib.asynccontextmanager
async def holding(lock: threading.Lock | None):
    """Hold ``lock`` (None: nothing to hold) for the block, without blocking the event loop while waiting and
    without leaking it when the request is cancelled meanwhile (a thread blocked in acquire() would take it
    after the client left, and nobody would release it)."""
    if lock is None:
        yield
        return
    while not lock.acquire(blocking=False):
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        lock.release()


def sse(event: str, data) -> str:
    """One server-sent event; ``data`` a pydantic model of schemas (so /docs describes what is sent)."""
    return f"event: {event}\ndata: {data.model_dump_json(exclude_none=isinstance(data, ErrorEvent))}\n\n"


class GuardServing:
    """Classify, stream and health for one guard, within ``settings``' limits. ``start()`` (at app start-up)
    starts the batch worker for a local backend; ``close()`` stops it."""

    def __init__(self, guard: Guard | Cascade, name: str, settings: ServiceSettings | None = None,
                 operating_points: tuple[OperatingPoint, ...] = (), served: ServedScreen | None = None):
        # ``served``: the releases training.loop ships; each request takes the served release's screen
        self.served = served
        self.base_guard = guard
        guard = served.applied(guard) if served else guard
        self.name = name
        self.settings = replace(settings or ServiceSettings())  # a copy: the token cap is filled in
        if self.settings.max_new_tokens is None:
            self.settings.max_new_tokens = guard.sampling.max_new_tokens
        self.metrics = Metrics()
        self.remote = guard.backend.name in REMOTE_BACKENDS
        self.modes = [mode for mode in REASONING_MODES if mode == "full" or guard.screen is not None]
        self.batcher: Batcher | None = None
        self.operating_points = self._offered(operating_points)
        # the guard's own point (load_guard(operating_point=...)), where it is one of these: its mode is known
        self.default_point = self.operating_points.get(guard.operating_point)

    @property
    def guard(self) -> Guard | Cascade:
        """The guard a request starts with: the one loaded, with the served release's screen where there is one
        (a request keeps the guard it took, so a new release never changes a request under way)."""
        return self.served.applied(self.base_guard) if self.served else self.base_guard

    def reload(self) -> tuple[str | None, bool]:
        """Look at the releases' pointer now: the release served and whether it changed."""
        if self.served is None:
            raise HTTPException(404, "this server follows no releases folder (serve --releases DIR)")
        changed = self.served.check(force=True)
        return self.served.version, changed

    def _offered(self, points: tuple[OperatingPoint, ...]) -> dict[str, OperatingPoint]:
        """The points requests may name, by name; each must be this model's, in a mode this server offers."""
        offered: dict[str, OperatingPoint] = {}
        for point in points:
            check_model(point, self.guard.model_name)
            if point.reasoning not in self.modes:
                raise OperatingPointError(f"the operating point {point.folder} was calibrated with reasoning "
                                          f"{point.reasoning}, which this server does not offer ({self.modes})")
            if point.name in offered:
                raise OperatingPointError(f"two operating points are named {point.name!r} ({offered[point.name].folder}"
                                          f" and {point.folder}); requests choose them by folder name")
            offered[point.name] = point
        return offered

    def start(self) -> None:
        if not self.remote:
            self.batcher = Batcher(self.guard, self.settings.batch_max_size, self.settings.batch_wait_ms / 1000,
                                   self._on_batch)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    @property
    def model_lock(self) -> threading.Lock | None:
        """The lock the batch worker holds while it uses the model (None before start-up, or remote): whatever
        else uses the model holds it too, since a fast tokenizer is not safe in two threads at once."""
        return self.batcher.lock if self.batcher is not None else None

    def _on_batch(self, items: int, results) -> None:
        self.metrics.batches.inc()
        self.metrics.batch_items.observe(items)
        self.metrics.record_results(results)

    # --- /v1/classify ------------------------------------------------------------------------------------------

    async def classify(self, body: ClassifyRequest) -> ClassifyResponse:
        self._check_limits(body)
        chosen = self._request_guard(body)
        items = [(item.prompt, item.response) for item in body.items]
        batched = self.batcher is not None and chosen.reasoning == "full"
        if chosen.reasoning != "full":
            work = run_in_threadpool(self._classify_with_screen, chosen, items)
        elif batched:
            work = self.batcher.classify(chosen, items)
        else:
            work = run_in_threadpool(generate_unbatched, chosen, items)
        try:
            results = await asyncio.wait_for(work, self.settings.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"classifying took over the server's {self.settings.request_timeout_s} s limit")
        except ValueError as error:  # an item the guard cannot build a prompt from
            raise HTTPException(422, str(error))
        if chosen.reasoning == "full" and isinstance(chosen, Cascade):  # the screen's opinions and policies
            results = await run_in_threadpool(chosen.note_opinions, items, results)  # the encoder has its own lock
        if not batched:  # the batch worker records its own results
            self.metrics.record_results(results)
        return ClassifyResponse(model=self.name, results=[result.to_dict() for result in results])

    def _classify_with_screen(self, chosen: Cascade, items: list[tuple[str, str | None]]):
        """Modes auto and off: the cascade (screen, then the model for what the screen leaves), with the model's
        lock held the whole time so that the batch worker does not use the model meanwhile."""
        with self.model_lock or contextlib.nullcontext():
            return chosen.classify([{"prompt": prompt, "response": response} for prompt, response in items])

    # --- /v1/classify/stream -----------------------------------------------------------------------------------

    def stream(self, body: ClassifyRequest) -> AsyncIterator[str]:
        """The events of a stream, as text; the limits are checked now, before the response starts."""
        self._check_limits(body)
        return self._events(self._request_guard(body), body)

    async def _events(self, chosen: Guard | Cascade, body: ClassifyRequest) -> AsyncIterator[str]:
        limit = self.settings.request_timeout_s
        stop = threading.Event()
        timer = threading.Timer(limit, stop.set)
        timer.start()
        try:
            async with holding(self.model_lock):
                for index, item in enumerate(body.items):
                    updates = chosen.stream(item.prompt, item.response, stop=stop)
                    async for update in iterate_in_threadpool(updates):
                        settled = [asdict(event) for event in update.events]
                        if update.screen is not None and update.result is None:  # auto: the screen first
                            yield sse("screen", ScreenEvent(index=index, result=update.screen.to_dict()))
                        if update.result is None:
                            yield sse("delta", DeltaEvent(index=index, delta=update.delta, events=settled))
                            continue
                        if stop.is_set():
                            yield sse("error", ErrorEvent(index=index, detail=f"generation took over the server's "
                                                          f"{limit} s limit"))
                            return
                        self.metrics.record_results([update.result])
                        yield sse("result", ResultEvent(index=index, events=settled, result=update.result.to_dict()))
                yield sse("done", DoneEvent(model=self.name))
        except Exception:
            log.exception("streaming classification failed")
            yield sse("error", ErrorEvent(detail="generation failed; the server's log has the details"))
        finally:
            timer.cancel()
            stop.set()  # the client left or we are done: the model stops writing

    # --- /health -----------------------------------------------------------------------------------------------

    def health(self) -> Health:
        return Health(model=self.name, backend=self.guard.backend.name or type(self.guard.backend).__name__,
                      batching=Batching(enabled=self.batcher is not None, max_size=self.settings.batch_max_size,
                                        wait_ms=self.settings.batch_wait_ms),
                      limits=self.settings.limits(), auth=bool(self.settings.api_keys),
                      reasoning=Reasoning(default=self.guard.reasoning, modes=self.modes),
                      release=self.served.version if self.served else None,
                      operating_points=OperatingPoints(default=self.guard.operating_point, offered=[
                          OfferedPoint(name=point.name, reasoning=point.reasoning, target=point.target,
                                       thresholds=point.thresholds,
                                       calibrations={key: mapping.describe() for key, mapping
                                                     in point.calibrations.items()})
                          for point in self.operating_points.values()]))

    # --- shared by the classify endpoints ----------------------------------------------------------------------

    def _check_limits(self, body: ClassifyRequest) -> None:
        limit = self.settings.max_items
        if len(body.items) > limit:
            raise HTTPException(413, f"{len(body.items)} items in one request; the limit is {limit}")
        for index, item in enumerate(body.items):
            for part in ("prompt", "response"):
                length = len(getattr(item, part) or "")
                if length > self.settings.max_item_chars:
                    raise HTTPException(413, f"items.{index}.{part} has {length} characters; the limit is "
                                             f"{self.settings.max_item_chars}")

    def _request_point(self, body: ClassifyRequest) -> tuple[OperatingPoint | None, str | None]:
        """The operating point the request names (None: none named) and its reasoning mode: the one asked for,
        else the point's (None: the server's default mode)."""
        if body.operating_point is None:
            return None, body.reasoning
        point = self.operating_points.get(body.operating_point)
        if point is None:
            offered = (f"it offers {sorted(self.operating_points)}" if self.operating_points else
                       "it offers none (serve --operating-point DIR loads one)")
            raise HTTPException(422, f"this server has no operating point {body.operating_point!r}; {offered}")
        if body.reasoning is not None and body.reasoning != point.reasoning:
            raise HTTPException(422, f"the operating point {point.name!r} was calibrated with reasoning "
                                     f"{point.reasoning}: its thresholds do not fit {body.reasoning}'s probabilities; "
                                     f"ask for reasoning={point.reasoning!r} or name none")
        return point, point.reasoning

    def _request_guard(self, body: ClassifyRequest) -> Guard | Cascade:
        """The server's guard, or a copy with this request's max_new_tokens, reasoning mode, operating point and
        thresholds."""
        cap = self.settings.max_new_tokens
        if body.max_new_tokens is not None and body.max_new_tokens > cap:
            raise HTTPException(422, f"max_new_tokens={body.max_new_tokens} is over this server's cap of {cap}")
        point, reasoning = self._request_point(body)
        if reasoning is not None and reasoning not in self.modes:
            raise HTTPException(422, f"reasoning={reasoning!r} needs a screen, and this server has none; "
                                     f"it offers {self.modes}")
        chosen = self.guard
        if body.max_new_tokens is not None:
            chosen = chosen.with_sampling(max_new_tokens=body.max_new_tokens)
        if reasoning is not None and reasoning != chosen.reasoning:
            chosen = chosen.with_reasoning(reasoning)
        if point is not None:
            chosen = chosen.with_operating_point(point.name, point.thresholds, point.calibrations)
        elif self.default_point is not None and chosen.reasoning != self.default_point.reasoning:
            chosen = chosen.with_operating_point(None, {})  # its thresholds cut another mode's probabilities
        if body.thresholds:  # after the point's: they override it per verdict
            chosen = chosen.with_thresholds({**chosen.thresholds, **body.thresholds})
        return chosen

