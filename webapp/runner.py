"""The functions that generate, as plain data in and out: on ZeroGPU they run in spaces' forked GPU worker, which
receives their arguments and sends back each value pickled. Everything else stays in the app's process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from guardreasoner.rows import classify_rows

from .gpu import gpu_seconds, on_gpu
from .settings import RunSettings


def stream_update(update) -> dict:
    """A guard's StreamUpdate as the page and the streaming API both receive it: the text so far, seconds, the
    stream parser's new events, the result once there is one, and the screen's early result (auto and off)."""
    return {
        "done": update.result is not None,
        "text": update.text,
        "elapsed_s": update.elapsed_s,
        "events": [{key: value for key, value in asdict(event).items() if value is not None}
                   for event in update.events],
        "result": update.result.to_dict() if update.result else None,
        "screen": update.screen.to_dict() if update.screen else None,
    }


@dataclass(frozen=True)
class GpuCalls:
    """Each generating function twice: under ``spaces.GPU`` for the local models, and plain for endpoints
    (a remote server generates; no GPU needs to be lent for it)."""

    stream_on_gpu: Callable[..., Iterator[dict]]
    classify_on_gpu: Callable[..., dict]
    batch_on_gpu: Callable[..., Iterator[list[dict]]]
    stream_here: Callable[..., Iterator[dict]]
    classify_here: Callable[..., dict]
    batch_here: Callable[..., Iterator[list[dict]]]

    def stream(self, prompt: str, response: str, settings: RunSettings) -> Iterator[dict]:
        """Closing this generator closes the guard's stream, which stops the model (on ZeroGPU spaces turns the
        close into the worker's stop)."""
        call = self.stream_here if settings.uses_endpoint else self.stream_on_gpu
        return call(prompt, response, settings)

    def classify(self, prompt: str, response: str, settings: RunSettings) -> dict:
        call = self.classify_here if settings.uses_endpoint else self.classify_on_gpu
        return call(prompt, response, settings)

    def batch(self, rows: list, settings: RunSettings) -> Iterator[list[dict]]:
        """The records of ``rows``, one row at a time (progress per row)."""
        call = self.batch_here if settings.uses_endpoint else self.batch_on_gpu
        return call(rows, settings)


def gpu_calls(state) -> GpuCalls:
    """The generating functions of an app. Closures over its state rather than functions taking it: spaces
    pickles a call's arguments, and a loaded model cannot travel that way; the forked worker finds the state,
    models included, in its own copy of the app's memory."""

    def stream(prompt: str, response: str, settings: RunSettings) -> Iterator[dict]:
        guard = state.guard(settings, load=False)
        for update in guard.stream(prompt, response or None):
            yield stream_update(update)

    def classify(prompt: str, response: str, settings: RunSettings) -> dict:
        return state.guard(settings, load=False).classify_one(prompt, response or None).to_dict()

    def batch(rows: list, settings: RunSettings) -> Iterator[list[dict]]:
        yield from classify_rows(state.guard(settings, load=False), rows, 1)

    # Sized from what each call runs: one answer; or the chunk's rows, generated one after another.
    def one_answer(prompt, response, settings):
        return gpu_seconds(settings.max_new_tokens)

    def rows_in_turn(rows, settings):
        return gpu_seconds(settings.max_new_tokens, answers=len(rows))

    return GpuCalls(on_gpu(one_answer)(stream), on_gpu(one_answer)(classify), on_gpu(rows_in_turn)(batch),
                    stream, classify, batch)
