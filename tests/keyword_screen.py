"""A screen whose probabilities follow keywords, for the drop-in routes' tests: "bomb" in a request makes it
harmful (0.95, else 0.05), "explosive" in a reply makes the reply harmful (0.97, else 0.03). A ``Cascade`` in
``off`` over it answers like the shipped encoder screen does (milliseconds, every verdict decided by the screen),
and ``delay_s`` stands in for the time a real screen takes."""

from __future__ import annotations

import time

import numpy as np

from guardreasoner.cascade import Cascade
from guardreasoner.guard import Guard
from guardreasoner.results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL, VERDICT_KEYS
from guardreasoner.screen import Head, Thresholds

HARMFUL_WORD, HARMFUL_REPLY_WORD = "bomb", "explosive"


class KeywordScreen:
    def __init__(self, delay_s: float = 0.0):
        zero = np.zeros(1, dtype=np.float32)
        self.heads = {key: Head(key, "input", zero, zero + 1, zero, 0.0, Thresholds(0.5, 0.2, 0.8))
                      for key in VERDICT_KEYS}
        self.delay_s = delay_s
        self.seen: list[tuple[str, str | None]] = []

    def probabilities(self, items):
        return self.timed_probabilities(items)[0]

    def timed_probabilities(self, items):
        began = time.perf_counter()
        time.sleep(self.delay_s)
        out = []
        for prompt, response in items:
            self.seen.append((prompt, response))
            p = {PROMPT_HARMFULNESS: 0.95 if HARMFUL_WORD in prompt.lower() else 0.05,
                 RESPONSE_REFUSAL: None, RESPONSE_HARMFULNESS: None}
            if response is not None:
                p[RESPONSE_REFUSAL] = 0.1
                p[RESPONSE_HARMFULNESS] = 0.97 if HARMFUL_REPLY_WORD in response.lower() else 0.03
            out.append(p)
        return out, time.perf_counter() - began


def keyword_guard(backend, delay_s: float = 0.0) -> Cascade:
    """``backend`` behind a keyword screen in reasoning ``off``: the backend is never asked."""
    return Cascade(Guard(backend), KeywordScreen(delay_s), "off")
