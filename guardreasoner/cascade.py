"""Reasoning modes: who decides each verdict, the screen (``screen.py``) or the reasoning guard.

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

import time

from .backends.base import Generation
from .results import LABELS, POSITIVE, SOURCE_SCREEN, VERDICT_KEYS, GuardResult, Verdict

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


def screen_verdict(key: str, p: float, threshold: float) -> Verdict:
    positive, negative = LABELS[key]
    return Verdict(key, positive if p >= threshold else negative, source=SOURCE_SCREEN, p_positive=p,
                   decided_by="screen")


def decide(screen, probabilities: dict[str, float | None], response: str | None, mode: str
           ) -> dict[str, Verdict | None]:
    """The screen's verdict for each needed key, or None where it leaves the key to the reasoning guard."""
    decided: dict[str, Verdict | None] = {}
    for key in needed_keys(response):
        head, p = screen.heads.get(key), probabilities.get(key)
        if head is None or p is None:  # no head for it: the screen does not guess
            decided[key] = None
        elif mode == "off":
            decided[key] = screen_verdict(key, p, head.thresholds.cut)
        elif head.thresholds.decides(p):
            decided[key] = screen_verdict(key, p, head.thresholds.high)
        else:
            decided[key] = None
    return decided


def _screen_result(guard, built, decided: dict[str, Verdict | None], latency_s: float, *, final: bool = True
                   ) -> GuardResult:
    """A result with no generation behind it: the guard's own result-making on an empty output (so the result
    has every field the guard gives), then the screen's verdicts in place of the empty parse. ``final=False``:
    a preview whose missing verdicts the reasoning guard is still to give (so none is fail-closed)."""
    result = guard._result(built, Generation(text="", latency_s=latency_s))
    for key in VERDICT_KEYS:
        # none from the screen: final, the screen gave none; a preview, the reasoning guard is to give it
        verdict = decided.get(key) or Verdict(key, None, decided_by="screen" if final else "reasoning")
        if final and verdict.label is None and key in decided and guard.fail_closed and POSITIVE[key] == "harmful":
            verdict.label, verdict.fail_closed = POSITIVE[key], True  # as the guard treats a missing verdict
        result.verdicts[key] = verdict
    result.flags = sorted({flag for flag in result.flags if flag == "input_truncated"} | {SCREEN_FLAG})
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


def classify(guard, items: list[tuple[str, str | None]], *, progress: bool = False) -> list[GuardResult]:
    """``Guard.classify`` in ``off`` and ``auto`` modes."""
    probabilities, seconds = guard.screen.timed_probabilities(items)
    per_row = seconds / max(len(items), 1)
    decided = [decide(guard.screen, p, response, guard.reasoning) for p, (_, response) in zip(probabilities, items)]
    deferred = [row for row, keys in enumerate(decided) if guard.reasoning == "auto" and None in keys.values()]
    asked = [{"prompt": items[row][0], "response": items[row][1]} for row in deferred]
    reasoned = dict(zip(deferred, guard._reason(asked, progress=progress))) if asked else {}  # no empty call
    return [_merge(reasoned[row], decided[row], per_row) if row in reasoned
            else _screen_result(guard, guard.build(*items[row]), decided[row], per_row)
            for row in range(len(items))]


def stream(guard, prompt: str, response: str | None, stop=None):
    """``Guard.stream`` in ``off`` and ``auto`` modes: the screen's verdicts come first (``update.screen``, within
    milliseconds); if the reasoning guard must decide the rest, its stream follows and its last update carries
    the merged result."""
    began = time.perf_counter()
    (probabilities,), seconds = guard.screen.timed_probabilities([(prompt, response)])
    decided = decide(guard.screen, probabilities, response, guard.reasoning)
    final = guard.reasoning == "off" or None not in decided.values()
    early = _screen_result(guard, guard.build(prompt, response), decided, seconds, final=final)
    if final:
        yield _update("", "", time.perf_counter() - began, result=early, screen=early)
        return
    yield _update("", "", time.perf_counter() - began, screen=early)
    for update in guard._stream(prompt, response, stop=stop):
        if update.result is not None:
            update.result = _merge(update.result, decided, seconds)
        yield update


def _update(delta: str, text: str, elapsed_s: float, **fields):
    from .guard import StreamUpdate

    return StreamUpdate(delta, text, [], elapsed_s, **fields)
