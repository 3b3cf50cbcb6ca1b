"""Verdict probabilities from token log-probabilities: the two label words compared where the verdict stands.

Tokenizer-free, so it works the same for transformers, vLLM and OpenAI-style ``top_logprobs``: at the token that
starts the label word, every alternative token that begins one label (and not the other) counts towards it,
and the positive label's share of the two masses is its probability.
"""

from __future__ import annotations

import bisect
import math

from .results import LABELS, POSITIVE, Verdict


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


def attach_confidences(text: str, verdicts: dict[str, Verdict], tokens: list[str], top_logprobs: list[dict]) -> None:
    """Fill ``p_positive`` on each verdict read at a known place in ``text``."""
    joined = "".join(tokens)
    starts = []
    position = 0
    for token in tokens:
        starts.append(position)
        position += len(token)
    for verdict in verdicts.values():
        if verdict.offset is None or verdict.label is None:
            continue
        # Per-token decoding can differ from the full text (split multi-byte characters, earlier in the
        # text); the verdict sits near the end, so measure its place from the end.
        offset = len(joined) - (len(text) - verdict.offset)
        if offset < 0 or joined[offset : offset + len(verdict.label)].lower() != verdict.label:
            continue
        index = bisect.bisect_right(starts, offset) - 1
        if index < 0 or index >= len(top_logprobs):
            continue
        prefix = joined[starts[index] : offset]
        verdict.p_positive = positive_probability(verdict.key, prefix, top_logprobs[index])


def apply_threshold(verdict: Verdict, threshold: float) -> None:
    """Choose the positive label when its probability reaches ``threshold`` (0.5 reproduces the argmax)."""
    if verdict.p_positive is None or verdict.label is None:
        return
    positive, negative = LABELS[verdict.key]
    verdict.label = positive if verdict.p_positive >= threshold else negative


__all__ = ["attach_confidences", "apply_threshold", "positive_probability", "POSITIVE"]
