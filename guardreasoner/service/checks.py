"""The proxy's checks, batched across requests: every stream asks at each sentence end, so under load many
checks wait at once, and the screen judges a batch for little more than one item. One worker takes whatever
checks are waiting (up to the service's ``max_items``) to ``GuardServing.classify`` as one request; the checks that
arrive meanwhile form the next batch. A single check goes at once: there is no waiting window."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Histogram

from ..results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS
from .schemas import ClassifyRequest, Item


@dataclass
class _Check:
    item: Item
    key: str  # the verdict that decides
    future: asyncio.Future
    asked_at: float = field(default_factory=time.perf_counter)


class CheckMetrics:
    """The checks' own series, in the service's registry (so /metrics shows them beside the routes')."""

    def __init__(self, registry):
        self.batch = Histogram("guardreasoner_proxy_check_batch", "checks judged together per classify call",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=registry)
        self.seconds = Histogram("guardreasoner_proxy_check_seconds", "a check's time from asked to answered, "
                                 "waiting for the screen included", registry=registry,
                                 buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5))
        self.harmful = Counter("guardreasoner_proxy_harmful", "checks that found harmful text, by verdict",
                               ["verdict"], registry=registry)


class Checks:
    """``judge(prompt, reply)``: the deciding verdict as a dict (verdict, label, p_positive, decided_by). Call
    ``start()`` in the server's event loop and ``close()`` when it stops."""

    def __init__(self, serving):
        self.serving = serving
        self._queue: asyncio.Queue[_Check] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self.metrics = CheckMetrics(serving.metrics.registry)

    def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def judge(self, prompt: str, reply: str | None = None) -> dict:
        """The request's verdict, or (with a reply) the reply's with its request. A reply longer than the
        service's item limit is judged by its end, where the newest text is. Raises the service's
        HTTPException (a 504 when the guard runs over its time limit)."""
        if reply is not None:
            reply = reply[-self.serving.settings.max_item_chars:]
        check = _Check(Item(prompt=prompt, response=reply), PROMPT_HARMFULNESS if reply is None
                       else RESPONSE_HARMFULNESS, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(check)
        return await check.future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.serving.settings.max_items and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [check for check in batch if not check.future.done()]  # a client that left cancels its own
            if batch:
                await self._judge(batch)

    async def _judge(self, batch: list[_Check]) -> None:
        try:
            classified = await self.serving.classify(ClassifyRequest(items=[check.item for check in batch]))
        except Exception as error:  # every check of the batch learns of it; the worker goes on
            for check in batch:
                if not check.future.done():
                    check.future.set_exception(error)
            return
        self.metrics.batch.observe(len(batch))
        answered = time.perf_counter()
        for check, result in zip(batch, classified.results):
            verdict = result.verdicts[check.key]
            self.metrics.seconds.observe(answered - check.asked_at)
            if verdict.label == "harmful":
                self.metrics.harmful.labels(check.key).inc()
            if not check.future.done():
                check.future.set_result({"verdict": check.key, "label": verdict.label,
                                         "p_positive": verdict.p_positive, "decided_by": verdict.decided_by})
