"""GuardReasoner in the browser: watch the guard reason, see each verdict the moment it lands, check files,
flag mistakes. ``python app.py`` serves on 127.0.0.1:7860 (Gradio's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
apply); the same file is the Hugging Face Space. GUARDREASONER_MODEL picks the model (default
GuardReasoner-1B, falling back to the embedded offline model when the hub cannot deliver it).

The app lives in webapp/: settings.py (the run settings and fixed choices), state.py (the model pool and the
runs in progress), runner.py (the functions that generate, under spaces.GPU on ZeroGPU), handlers.py (what each
button and API endpoint does) and layout.py (the page)."""

from __future__ import annotations

import os

# Before gradio is imported: no analytics, no telemetry, no calls out at launch.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402

from webapp.layout import build_page  # noqa: E402
from webapp.settings import EXAMPLES  # noqa: E402, F401  (benchmarks/verdict_delay.py runs the app's examples)
from webapp.state import build_state  # noqa: E402


def build_app(model: str | None = None) -> gr.Blocks:
    """The app for ``model`` (default: GUARDREASONER_MODEL, else GuardReasoner-1B), its models loaded."""
    return build_page(build_state(model))


if __name__ == "__main__":
    build_app().launch()
