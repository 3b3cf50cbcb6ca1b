"""``Cascade``: a screen (``screen.py``) in front of the reasoning ``Guard``; the reasoning mode says who decides
each verdict.

- ``full``: the reasoning guard decides everything (no screen involved).
- ``off``: the screen alone, each verdict positive at ``p >= cut``; a verdict the screen has no head for gets no
  label (and is fail-closed like any missing verdict when the guard fails closed).
- ``auto``: the screen decides a verdict where its probability is beyond its thresholds (``p < low`` or
  ``p >= high``); an item with any verdict left undecided goes to the reasoning guard, which decides those
  verdicts only, so the screen's confident calls stand either way.

Every verdict says who decided it (``Verdict.decided_by``) and the probability it was decided with
(``p_positive``: the screen's, or the reasoning model's where it reported one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .backends.base import Backend, Generation
from .confidence import cut_verdict
from .guard import Guard, item_pair
from .recalibration import PlattMap
from .results import INPUT_TRUNCATED as TRUNCATED
from .results import LABELS, POSITIVE, SOURCE_SCREEN, VERDICT_KEYS, GuardResult, StreamUpdate, Verdict
from .template import GuardPrompt

REASONING_MODES = ("full", "auto", "off")
RECOMMENDED = "recommended"  # load_guard and the CLI: the model's measured best mode (screen.recommended_reasoning)
SCREEN_FLAG = "screen"  # a result some of whose verdicts the screen decided


def check_mode(reasoning: str, *, has_screen: bool = True) -> None:
    if reasoning not in REASONING_MODES:
        raise ValueError(f"reasoning={reasoning!r}; choose one of {', '.join(REASONING_MODES)}")
    if reasoning != "full" and not has_screen:
        raise ValueError(f"reasoning={reasoning!r} needs a screen (load_guard(..., screen=FOLDER))")


def needed_keys(response: str | None) -> list[str]:
    """The verdicts an item asks for: the prompt's always, the reply's two where there is a reply."""
    return list(VERDICT_KEYS) if response is not None else [VERDICT_KEYS[0]]


def screen_verdict(key: str, p: float, threshold: float, calibration: str | None = None) -> Verdict:
    positive, negative = LABELS[key]
    return Verdict(key, positive if p >= threshold else negative, source=SOURCE_SCREEN, p_positive=p,
                   decided_by="screen", calibration=calibration)


def calibration_of(screen, head) -> str | None:
    """How a screen head's probabilities were calibrated, naming the screen's folder."""
    said = getattr(head, "calibration", None)
    folder = getattr(screen, "folder", None)
    return f"{said} (screen {Path(folder).name})" if said and folder else said


def decide(screen, probabilities: dict[str, float | None], response: str | None, mode: str,
           thresholds: dict[str, float] | None = None,
           calibrations: dict[str, PlattMap] | None = None) -> dict[str, Verdict | None]:
    """The screen's verdict for each needed key, or None where it leaves the key to the reasoning guard; the
    guard's ``calibrations`` and ``thresholds`` (an operating point's) map the probability of a verdict the
    screen decides and choose its label, as they do the reasoning model's."""
    decided: dict[str, Verdict | None] = {}
    for key in needed_keys(response):
        head, p = screen.heads.get(key), probabilities.get(key)
        if head is None or p is None:  # no head for it: the screen does not guess
            decided[key] = None
        elif mode == "off":
            decided[key] = screen_verdict(key, p, head.thresholds.cut, calibration_of(screen, head))
        elif head.thresholds.decides(p):
            decided[key] = screen_verdict(key, p, head.thresholds.high, calibration_of(screen, head))
        else:
            decided[key] = None
        if decided[key] is not None:
            cut_verdict(decided[key], (thresholds or {}).get(key), (calibrations or {}).get(key))
    return decided


def screen_opinions(screen, probabilities: dict[str, float | None]) -> dict[str, tuple[float, str]]:
    """Per verdict the screen has a probability for: that probability and the label its ``off`` cut gives, kept
    on the reasoning model's verdicts so that a disagreement is shown, not silently overruled."""
    out = {}
    for key in VERDICT_KEYS:
        head, p = screen.heads.get(key), probabilities.get(key)
        if head is not None and p is not None:
            out[key] = (p, LABELS[key][0] if p >= head.thresholds.cut else LABELS[key][1])
    return out


def note_screen(result: GuardResult, screen, probabilities: dict) -> GuardResult:
    """The screen's opinion on each verdict the reasoning model decided, and ``input_truncated`` where the
    screen had to cut the item to read it."""
    for key, (p, label) in screen_opinions(screen, probabilities).items():
        verdict = result.verdicts.get(key)
        if verdict is not None and verdict.decided_by == "reasoning":
            verdict.screen_p_positive, verdict.screen_label = p, label
    if probabilities.get(TRUNCATED):
        result.flags = sorted(set(result.flags) | {TRUNCATED})
    result.categories.update(probabilities.get("categories") or {})  # a PolicyScreen's policies, beside the verdicts
    return result


def _screen_result(guard: Guard, built: GuardPrompt, decided: dict[str, Verdict | None], latency_s: float, *,
                   final: bool = True) -> GuardResult:
    """A result with no generation behind it: the guard's ``read`` of an empty output (so the result
    has every field the guard gives), then the screen's verdicts in place of the empty parse. ``final=False``:
    a preview whose missing verdicts the reasoning guard is still to give (so none is fail-closed)."""
    result = guard.read(built, Generation(text="", latency_s=latency_s))
    for key in VERDICT_KEYS:
        # none from the screen: final, the screen gave none; a preview, the reasoning guard is to give it
        verdict = decided.get(key) or Verdict(key, None, decided_by="screen" if final else "reasoning")
        if final and verdict.label is None and key in decided and guard.fail_closed and POSITIVE[key] == "harmful":
            verdict.label, verdict.fail_closed = POSITIVE[key], True  # as the guard treats a missing verdict
        result.verdicts[key] = verdict
    result.flags = sorted({flag for flag in result.flags if flag == TRUNCATED} | {SCREEN_FLAG})
    result.latency_s = latency_s
    return result


def _merge(result: GuardResult, decided: dict[str, Verdict | None], screen_s: float) -> GuardResult:
    """The reasoning guard's result with the screen's decided verdicts standing in for its own."""
    for key, verdict in decided.items():
        if verdict is not None:
            result.verdicts[key] = verdict
    if any(verdict is not None for verdict in decided.values()):
        result.flags = sorted(set(result.flags) | {SCREEN_FLAG})
    result.latency_s += screen_s
    return result


class Cascade:
    """The screen first, the reasoning guard for what it leaves (``auto``), or the screen alone (``off``); in
    ``full`` the guard alone, with the screen kept so that ``with_reasoning`` can switch modes. The screen is
    ready to ask (a ``Screen`` bound to ``guard``, or anything with ``heads`` and ``timed_probabilities``).

    The third argument is the reasoning mode, named ``reasoning`` as everywhere else (``mode`` is the prompt mode,
    chat or raw)."""

    def __init__(self, guard: Guard, screen, reasoning: str = "auto"):
        check_mode(reasoning, has_screen=screen is not None)
        self.guard = guard
        self.screen = screen
        self.reasoning = reasoning

    # The guard's settings, read through: a Cascade is used wherever a Guard is.
    @property
    def backend(self) -> Backend:
        return self.guard.backend

    @property
    def model_name(self) -> str:
        return self.guard.model_name

    @property
    def mode(self) -> str:
        return self.guard.mode

    @property
    def sampling(self):
        return self.guard.sampling

    @property
    def thresholds(self) -> dict[str, float]:
        return self.guard.thresholds

    @property
    def operating_point(self) -> str | None:
        return self.guard.operating_point

    @property
    def fail_closed(self) -> bool:
        return self.guard.fail_closed

    @property
    def max_input_tokens(self) -> int | None:
        return self.guard.max_input_tokens

    @property
    def fallback_reason(self) -> str | None:
        return self.guard.fallback_reason

    def build(self, prompt: str, response: str | None = None) -> GuardPrompt:
        return self.guard.build(prompt, response)

    def model_input(self, prompt: str, response: str | None = None) -> str:
        return self.guard.model_input(prompt, response)

    def with_reasoning(self, reasoning: str) -> Cascade:
        """The same guard and screen in another reasoning mode (full, auto, off)."""
        return Cascade(self.guard, self.screen, reasoning)

    def with_sampling(self, **changes) -> Cascade:
        return Cascade(self.guard.with_sampling(**changes), self.screen, self.reasoning)

    def with_thresholds(self, thresholds: dict[str, float] | None) -> Cascade:
        return Cascade(self.guard.with_thresholds(thresholds), self.screen, self.reasoning)

    def with_operating_point(self, name: str | None, thresholds: dict[str, float],
                             calibrations: dict[str, PlattMap] | None = None) -> Cascade:
        return Cascade(self.guard.with_operating_point(name, thresholds, calibrations), self.screen, self.reasoning)

    def with_backend(self, backend: Backend) -> Cascade:
        """The guard on another backend; the screen stays as bound (eval's replay wraps the guard's backend, so
        guard-state features still read the same model)."""
        return Cascade(self.guard.with_backend(backend), self.screen, self.reasoning)

    def prepare(self, items: Iterable) -> list[GuardPrompt]:
        """In ``full``, the guard's ``prepare`` (so a batcher can run a Cascade in full like a Guard)."""
        return self._reasoning_alone().prepare(items)

    def read(self, prepared: GuardPrompt, generation: Generation) -> GuardResult:
        """In ``full``, the guard's ``read``."""
        return self._reasoning_alone().read(prepared, generation)

    def _reasoning_alone(self) -> Guard:
        if self.reasoning != "full":
            raise ValueError(f"reasoning={self.reasoning!r}: the screen decides first, so a generation alone is "
                             "not the result; use classify or stream")
        return self.guard

    def classify(self, items: Iterable, *, progress: bool = False) -> list[GuardResult]:
        """As ``Guard.classify``, each verdict decided as the mode says."""
        if self.reasoning == "full":  # the screen's opinion rides along (milliseconds), so a disagreement shows
            items = list(items)
            return self.note_opinions([item_pair(item) for item in items],
                                      self.guard.classify(items, progress=progress))
        pairs = [item_pair(item) for item in items]
        probabilities, seconds = self.screen.timed_probabilities(pairs)
        per_row = seconds / max(len(pairs), 1)
        decided = [decide(self.screen, p, response, self.reasoning, self.thresholds, self.guard.calibrations)
                   for p, (_, response) in zip(probabilities, pairs)]
        deferred = [row for row, keys in enumerate(decided) if self.reasoning == "auto" and None in keys.values()]
        asked = [pairs[row] for row in deferred]
        reasoned = dict(zip(deferred, self.guard.classify(asked, progress=progress))) if asked else {}  # no empty call
        return [note_screen(_merge(reasoned[row], decided[row], per_row) if row in reasoned
                            else _screen_result(self.guard, self.guard.build(*pairs[row]), decided[row], per_row),
                            self.screen, probabilities[row])
                for row in range(len(pairs))]

    def note_opinions(self, pairs: list[tuple[str, str | None]], results: list[GuardResult]) -> list[GuardResult]:
        """The reasoning guard's results of ``pairs`` with the screen's opinions (and its policies' categories)
        noted on them: what ``full`` adds to the guard's own results (a batcher that ran the guard calls it)."""
        opinions = self._opinions(pairs)
        return [note_screen(result, self.screen, p) for result, p in zip(results, opinions)] or results

    def _opinions(self, pairs: list[tuple[str, str | None]]) -> list[dict]:
        """The screen's probabilities beside a full run, or none where it has no screen or cannot read the items
        (an empty request: the reasoning model still answers it)."""
        if self.screen is None:
            return []
        try:
            return self.screen.timed_probabilities(pairs)[0]
        except ValueError:
            return []

    def classify_one(self, prompt: str, response: str | None = None) -> GuardResult:
        return self.classify([{"prompt": prompt, "response": response}])[0]

    def stream(self, prompt: str, response: str | None = None, *, stop: threading.Event | None = None
               ) -> Iterator[StreamUpdate]:
        """As ``Guard.stream``; in ``off`` and ``auto`` the screen's verdicts come first (``update.screen``, within
        milliseconds); if the reasoning guard must decide the rest, its stream follows and its last update
        carries the merged result."""
        if self.reasoning == "full":
            opinion = (self._opinions([(prompt, response)]) or [None])[0]
            for update in self.guard.stream(prompt, response, stop=stop):
                if update.result is not None and opinion is not None:
                    update.result = note_screen(update.result, self.screen, opinion)
                yield update
            return
        began = time.perf_counter()
        (probabilities,), seconds = self.screen.timed_probabilities([(prompt, response)])
        decided = decide(self.screen, probabilities, response, self.reasoning, self.thresholds,
                         self.guard.calibrations)
        final = self.reasoning == "off" or None not in decided.values()
        early = note_screen(_screen_result(self.guard, self.guard.build(prompt, response), decided, seconds,
                                           final=final), self.screen, probabilities)
        if final:
            yield StreamUpdate("", "", [], time.perf_counter() - began, result=early, screen=early)
            return
        yield StreamUpdate("", "", [], time.perf_counter() - began, screen=early)
        for update in self.guard.stream(prompt, response, stop=stop):
            if update.result is not None:
                update.result = note_screen(_merge(update.result, decided, seconds), self.screen, probabilities)
            yield update

    def close(self) -> None:
        self.guard.close()
