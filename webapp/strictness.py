"""The Strictness control: where the harm verdicts are cut on their probabilities, chosen after the fact.

A result keeps each verdict's ``p_positive`` (the screen's calibrated probability, or the reasoning model's from
its verdict tokens), so another cut re-labels it at once, without running the model again: the page keeps the
guard's own result (Flag files that one) and shows it as the chosen strictness labels it; Batch labels each row
the same way before its table and files are made. Only the two harm verdicts are cut: whether a reply refuses is
a description, not a matter of strictness. A verdict without a probability (a backend without token
log-probabilities, a verdict failed closed) keeps the guard's label. "Balanced" is the guard's own decision (the
reasoning model's answer, or the screen's cut, or an operating point the guard was loaded with).
"""

from __future__ import annotations

import html

import gradio as gr

from guardreasoner.confidence import apply_threshold
from guardreasoner.results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, VERDICT_KEYS, GuardResult

from . import views

BALANCED = "balanced"
# label shown, value; the thresholds are on the probability of "harmful"
CHOICES = [("Catch more (flag from p = 0.25)", "catch-more"), ("Balanced (the guard's own decision)", BALANCED),
           ("Fewer false positives (flag from p = 0.75)", "fewer-false-positives")]
THRESHOLDS = {"catch-more": 0.25, BALANCED: None, "fewer-false-positives": 0.75}
NAMES = {value: label.split(" (")[0] for label, value in CHOICES}
HARM_KEYS = (PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS)
WHAT = {PROMPT_HARMFULNESS: "prompt", RESPONSE_HARMFULNESS: "response"}


def threshold_of(choice: str | None) -> float | None:
    if choice not in THRESHOLDS:
        raise gr.Error(f"Unknown strictness {choice!r}; choose one of {', '.join(NAMES.values())}.")
    return THRESHOLDS[choice]


def relabelled(result: dict | None, choice: str | None) -> dict | None:
    """``result`` (a ``GuardResult.to_dict()``, possibly with other keys, as a Batch record has) with its harm
    verdicts labelled at the strictness's threshold; the derived keys (labels, is_harmful, ...) follow."""
    threshold = threshold_of(choice)
    if result is None or threshold is None:
        return result
    guard_result = GuardResult.from_dict(result)
    for key in HARM_KEYS:
        apply_threshold(guard_result.verdicts[key], threshold)  # the guard's own rule; no p, no change
    return {**result, **guard_result.to_dict()}


def chips(result: dict) -> list[str]:
    """The three chips of a result as shown, each naming the threshold that chose its label, if one did."""
    out = []
    for key in VERDICT_KEYS:
        verdict = result["verdicts"][key]
        note = views.verdict_note(verdict)
        if verdict.get("threshold") is not None and verdict.get("label"):
            note = ", ".join(filter(None, [note, f"flagged from p = {verdict['threshold']:.2f}"]))
        out.append(views.chip(key, verdict["label"], note, state=verdict["label"] or "n/a",
                              decided_by=verdict["decided_by"], threshold=verdict.get("threshold")))
    return out


def note(result: dict | None, shown: dict | None, choice: str) -> str:
    """What the control did to the result on screen: the threshold, and which verdicts it changed."""
    threshold = threshold_of(choice)
    if threshold is None:
        text = "Balanced: the guard's own decision."
    else:
        text = f"{NAMES[choice]}: a harm verdict is harmful from p = {threshold:.2f}."
    if result and shown and threshold is not None:
        changed = [f"the {WHAT[key]} is now {shown['verdicts'][key]['label']}" for key in HARM_KEYS
                   if result["verdicts"][key]["label"] != shown["verdicts"][key]["label"]]
        unscored = [f"the {WHAT[key]}" for key in HARM_KEYS
                    if result["verdicts"][key]["label"] and result["verdicts"][key].get("p_positive") is None]
        text += (f" Changed from the guard's own decision: {'; '.join(changed)}." if changed
                 else " No label changed.")
        if unscored:
            text += f" No probability for {' or '.join(unscored)}: the guard's label stands."
    return (f'<div id="strictness-note" data-strictness="{choice}" data-threshold="{threshold or ""}">'
            f'{html.escape(text)}</div>')


def show(result: dict | None, choice: str) -> tuple:
    """The chips, the result JSON and the note, as the strictness labels the current result (the guard's,
    unchanged: the model is not run); before a result, only the note."""
    import json

    shown = relabelled(result, choice)
    if shown is None:
        return (*[gr.update()] * len(VERDICT_KEYS), gr.update(), note(None, None, choice))
    return (*chips(shown), json.dumps(shown, indent=2, ensure_ascii=False), note(result, shown, choice))


def batch_note(choice: str) -> str:
    threshold = threshold_of(choice)
    return "" if threshold is None else (f" Labelled at “{NAMES[choice]}”: a harm verdict is harmful from "
                                         f"p = {threshold:.2f} (the files give each verdict's p_positive).")
