"""Micro-batching: classify requests that arrive within a short window go to the model as one generate call.

On a local backend one generate call over n items costs far less than n calls one after another (the model
reads its weights once per step for the whole batch). A single worker thread owns the model: it takes the
first waiting request, waits up to ``max_wait_s`` for more (until ``max_items`` items), builds their prompts,
generates every request with the same sampling settings together and hands each request its own results.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from ..backends.base import SamplingConfig
from ..guard import Guard
from ..template import GuardPrompt

log = logging.getLogger(__name__)


@dataclass
class _Job:
    guard: Guard  # the server's guard, or a copy with this request's thresholds and sampling
    items: list[tuple[str, str | None]]  # (prompt, response)
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.perf_counter)
    built: list[GuardPrompt] = field(default_factory=list)

    def settle(self, results=None, error: BaseException | None = None) -> None:
        def apply():
            if self.future.done():  # the request timed out or its client left meanwhile
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(results)

        self.loop.call_soon_threadsafe(apply)


class Batcher:
    """Queue classify jobs and generate them in batches of at most ``max_items`` items (a single larger
    request still goes whole). ``max_items=1`` turns batching off: each request is its own generate call."""

    def __init__(self, guard: Guard, max_items: int = 8, max_wait_s: float = 0.01, on_batch=None):
        if max_items < 1 or max_wait_s < 0:
            raise ValueError("batching needs max_items >= 1 and max_wait_s >= 0")
        self.guard = guard
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        self.on_batch = on_batch  # called with (number of items, results) after each generate call
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._carry: _Job | None = None  # a job that did not fit the last batch: first in the next one
        # Held while the worker tokenizes and generates, and by the service's streams for theirs: a fast
        # tokenizer switches padding on and off per call and fails ("Already borrowed") if used by two threads.
        self.lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="guard-batcher", daemon=True)
        self._worker.start()

    async def classify(self, guard: Guard, items: list[tuple[str, str | None]]):
        """The results for ``items`` (already within the limits), in order, generated with ``guard``'s settings;
        raises ValueError for an item the guard cannot build a prompt from."""
        loop = asyncio.get_running_loop()
        job = _Job(guard, items, loop.create_future(), loop)
        self._queue.put(job)
        return await job.future

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=5)

    def _gather(self, first: _Job) -> list[_Job]:
        jobs, items = [first], len(first.items)
        deadline = time.perf_counter() + self.max_wait_s
        while items < self.max_items:
            left = deadline - time.perf_counter()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # let the run loop see the stop after this batch
                break
            if items + len(job.items) > self.max_items:
                self._carry = job
                break
            jobs.append(job)
            items += len(job.items)
        return [job for job in jobs if not job.future.done()]  # skip requests that gave up waiting

    def _run(self) -> None:
        while True:
            first, self._carry = self._carry or self._queue.get(), None
            if first is None:
                return
            try:
                with self.lock:
                    self._batch(self._gather(first))
            except Exception:  # never let the worker die: later requests would only time out
                log.exception("the batch worker failed")

    def _batch(self, gathered: list[_Job]) -> None:
        jobs = []
        for job in gathered:
            try:
                job.built = job.guard.prepare(job.items)
                jobs.append(job)
            except Exception as error:  # this request's own input: only it fails (ValueError answers 422)
                job.settle(error=error)
        # Jobs with other sampling settings (another max_new_tokens) cannot share a generate call.
        groups: list[tuple[SamplingConfig, list[_Job]]] = []
        for job in jobs:
            for sampling, members in groups:
                if sampling == job.guard.sampling:
                    members.append(job)
                    break
            else:
                groups.append((job.guard.sampling, [job]))
        for sampling, members in groups:
            self._generate(sampling, members)

    def _generate(self, sampling: SamplingConfig, jobs: list[_Job]) -> None:
        texts = [built.text for job in jobs for built in job.built]
        try:
            generations = self.guard.backend.generate(texts, sampling)
            results, start = [], 0
            for job in jobs:
                mine = generations[start : start + len(job.built)]
                start += len(job.built)
                results.append(read_results(job.guard, job.built, mine))
        except Exception as error:  # every waiting request learns of it; the worker keeps serving
            log.exception("generation failed for a batch of %d items", len(texts))
            for job in jobs:
                job.settle(error=error)
            return
        if self.on_batch:  # before the answers go out, so a client that then reads /metrics sees its batch
            try:
                self.on_batch(len(texts), [result for job_results in results for result in job_results])
            except Exception:  # bookkeeping must never stop the worker
                log.exception("on_batch failed")
        for job, job_results in zip(jobs, results):
            job.settle(job_results)


def read_results(guard: Guard, built: list[GuardPrompt], generations) -> list:
    """The guard's own reading of each output: parse, confidences, thresholds, fail-closed."""
    return [guard.read(prompt, generation) for prompt, generation in zip(built, generations)]


def generate_unbatched(guard: Guard, items: list[tuple[str, str | None]]) -> list:
    """One generate call for one request: for remote backends, which batch (or run concurrently) themselves."""
    built = guard.prepare(items)
    return read_results(guard, built, guard.backend.generate([prompt.text for prompt in built], guard.sampling))
