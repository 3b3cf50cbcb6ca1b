"""One interface for every way of running the guard model: batch generation and streaming one prompt."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..template import PromptMode, render


@dataclass
class SamplingConfig:
    """Decoding settings; the defaults are the paper's evaluation settings (greedy, 2048 new tokens)."""

    max_new_tokens: int = 2048
    temperature: float = 0.0
    top_p: float = 1.0
    top_logprobs: int = 5  # alternatives kept per generated token, for verdict confidences; 0 keeps none
    seed: int | None = None


@dataclass
class Generation:
    """One completion with its cost. ``latency_s`` is the wall time of the call that made it divided by the
    number of completions that call made together (so batch figures are per row)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None  # "stop" (end of sequence), "length" (hit max_new_tokens) or "error"
    tokens: list[str] | None = None  # generated tokens as text, concatenating to about ``text``
    top_logprobs: list[dict[str, float]] | None = field(default=None, repr=False)  # per token: text -> log p
    error: str | None = None  # why this row produced nothing (finish_reason "error"); the other rows still ran


@dataclass
class StreamChunk:
    """New text from a stream; the last chunk of a stream also carries the whole ``Generation``."""

    text: str
    generation: Generation | None = None


ProgressCallback = Callable[[int], None]


def length_groups(order: list[int], lengths: list[int], batch_size: int,
                  max_batch_tokens: int | None = None) -> Iterator[list[int]]:
    """Consecutive rows of ``order`` (longest first) in groups of at most ``batch_size`` rows and, with
    ``max_batch_tokens``, at most that many padded prompt tokens (rows x the longest); one row always fits.

    Prefill attention holds rows x heads x length^2 scores per layer: 8 long inputs (1,300-1,800 tokens) of the
    embedded model peaked at 2.6 GiB on transformers before the first new token."""
    group: list[int] = []
    for index in order:
        longest = lengths[group[0]] if group else lengths[index]
        full = len(group) >= batch_size or (
            max_batch_tokens is not None and (len(group) + 1) * longest > max_batch_tokens)
        if group and full:
            yield group
            group = []
        group.append(index)
    if group:
        yield group


class Backend(ABC):
    """A generation backend. Prompts are user-turn texts; the backend renders them for its prompt mode."""

    name: str = ""

    def __init__(self, model_id: str, mode: PromptMode = "raw", tokenizer=None):
        self.model_id = model_id
        self.mode = mode
        self.tokenizer = tokenizer

    def render(self, prompt: str) -> str:
        return render(prompt, self.mode, self.tokenizer)

    @abstractmethod
    def generate(
        self, prompts: list[str], sampling: SamplingConfig, on_progress: ProgressCallback | None = None
    ) -> list[Generation]:
        """Complete every prompt, in order; ``on_progress(n)`` is called as each group of n finishes."""

    @abstractmethod
    def stream(
        self, prompt: str, sampling: SamplingConfig, stop: threading.Event | None = None
    ) -> Iterator[StreamChunk]:
        """Complete one prompt chunk by chunk; setting ``stop`` ends generation early."""

    def close(self) -> None:
        """Release what the backend holds (threads, engines, connections)."""
