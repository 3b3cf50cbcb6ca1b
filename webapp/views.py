"""HTML and markdown for the Analyze tab: verdict chips that light up, and the run summary."""

from __future__ import annotations

import html

from guardreasoner.results import POSITIVE, PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL

TASK_TITLES = {PROMPT_HARMFULNESS: "Prompt harmful?", RESPONSE_REFUSAL: "Response a refusal?",
               RESPONSE_HARMFULNESS: "Response harmful?"}
# In a reasoning panel where no reasoning was run.
SCREEN_NOTE = ("No reasoning was run: the screen decided this verdict on its own (Reasoning “off” or “auto”). "
               "Press “Explain with reasoning” to have the model reason about this input.")
NO_RESPONSE_NOTE = "No response was given, so there is nothing to decide here (n/a)."
# Chip backgrounds dark enough for white text at >= 4.5:1 (WCAG AA); tests/test_app.py measures the rendered chips.
COLORS = {"harmful": "#b3261e", "unharmful": "#137333", "refusal": "#1857b6", "compliance": "#8f4700",
          "n/a": "#5f6368", "pending": "#5f6368"}
CSS = """
.verdict-chip {display:inline-block;padding:6px 14px;border-radius:16px;color:#fff !important;font-weight:600;
               font-family:sans-serif;transition:background-color .2s}
.verdict-chip[data-provisional="true"] {outline:2px dashed currentColor;outline-offset:-5px}
.verdict-note {font-size:12px;color:#5f6368;margin-left:6px}
/* WCAG AA (>= 4.5:1) where Gradio's default theme falls short: white on its light orange primary buttons, the
   grey line numbers and pale syntax colours of the result JSON. The JSON grows with its text rather than
   scrolling inside a box that a keyboard cannot reach: every box around the editor takes the text's height
   (bounded, the code editor draws only the lines within that bound and leaves the rest blank). */
button.primary {background:#b93b0b !important;border-color:#b93b0b !important;color:#fff !important}
#result-json .cm-gutterElement {color:#4b5563 !important}
#result-json .cm-line span {color:#1f2937 !important}
#result-json .cm-scroller {overflow:visible !important}
#result-json .wrap, #result-json .codemirror-wrapper, #result-json .cm-editor, #result-json .cm-scroller {
  height:auto !important;max-height:none !important}
/* On a phone the header stays short, so the input boxes are on the first screen. */
@media (max-width: 640px) {
  #intro h1 {font-size:1.5rem !important;margin:0 0 4px !important}
  #intro p, #model-banner p {font-size:0.85rem !important;margin:2px 0 !important}
}
[role="tab"].selected {color:#9a3412 !important}
footer .show-api, footer .built-with, footer .settings, footer .show-api *, footer .built-with *, footer .settings * {
  color:#374151 !important;opacity:1 !important}
"""


def chip(key: str, label: str | None = None, note: str = "", state: str | None = None,
         provisional: bool = False, decided_by: str = "reasoning", threshold: float | None = None) -> str:
    """A chip for one verdict; ``data-state`` is what tests and scripts read (pending, harmful, ...),
    ``data-provisional`` says the verdict was read from the reasoning and awaits the Answers block,
    ``data-decided-by`` says whether the screen or the reasoning model decided it, and ``data-threshold`` the cut
    on its probability that chose the label (empty: the guard's own decision)."""
    state = state or (label if label else "pending")
    text = label or ("…" if state == "pending" else "n/a")
    if provisional:
        note = "provisional, from the reasoning" + (f"; {note}" if note else "")
    note_html = f'<span class="verdict-note">{html.escape(note)}</span>' if note else ""
    return (f'<div><span>{TASK_TITLES[key]}</span> <span id="chip-{key}" class="verdict-chip" data-state="{state}" '
            f'data-provisional="{str(provisional).lower()}" data-decided-by="{decided_by}" '
            f'data-threshold="{"" if threshold is None else threshold}" '
            f'style="background:{COLORS.get(state, COLORS["pending"])}">{html.escape(text)}</span>{note_html}</div>')


def verdict_note(verdict: dict) -> str:
    if verdict.get("fail_closed"):
        return "fail-closed: the model gave no verdict"
    # Only a label is a decision: a response verdict without a response is n/a, whoever filled the result in.
    notes = ["decided by the screen"] if verdict.get("decided_by") == "screen" and verdict.get("label") else []
    if verdict.get("recovered"):
        notes.append(f"recovered from {verdict['source'].replace('_', ' ')}")
    if verdict.get("confidence") is not None:
        notes.append(f"p={verdict['confidence']:.2f}")
    if verdict.get("disagrees"):  # said plainly, not silently overruled: the reader decides whom to trust
        notes.append(f"the reasoning model and the screen disagree: the screen said {verdict['screen_label']} "
                     f"(p={verdict['screen_p_positive']:.2f} for {POSITIVE[verdict['key']]})")
    return ", ".join(notes)


def screen_decided(result: dict) -> bool:
    """Whether the screen decided some verdict of a result (which the reasoning model can then explain)."""
    return any(verdict.get("decided_by") == "screen" and verdict.get("label")
               for verdict in result["verdicts"].values())


STATUS_TEXT = {"generating": "generating…", "done": "done", "stopped": "stopped: the partial reasoning is kept",
               "idle": ""}


def status(state: str) -> str:
    """The run state as HTML, so that ``data-state`` survives (markdown output is sanitised)."""
    return f'<div id="run-status" data-state="{state}"><b>{html.escape(STATUS_TEXT[state])}</b></div>'


def summary(result: dict | None, *, elapsed_s: float, first_verdict_s: float | None) -> str:
    lines = []
    if first_verdict_s is not None:
        lines.append(f"- time to first verdict: {first_verdict_s:.2f} s")
    lines.append(f"- elapsed: {elapsed_s:.2f} s")
    if result:
        tokens = result["output_tokens"]
        rate = tokens / elapsed_s if elapsed_s > 0 else 0.0
        lines.append(f"- tokens: {tokens} generated ({rate:.1f} tokens/s), {result['input_tokens']} read")
        flagged = f" · flags: {', '.join(result['flags'])}" if result["flags"] else ""
        lines.append(f"- status: {result['status']}{flagged}")
        if result["input_truncated"]:
            lines.append("- the input was longer than the limit: its middle was cut")
    return "\n".join(lines)
