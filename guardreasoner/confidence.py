"""Verdict probabilities from token log-probabilities: the two label words compared where the verdict stands.

Tokenizer-free, so it works the same for transformers, vLLM and OpenAI-style ``top_logprobs``: at the token that
starts the label word, every alternative token that begins one label (and not the other) counts towards it,
and the positive label's share of the two masses is its probability.
"""

from __future__ import annotations

import bisect
import math
import re

from .recalibration import PlattMap, recalibrate
from .results import LABELS, POSITIVE, UNCALIBRATED, Verdict


def _consistent(rest: str, label: str) -> bool:
    """Whether a token's text (after the shared prefix) can begin ``label``: "harm", "un", "Harmful\\n"."""
    rest = rest.lower()
    if label.startswith(rest):
        return True
    return rest.startswith(label) and not rest[len(label) : len(label) + 1].isalpha()


def positive_probability(key: str, prefix: str, alternatives: dict[str, float]) -> float | None:
    """P(positive label) among the alternatives at one position; ``prefix`` is the token text before the label."""
    positive, negative = LABELS[key]
    mass = {positive: 0.0, negative: 0.0}
    for token, logprob in alternatives.items():
        if not token.startswith(prefix) or len(token) == len(prefix):
            continue
        rest = token[len(prefix) :]
        for label in (positive, negative):
            if _consistent(rest, label):
                mass[label] += math.exp(logprob)
    total = mass[positive] + mass[negative]
    return mass[positive] / total if total > 0 else None


_SPECIAL = re.compile(r"<\|[^|<>]*\|>|</?s>|<(?:eos|bos|pad|end_of_turn|start_of_turn)>")
_CONTEXTS = (24, 10)  # characters before the verdict that must read the same in the tokens and in the text


def _without_trailing_specials(tokens: list[str]) -> list[str]:
    """vLLM (and ``vllm serve``) keep the stop token with a logprob entry decoded with special tokens
    (``<|eot_id|>``, ``<|im_end|>``, ``</s>``) that the text skips: drop such tokens and empty ones at the end."""
    end = len(tokens)
    while end and (not tokens[end - 1] or _SPECIAL.fullmatch(tokens[end - 1].strip())):
        end -= 1
    return tokens[:end]


def _locate(text: str, joined: str, offset: int, label: str) -> int | None:
    """Where the verdict at ``offset`` in ``text`` sits in the joined tokens.

    Per-token decoding can differ from the text (a multi-byte character split over two tokens reads as two
    replacement characters; a special token can trail), so candidates are tried in turn: the same offset from
    the start, the same distance from the end, then the place nearest the end-based guess where the text just
    before the verdict reads the same. A place counts only where the label and the text before it match; the
    context shrinks when a garbled character falls inside it."""
    width = len(label)
    expected = len(joined) - (len(text) - offset)
    for context in _CONTEXTS:
        before = text[max(0, offset - context) : offset]

        def matches(place: int, before: str = before) -> bool:
            return (0 <= place and joined[place : place + width].lower() == label
                    and joined[max(0, place - len(before)) : place] == before)

        for place in (offset, expected):
            if matches(place):
                return place
        needle = before + text[offset : offset + width]
        found, start = [], joined.find(needle)
        while start != -1:
            found.append(start + len(before))
            start = joined.find(needle, start + 1)
        if found:
            return min(found, key=lambda place: abs(place - expected))
    return None


def attach_confidences(text: str, verdicts: dict[str, Verdict], tokens: list[str], top_logprobs: list[dict]) -> None:
    """Fill ``p_positive`` on each verdict read at a known place in ``text``."""
    # top_logprobs is only indexed, never copied: CTranslate2's is lazy, and reading a position runs the model.
    tokens = _without_trailing_specials(list(tokens))
    joined = "".join(tokens)
    starts = []
    position = 0
    for token in tokens:
        starts.append(position)
        position += len(token)
    for verdict in verdicts.values():
        if verdict.offset is None or verdict.label is None:
            continue
        offset = _locate(text, joined, verdict.offset, verdict.label)
        if offset is None:
            continue
        index = bisect.bisect_right(starts, offset) - 1
        if index < 0 or index >= min(len(tokens), len(top_logprobs)):
            continue
        prefix = joined[starts[index] : offset]
        verdict.p_positive = positive_probability(verdict.key, prefix, top_logprobs[index])
        verdict.calibration = UNCALIBRATED if verdict.p_positive is not None else None


def cut_verdict(verdict: Verdict, threshold: float | None, mapping: PlattMap | None = None) -> None:
    """An operating point's (or given thresholds') rule for one verdict, wherever it applies (the reasoning
    model's verdicts, the screen's, a result the app re-labels): the probability through its map, then the label
    at the threshold (None: the guard's own label stands)."""
    if mapping is not None:
        recalibrate(verdict, mapping)
    if threshold is not None:
        apply_threshold(verdict, threshold)


def apply_threshold(verdict: Verdict, threshold: float) -> None:
    """Choose the positive label when its probability reaches ``threshold`` (0.5 reproduces the argmax)."""
    if verdict.p_positive is None or verdict.label is None:
        return
    positive, negative = LABELS[verdict.key]
    verdict.label = positive if verdict.p_positive >= threshold else negative
    verdict.threshold = threshold


__all__ = ["attach_confidences", "apply_threshold", "cut_verdict", "positive_probability", "POSITIVE"]
