"""A streamed chat answer relayed sentence by sentence: each sentence is held back until the reply so far,
that sentence included, is judged; a harmful verdict ends the stream inside that sentence, so it is never
delivered whole.

``SentenceGate`` holds the text of the current sentence; ``relay`` reads the upstream's server-sent events and
writes the client's. Chunks are re-cut at sentence ends (a sentence often ends mid-chunk), so the client sees
the same text in other pieces, with each chunk's envelope (id, model, created) kept; per-token ``logprobs``
cannot follow re-cut text and are dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable

# A sentence ends at ., ! or ? (closing quotes or brackets after it allowed) followed by white space, or at a
# line break: a list item or a code line is a unit of its own.
SENTENCE_END = re.compile(r"""[.!?]+["')\]]*\s+|\n+""")
MAX_HELD_CHARS = 400  # text with no sentence end (code, a run-on) is judged at least this often


class SentenceGate:
    """The reply's text as it streams: ``take`` returns the text ready to be judged and released (complete
    sentences), keeping back the unfinished one; ``released`` is what the client has."""

    def __init__(self, max_held_chars: int = MAX_HELD_CHARS):
        self.max_held_chars = max_held_chars
        self.held = ""
        self.released = ""

    def take(self, text: str, final: bool = False) -> str:
        self.held += text
        if final:
            cut = len(self.held)
        else:
            ends = [match.end() for match in SENTENCE_END.finditer(self.held)]
            cut = ends[-1] if ends else 0
            if not cut and len(self.held) >= self.max_held_chars:  # no end in sight: at the last space, if
                cut = self.held.rfind(" ") + 1  # that leaves less than the limit held, else all of it
                if len(self.held) - cut >= self.max_held_chars:
                    cut = len(self.held)
        ready, self.held = self.held[:cut], self.held[cut:]
        return ready

    def release(self, text: str) -> None:
        self.released += text


def sse(data) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def error_event(message: str, kind: str = "upstream_error") -> str:
    """An OpenAI-style error in the stream (the ``openai`` client raises it as ``APIError``)."""
    return sse({"error": {"message": message, "type": kind, "code": None}})


class BrokenStream(ValueError):
    """The reply cannot go on: malformed upstream events, an upstream that went silent, a guard that failed."""


async def events(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """The data of each server-sent event (``data:`` lines joined; comments and other fields skipped)."""
    data: list[str] = []
    async for line in lines:
        if not line.strip():
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line.startswith((":", "event:", "id:", "retry:")):
            raise BrokenStream(f"the upstream sent a line that is not server-sent events: {line[:80]!r}")
    if data:
        yield "\n".join(data)


def _chunk(envelope: dict, delta: dict, finish_reason: str | None = None, **extra) -> dict:
    keep = {key: envelope[key] for key in ("id", "object", "created", "model", "system_fingerprint")
            if key in envelope}
    return {**keep, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}


Judge = Callable[[str], Awaitable[dict | None]]  # the reply so far -> None (pass) or the harmful verdict


async def relay(lines: AsyncIterator[str], judge: Judge, explain: Callable[[dict], str],
                max_held_chars: int = MAX_HELD_CHARS) -> AsyncIterator[str]:
    """The client's server-sent events for the upstream's ``lines``: content released sentence by sentence
    once ``judge`` passes the reply so far; on a harmful verdict a last chunk with ``finish_reason``
    ``content_filter`` and a ``guardreasoner`` field (``explanation``, ``verdict``), then ``[DONE]``."""
    gate = SentenceGate(max_held_chars)
    envelope: dict = {"object": "chat.completion.chunk"}
    try:
        async for data in events(lines):
            if data.strip() == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                raise BrokenStream(f"the upstream sent an event that is not JSON: {data[:80]!r}") from None
            if not isinstance(chunk, dict):
                raise BrokenStream("the upstream sent an event that is not a JSON object")
            if "error" in chunk:  # the upstream's own error: passed on as it is
                yield sse(chunk)
                return
            choices = chunk.get("choices") or []
            if not choices:  # usage, or an envelope alone: nothing to judge
                yield sse(chunk)
                continue
            envelope = chunk
            choice = choices[0]
            delta = dict(choice.get("delta") or {})
            text = delta.pop("content", None) or ""
            finish = choice.get("finish_reason")
            ready = gate.take(text, final=finish is not None)
            if ready.strip():
                verdict = await judge(gate.released + ready)
                if verdict is not None:
                    yield sse(_chunk(envelope, {}, "content_filter",
                                     guardreasoner={"explanation": explain(verdict), "verdict": verdict}))
                    yield sse("[DONE]")
                    return
            if ready:
                gate.release(ready)
                delta["content"] = ready
            if delta or finish is not None:
                yield sse(_chunk(envelope, delta, finish))
        if gate.held:  # the upstream ended without finishing its last sentence: judge it as it stands
            ready = gate.take("", final=True)
            verdict = await judge(gate.released + ready) if ready.strip() else None
            if verdict is not None:
                yield sse(_chunk(envelope, {}, "content_filter",
                                 guardreasoner={"explanation": explain(verdict), "verdict": verdict}))
            else:
                yield sse(_chunk(envelope, {"content": ready}))
        yield sse("[DONE]")
    except BrokenStream as error:
        yield error_event(f"{error}; the reply was stopped (its unchecked text withheld)")
