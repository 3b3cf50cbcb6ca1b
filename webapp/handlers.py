"""What each button and API endpoint does, as plain functions of the app's state (tests call them directly).

Each Analyze frame is a tuple in ``ANALYZE_OUTPUTS`` order; each Batch frame in ``BATCH_OUTPUTS`` order (the
layout wires the components in the same orders)."""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import gradio as gr

from guardreasoner.parser import task_sections
from guardreasoner.results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL, VERDICT_KEYS
from guardreasoner.rows import split_rows

from . import batch, benchmarks, charts, flags, policies, strictness, views
from .gpu import rows_per_call
from .settings import MAX_INPUT_CHARS, PROMPT, RunSettings
from .state import AppState, ModelUnavailable, model_banner

ANALYZE_OUTPUTS = ["panels", "chips", "status", "summary", "result_json", "result", "banner", "flag_button",
                   "stop_button", "explain_button"]
BATCH_OUTPUTS = ["table", "files", "chart", "message", "stop_button"]


def check_input(prompt: str, response: str) -> None:
    if not prompt or not prompt.strip():
        raise gr.Error(f"Type the {PROMPT.lower()} first.")
    size = len(prompt) + len(response or "")
    if size > MAX_INPUT_CHARS:
        raise gr.Error(f"The input is {size:,} characters; the limit here is {MAX_INPUT_CHARS:,}. Shorten it.")


def ready_guard(state: AppState, settings: RunSettings):
    """The run's guard, loaded here in the app's process before any GPU call; a bad choice is a message."""
    try:
        return state.guard(settings)
    except ModelUnavailable as error:
        raise gr.Error(str(error)) from None


def check_analyze(state: AppState, prompt: str, response: str, settings: RunSettings) -> None:
    """Runs before analyze, with no outputs: a bad input shows its message and leaves every output as it was."""
    check_input(prompt, response)
    ready_guard(state, settings)


def panel_texts(text: str, result: dict | None, has_response: bool) -> list[str]:
    """The reasoning per task; where none was run, a word on why (the screen decided, or there is no response)."""
    sections = task_sections(text)
    panels = []
    for key in VERDICT_KEYS:
        panel = sections[key]
        if not panel and result and not text:
            verdict = result["verdicts"][key]
            if key != PROMPT_HARMFULNESS and not has_response:
                panel = views.NO_RESPONSE_NOTE
            elif verdict.get("decided_by") == "screen":
                panel = views.SCREEN_NOTE
        panels.append(panel)
    return panels


def analyze(state: AppState, prompt: str, response: str, settings: RunSettings, session: str = ""
            ) -> Iterator[tuple]:
    """Stream one run to the Analyze tab: reasoning per task, a chip per verdict as soon as it is settled."""
    guard = ready_guard(state, settings)  # loaded outside the GPU call
    # The stop lives here, in the app's own process: on ZeroGPU the generation runs in a forked worker that
    # never sees this process's events. Closing the GPU generator is what reaches it (spaces sets the
    # worker's stop event, and the worker closes the generation at its next token).
    stop = state.stops.start(session)
    has_response = bool(response)
    # Without a response the response verdicts can only be n/a: said from the start, not "…" until the end.
    chips = {key: views.chip(key) if has_response or key == PROMPT_HARMFULNESS else views.chip(key, state="n/a")
             for key in VERDICT_KEYS}
    first_verdict = None

    def frame(text, run_state, elapsed_s, result=None):
        running = run_state == "generating"
        return (*panel_texts(text, result, has_response), *(chips[key] for key in VERDICT_KEYS),
                views.status(run_state),
                views.summary(result, elapsed_s=elapsed_s, first_verdict_s=first_verdict),
                json.dumps(result, indent=2, ensure_ascii=False) if result else "", result,
                model_banner(guard, state.served.version), gr.update(interactive=result is not None),
                gr.update(interactive=running),
                gr.update(interactive=result is not None and views.screen_decided(result)))

    # The click clears the last run's result at once, so Flag cannot file it while this one streams.
    yield frame("", "generating", 0.0)
    text, elapsed_s = "", 0.0
    updates = state.calls.stream(prompt, response, settings)
    try:
        for update in updates:
            text, elapsed_s, result, screen = update["text"], update["elapsed_s"], update["result"], update["screen"]
            if screen:  # the screen's verdicts, within milliseconds; the reasoning model decides the rest
                for key in VERDICT_KEYS:
                    verdict = screen["verdicts"][key]
                    if verdict["decided_by"] == "screen" and verdict["label"]:
                        chips[key] = views.chip(key, verdict["label"], views.verdict_note(verdict),
                                                decided_by="screen")
                first_verdict = first_verdict if first_verdict is not None else elapsed_s
            for event in update["events"]:
                if event["kind"] == "verdict":
                    source = event.get("source") or "answers"
                    note = "" if source == "answers" else f"from {source.replace('_', ' ')}"
                    chips[event["task"]] = views.chip(event["task"], event.get("label"), note,
                                                      provisional=event.get("provisional", False))
                    first_verdict = first_verdict if first_verdict is not None else elapsed_s
            if stop.is_set():
                break  # keep the partial text and the chips settled so far; a stopped run has no result
            if result:
                for key in VERDICT_KEYS:
                    verdict = result["verdicts"][key]
                    chips[key] = views.chip(key, verdict["label"], views.verdict_note(verdict),
                                            state=verdict["label"] or "n/a", decided_by=verdict["decided_by"])
            yield frame(text, "done" if result else "generating", elapsed_s, result)
    finally:
        updates.close()
        state.stops.finish(session, stop)
    if stop.is_set():
        yield frame(text, "stopped", elapsed_s)


def explain(state: AppState, prompt: str, response: str, settings: RunSettings, session: str = ""
            ) -> Iterator[tuple]:
    """The reasoning model on an input the screen decided: the same run in full mode."""
    yield from analyze(state, prompt, response, replace(settings, reasoning="full"), session)


def stop(state: AppState, session: str) -> None:
    state.stops.stop(session)


def flag(result: dict | None, prompt_label, refusal_label, response_label, comment: str,
         policy: str | None = None, policy_label: str | None = None) -> str:
    if not result:
        raise gr.Error("Analyze something first, then flag the result.")
    policy, policy_label = policies.flag_policy(policy, policy_label)
    corrected = {PROMPT_HARMFULNESS: prompt_label,
                 RESPONSE_REFUSAL: None if refusal_label == "n/a" else refusal_label,
                 RESPONSE_HARMFULNESS: None if response_label == "n/a" else response_label}
    record = flags.make_flag(result, corrected, comment, policy=policy, policy_label=policy_label)
    path, updated = flags.record_flag(record)
    delivery = flags.deliver_to_argilla(path)
    text = " ".join(filter(None, [flags.what_was_recorded(record, updated), delivery or flags.where_it_goes(path)]))
    return f'<span id="flag-status">{html.escape(text)}</span>'


def run_batch(state: AppState, upload, settings: RunSettings, session: str = "",
              strictness_choice: str = strictness.BALANCED) -> Iterator[tuple]:
    """Check a file: its rows in chunks that each fit one GPU call, the results kept between chunks; the rows
    done are offered for download whether the file ends, Stop is pressed or a chunk is aborted. Each row is
    labelled at ``strictness_choice`` (webapp/strictness.py) before it is shown or written."""
    strictness.threshold_of(strictness_choice)  # an unknown choice: a message before anything runs
    if upload is None:
        raise gr.Error("Upload a CSV or JSONL file with a 'prompt' column (and optionally 'response').")
    ready_guard(state, settings)  # loads the model outside the GPU call
    rows, errors = split_rows(upload)
    outcome = batch.BatchOutcome(errors=errors, total=len(rows))
    stop_event = state.stops.start(session)  # in this process, as for analyze: closing the GPU generator stops it
    failure = None

    def frame(run_state):
        return (batch.table_update(outcome), gr.update(value=None, visible=False), gr.update(visible=False),
                batch.progress_message(outcome, run_state) + strictness.batch_note(strictness_choice),
                gr.update(interactive=True))

    yield frame("running")  # the bad rows at once
    size = rows_per_call(settings.max_new_tokens)
    try:
        for start in range(0, len(rows), size):
            records_per_row = state.calls.batch(rows[start:start + size], settings)
            try:
                for records in records_per_row:
                    outcome.records.extend(strictness.relabelled(record, strictness_choice) for record in records)
                    if stop_event.is_set():
                        break
                    yield frame("running")
            finally:
                records_per_row.close()
            if stop_event.is_set():
                break
    except gr.Error as error:
        failure = error.message
    except Exception as error:  # noqa: BLE001 (e.g. ZeroGPU aborting a call: the rows done are kept and offered)
        failure = str(error) or type(error).__name__
    finally:
        state.stops.finish(session, stop_event)
    run_state = "aborted" if failure else "stopped" if stop_event.is_set() else "done"
    files = outcome.downloads()
    chart = charts.verdict_counts(outcome.records) if outcome.records else None
    yield (batch.table_update(outcome), gr.update(value=files, visible=bool(files)),
           gr.update(value=chart, visible=bool(chart)),
           batch.progress_message(outcome, run_state, reason=failure) + strictness.batch_note(strictness_choice),
           gr.update(interactive=False))


def upload_ready(file) -> str:
    return f"Ready to check {Path(file).name}." if file else ""


def show_reports(files) -> tuple:
    reports, bad = benchmarks.read_reports(files)
    chart = charts.benchmark_report(reports) if reports else None
    curves = benchmarks.curves(reports) if reports else None
    return (gr.update(value=chart, visible=bool(reports)), gr.update(value=curves, visible=curves is not None),
            benchmarks.describe(reports, bad))


def classify(state: AppState, prompt: str, response: str = "") -> dict:
    """The API's /classify: the page's default settings, the result as a dict."""
    check_input(prompt, response)
    settings = state.defaults
    ready_guard(state, settings)
    return state.calls.classify(prompt, response, settings)


def classify_stream(state: AppState, prompt: str, response: str = "") -> Iterator[dict]:
    """The API's /classify_stream: the page's default settings, each update as the page receives it."""
    check_input(prompt, response)
    settings = state.defaults
    ready_guard(state, settings)
    yield from state.calls.stream(prompt, response, settings)
