"""The page: its components, laid out, and each event wired to a handler (webapp/handlers.py); the API."""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from guardreasoner.results import VERDICT_KEYS

from . import batch, handlers, policies, strictness, views
from .settings import CONCURRENCY, EXAMPLES, MODEL_CHOICES, PROMPT, REASONING_CHOICES, RESPONSE, RunSettings
from .state import AppState, model_banner

SETTINGS_COUNT = len(RunSettings.field_names())


def _session(request: gr.Request | None) -> str:
    return request.session_hash if request else ""


def with_settings(handler, state: AppState, session_suffix: str = ""):
    """A handler ``handler(state, *inputs, settings, session)`` as Gradio calls it: the request first (Gradio
    passes it by its annotation), then the inputs, then the five settings components."""

    def run(request: gr.Request, *values) -> Iterator[tuple]:
        settings = RunSettings.from_inputs(*values[-SETTINGS_COUNT:])
        yield from handler(state, *values[:-SETTINGS_COUNT], settings, _session(request) + session_suffix)

    run.__name__ = handler.__name__
    return run


def build_page(state: AppState) -> gr.Blocks:
    defaults = state.defaults
    guard = state.pool.find()
    with gr.Blocks(title="GuardReasoner") as demo:
        gr.HTML(f"<style>{views.CSS}</style>")
        gr.Markdown("# GuardReasoner\nA reasoning guard: is the **prompt** harmful, is the **response** a refusal, "
                    "is the **response** harmful? Watch it reason; each verdict lights up as soon as it is decided.",
                    elem_id="intro")
        banner = gr.Markdown(model_banner(guard, state.served.version), elem_id="model-banner")

        with gr.Tab("Analyze"):
            with gr.Row():
                # min_width makes the row wrap on a phone: the boxes stack instead of sitting side by side;
                # max_lines bounds a long paste (it scrolls inside the box).
                prompt_box = gr.Textbox(label=PROMPT, lines=4, max_lines=10, min_width=320, elem_id="request-box")
                response_box = gr.Textbox(label=f"{RESPONSE} (optional)", lines=4, max_lines=10, min_width=320,
                                          elem_id="reply-box")
            with gr.Row():
                analyze_button = gr.Button("Analyze", variant="primary", elem_id="analyze-button")
                stop_button = gr.Button("Stop", variant="secondary", interactive=False, elem_id="stop-button")
                explain_button = gr.Button("Explain with reasoning", variant="secondary", interactive=False,
                                           elem_id="explain-button")
            reasoning_mode = gr.Radio(REASONING_CHOICES, value=defaults.reasoning, label="Reasoning",
                                      elem_id="reasoning-mode")
            # Re-labels the result on screen from its probabilities at once (no new run); Batch labels with it too.
            strictness_choice = gr.Radio(strictness.choices(), value=strictness.default_choice(),
                                         label="Strictness", elem_id="strictness")
            strictness_note = gr.HTML(strictness.note(None, None, strictness.default_choice()))
            gr.Examples(EXAMPLES, [prompt_box, response_box],
                        label="Examples: harmful prompt · safe but alarming · refusal · harmful compliance")
            with gr.Row():
                chip_boxes = [gr.HTML(views.chip(key)) for key in VERDICT_KEYS]
            policy_chips = gr.HTML(policies.category_chips(None))  # one chip per policy (the Policies tab)
            with gr.Row():
                panels = [gr.Textbox(label=views.TASK_TITLES[key], lines=10, max_lines=20, interactive=False,
                                     autoscroll=True, elem_id=f"panel-{key}") for key in VERDICT_KEYS]
            run_status = gr.HTML(elem_id="status")
            summary = gr.Markdown(elem_id="summary")
            # Its height follows the JSON (views.CSS).
            result_json = gr.Code(label="Result (JSON)", language="json", interactive=False, elem_id="result-json")
            result_state = gr.State(None)
            with gr.Accordion("Flag this result as wrong", open=False):
                with gr.Row():
                    correct_prompt = gr.Radio(["harmful", "unharmful"], label=f"{PROMPT} is",
                                              elem_id="correct-request")
                    correct_refusal = gr.Radio(["refusal", "compliance", "n/a"], value="n/a",
                                               label=f"{RESPONSE} is a")
                    correct_response = gr.Radio(["harmful", "unharmful", "n/a"], value="n/a", label=f"{RESPONSE} is")
                comment = gr.Textbox(label="Comment", lines=2, elem_id="flag-comment")
                flag_policy, flag_policy_label = policies.flag_inputs()
                flag_button = gr.Button("Flag", elem_id="flag-button", interactive=False)
                flag_status = gr.HTML()

        with gr.Tab("Batch"):
            # Upload buttons rather than Gradio's drop zones: their visible text is their accessible name (axe).
            gr.Markdown("A CSV or JSONL file with a `prompt` column and an optional `response` column.")
            upload = gr.UploadButton("Choose a CSV or JSONL file", file_types=[".csv", ".jsonl", ".json"],
                                     elem_id="batch-upload")
            with gr.Row():
                batch_button = gr.Button("Check file", variant="primary", elem_id="batch-button")
                batch_stop = gr.Button("Stop", variant="secondary", interactive=False, elem_id="batch-stop")
            batch_message = gr.Markdown(elem_id="batch-message")
            batch_table = gr.Dataframe(headers=batch.TABLE_COLUMNS, interactive=False, wrap=True,
                                       column_widths=batch.COLUMN_WIDTHS, elem_id="batch-table")
            # Shown only when there is something to download or chart (an empty box reads as a broken download).
            batch_files = gr.File(label="Download results", file_count="multiple", elem_id="batch-files",
                                  visible=False)
            batch_chart = gr.Plot(visible=False)

        with gr.Tab("Policies"):
            policy_tab = policies.build_tab()

        with gr.Tab("Benchmarks"):
            gr.Markdown("Upload one or more reports from `python -m eval score RUN --json report.json` to compare "
                        "them with the published systems. Where a run kept its verdict probabilities, its "
                        "reliability, ROC and precision-recall curves follow.")
            reports = gr.UploadButton("Choose evaluation reports (JSON)", file_count="multiple", file_types=[".json"],
                                      elem_id="report-upload")
            report_notes = gr.Markdown(elem_id="report-notes")
            report_chart = gr.Plot(visible=False, elem_id="report-chart")  # no empty axes before an upload
            report_curves = gr.Plot(visible=False, elem_id="report-curves")  # for reports with probabilities

        # Settings after the tabs: secondary, and on a phone the input boxes then sit on the first screen.
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                model_choice = gr.Dropdown(state.pool.offered_choices(MODEL_CHOICES), value=defaults.model,
                                           label="Model (empty: the one in use)", info=state.pool.offered_note(),
                                           elem_id="setting-model")
                endpoint = gr.Textbox(label="Endpoint URL (for an OpenAI-compatible server)",
                                      value=defaults.endpoint, placeholder="http://127.0.0.1:8000/v1",
                                      elem_id="setting-endpoint")
            with gr.Row():
                max_new_tokens = gr.Slider(32, 2048, value=defaults.max_new_tokens, step=32, label="Max new tokens",
                                           elem_id="setting-max-new-tokens")
                temperature = gr.Slider(0.0, 1.5, value=defaults.temperature, step=0.05,
                                        label="Temperature (0 = greedy)", elem_id="setting-temperature")
        # In RunSettings' field order.
        settings = [model_choice, endpoint, max_new_tokens, temperature, reasoning_mode]
        model_choice.change(state.default_reasoning, model_choice, reasoning_mode, api_name=False, queue=False)

        outputs = [*panels, *chip_boxes, run_status, summary, result_json, result_state, banner, flag_button,
                   stop_button, explain_button]

        def check_analyze(prompt, response, *values):
            handlers.check_analyze(state, prompt, response, RunSettings.from_inputs(*values))

        for button, handler in ((analyze_button, handlers.analyze), (explain_button, handlers.explain)):
            checked = button.click(check_analyze, [prompt_box, response_box, *settings], None, api_name=False,
                                   concurrency_limit=None)
            checked.success(with_settings(handler, state), [prompt_box, response_box, *settings], outputs,
                            api_name=False, concurrency_limit=CONCURRENCY)
        def stop_run(request: gr.Request):
            handlers.stop(state, _session(request))

        def stop_batch(request: gr.Request):
            handlers.stop(state, _session(request) + ":batch")

        stop_button.click(stop_run, None, None, api_name=False, queue=False)
        flag_button.click(handlers.flag, [result_state, correct_prompt, correct_refusal, correct_response, comment,
                                          flag_policy, flag_policy_label], flag_status, api_name=False)
        # The policy chips follow the result (cleared at a new run's click, filled when its result lands).
        result_state.change(policies.category_chips, result_state, policy_chips, api_name=False, queue=False)
        policies.wire(policy_tab, flag_policy, demo)
        for changed in (strictness_choice.change, result_state.change):
            changed(strictness.show, [result_state, strictness_choice], [*chip_boxes, result_json, strictness_note],
                    api_name=False, queue=False)

        def run_batch(request: gr.Request, upload_file, choice, *values) -> Iterator[tuple]:
            yield from handlers.run_batch(state, upload_file, RunSettings.from_inputs(*values),
                                          _session(request) + ":batch", choice)

        batch_button.click(run_batch, [upload, strictness_choice, *settings],
                           [batch_table, batch_files, batch_chart, batch_message, batch_stop], api_name=False,
                           show_progress="hidden")  # the message says the progress; no overlay on the table
        batch_stop.click(stop_batch, None, None, api_name=False, queue=False)
        reports.upload(handlers.show_reports, reports, [report_chart, report_curves, report_notes], api_name=False)
        upload.upload(handlers.upload_ready, upload, batch_message, api_name=False)

        @gr.api(api_name="classify", concurrency_limit=CONCURRENCY)
        def classify(prompt: str, response: str = "") -> dict:
            """Classify a prompt (and an optional response; empty for none) with the page's default settings.
            Returns verdicts, their status, the reasoning, the model and timings."""
            return handlers.classify(state, prompt, response)

        @gr.api(api_name="classify_stream", concurrency_limit=CONCURRENCY)
        def classify_stream(prompt: str, response: str = "") -> Iterator[dict]:
            """Like /classify, streamed: partial results (text so far, settled steps and verdicts, done), the
            last one with the complete result."""
            yield from handlers.classify_stream(state, prompt, response)

    demo.queue(default_concurrency_limit=CONCURRENCY)
    return demo
