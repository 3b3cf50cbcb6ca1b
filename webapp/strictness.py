"""The Strictness control: where the verdicts are cut on their probabilities, chosen after the fact.

A result keeps each verdict's ``p_positive`` (the screen's calibrated probability, or the reasoning model's from
its verdict tokens), so another cut re-labels it at once, without running the model again: the page keeps the
guard's own result (Flag files that one) and shows it as the chosen strictness labels it; Batch labels each row
the same way before its table and files are made. The three presets cut only the two harm verdicts: whether a
reply refuses is a description, not a matter of strictness. A verdict without a probability (a backend without
token log-probabilities, a verdict failed closed) keeps the guard's label. "Balanced" is the guard's own
decision (the reasoning model's answer, or the screen's cut).

Operating points (``python -m guardreasoner calibrate`` on your own labelled rows) named in
``GUARDREASONER_OPERATING_POINTS`` (folders, comma-separated) are offered as choices too: each cuts every verdict
it has a threshold for at that threshold (after putting the probability through the point's Platt map, which the
shown result then reports), and the result names it. A point's thresholds mean something only for
the model and reasoning mode it was calibrated with: on a result of another model, or one whose verdicts were
decided another way (a point calibrated with ``off`` and a verdict the reasoning model decided), the labels stand
and the note says why.
"""

from __future__ import annotations

import html
import os
from functools import cache

import gradio as gr

from guardreasoner.confidence import cut_verdict
from guardreasoner.operating_point import OperatingPoint, load_operating_point, same_model
from guardreasoner.results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, VERDICT_KEYS, GuardResult

from . import views

BALANCED = "balanced"
POINTS_ENV = "GUARDREASONER_OPERATING_POINTS"
POINT_PREFIX = "point:"  # a choice's value for an operating point: the prefix and the point's name
# label shown, value; the thresholds are on the probability of "harmful"
PRESETS = [("Catch more (flag from p = 0.25)", "catch-more"), ("Balanced (the guard's own decision)", BALANCED),
           ("Fewer false positives (flag from p = 0.75)", "fewer-false-positives")]
THRESHOLDS = {"catch-more": 0.25, BALANCED: None, "fewer-false-positives": 0.75}
NAMES = {value: label.split(" (")[0] for label, value in PRESETS}
HARM_KEYS = (PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS)
WHAT = {PROMPT_HARMFULNESS: "prompt", "response_refusal": "reply's refusal", RESPONSE_HARMFULNESS: "response"}


@cache
def operating_points() -> dict[str, OperatingPoint]:
    """The operating points the app offers, by name (read once; a bad folder stops the app with its message)."""
    points: dict[str, OperatingPoint] = {}
    for folder in filter(None, (part.strip() for part in os.environ.get(POINTS_ENV, "").split(","))):
        point = load_operating_point(folder)
        if point.name in points:
            raise ValueError(f"{POINTS_ENV}: two operating points are named {point.name!r}; rename one folder")
        points[point.name] = point
    return points


def _target(point: OperatingPoint) -> str:
    if not point.target:
        return "your rows"
    name, value = next(iter(point.target.items()))
    return f"{'FPR' if name == 'fpr' else 'recall'} {100 * value:g}% on your rows"


def choices() -> list[tuple[str, str]]:
    """The presets, then one choice per operating point offered."""
    return PRESETS + [(f"Operating point {name} ({_target(point)}, {point.reasoning})", POINT_PREFIX + name)
                      for name, point in operating_points().items()]


def default_choice() -> str:
    """The first operating point offered (whoever set them up calibrated it for this deployment), else Balanced."""
    return POINT_PREFIX + next(iter(operating_points())) if operating_points() else BALANCED


def _point(choice: str | None) -> OperatingPoint | None:
    """The operating point a choice names (None: a preset, or no such point)."""
    if not choice or not choice.startswith(POINT_PREFIX):
        return None
    return operating_points().get(choice.removeprefix(POINT_PREFIX))


def cuts_of(choice: str | None) -> dict[str, float] | None:
    """Verdict -> threshold for a choice (None: the guard's own decision); an error for an unknown choice."""
    if choice in THRESHOLDS:
        threshold = THRESHOLDS[choice]
        return None if threshold is None else {key: threshold for key in HARM_KEYS}
    point = _point(choice)
    if point is None:
        offered = ", ".join([*NAMES.values(), *operating_points()])
        raise gr.Error(f"Unknown strictness {choice!r}; choose one of {offered}.")
    return dict(point.thresholds)


def threshold_of(choice: str | None) -> float | None:
    """A preset's one threshold (None for Balanced and for operating points, whose thresholds are per verdict)."""
    cuts_of(choice)
    return THRESHOLDS.get(choice)


def misfit(result: dict, point: OperatingPoint) -> str | None:
    """Why ``point``'s thresholds do not apply to ``result`` (None: they do)."""
    if result.get("model") and not same_model(point.model, result["model"]):
        return f"it was calibrated for {point.model}, and this result is {result['model']}'s"
    decided = {verdict["decided_by"] for verdict in result["verdicts"].values() if verdict.get("label")}
    other = {"off": "reasoning", "full": "screen"}.get(point.reasoning)
    if other in decided:
        return (f"it was calibrated with reasoning {point.reasoning}, and the {other} decided a verdict here "
                f"(run with Reasoning “{point.reasoning}”)")
    return None


def relabelled(result: dict | None, choice: str | None) -> dict | None:
    """``result`` (a ``GuardResult.to_dict()``, possibly with other keys, as a Batch record has) with its verdicts
    labelled at the choice's thresholds; the derived keys (labels, is_harmful, ...) follow. An operating point
    that does not fit the result leaves it as it is."""
    cuts, point = cuts_of(choice), _point(choice)
    if result is None or cuts is None or (point and misfit(result, point)):
        return result
    guard_result = GuardResult.from_dict(result)
    maps = point.calibrations if point else {}
    for key, verdict in guard_result.verdicts.items():  # the guard's own rule; no p, no change
        cut_verdict(verdict, cuts.get(key), maps.get(key))
    if point:
        guard_result.operating_point = point.name
    return {**result, **guard_result.to_dict()}


def _point_cuts(point: OperatingPoint) -> str:
    cuts = ", ".join(f"the {WHAT[key]} from p = {value:.2f}" for key, value in point.thresholds.items()) + "."
    if point.calibrations:  # the p shown is then the mapped one: say so, or 0.27 against a screen's 0.65 puzzles
        mapped = " and ".join(f"the {WHAT[key]}'s" for key in point.calibrations)
        verb = "is" if len(point.calibrations) == 1 else "are"
        cuts += f" {mapped[0].upper()}{mapped[1:]} p {verb} calibrated by the point (a map fitted on its labelled " \
                "rows) before the cut."
    return cuts


def _cut_text(choice: str) -> str:
    point = _point(choice)
    if point is None:
        return f"{NAMES[choice]}: a harm verdict is harmful from p = {THRESHOLDS[choice]:.2f}."
    return f"Operating point {point.name} ({_target(point)}): {_point_cuts(point)}"


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
    """What the control did to the result on screen: the thresholds, and which verdicts it changed."""
    cuts, point = cuts_of(choice), _point(choice)
    text = "Balanced: the guard's own decision." if cuts is None else _cut_text(choice)
    reason = misfit(result, point) if result and point else None
    if reason:
        text += f" Its thresholds do not apply to this result: {reason}. The guard's labels stand."
    elif result and shown and cuts is not None:
        changed = [f"the {WHAT[key]} is now {shown['verdicts'][key]['label']}" for key in cuts
                   if result["verdicts"][key]["label"] != shown["verdicts"][key]["label"]]
        unscored = [f"the {WHAT[key]}" for key in cuts
                    if result["verdicts"][key]["label"] and result["verdicts"][key].get("p_positive") is None]
        text += (f" Changed from the guard's own decision: {'; '.join(changed)}." if changed
                 else " No label changed.")
        if unscored:
            text += f" No probability for {' or '.join(unscored)}: the guard's label stands."
    threshold = THRESHOLDS.get(choice)  # a preset's; an operating point's are per verdict, on the chips
    return (f'<div id="strictness-note" data-strictness="{html.escape(choice)}" '
            f'data-threshold="{threshold or ""}">{html.escape(text)}</div>')


def show(result: dict | None, choice: str) -> tuple:
    """The chips, the result JSON and the note, as the strictness labels the current result (the guard's,
    unchanged: the model is not run); before a result, only the note."""
    import json

    shown = relabelled(result, choice)
    if shown is None:
        return (*[gr.update()] * len(VERDICT_KEYS), gr.update(), note(None, None, choice))
    return (*chips(shown), json.dumps(shown, indent=2, ensure_ascii=False), note(result, shown, choice))


def batch_note(choice: str) -> str:
    if cuts_of(choice) is None:
        return ""
    point = _point(choice)
    if point is None:
        return (f" Labelled at “{NAMES[choice]}”: a harm verdict is harmful from p = {THRESHOLDS[choice]:.2f} (the "
                "files give each verdict's p_positive).")
    return (f" Labelled at operating point {point.name}: {_point_cuts(point)} Rows it does not "
            f"fit (another model, or another reasoning mode than {point.reasoning}) keep the guard's labels; the "
            "files give each verdict's p_positive and each row's operating_point.")
