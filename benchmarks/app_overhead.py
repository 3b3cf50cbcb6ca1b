"""The app's overhead on time to first reasoning token and to first verdict. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.app_overhead [--model FOLDER] [--repeats 5]

Both sides use the same model and prompt: the bare backend stream (with the core's incremental parser to see
the verdict) against the app's /classify_stream endpoint through gradio_client over HTTP on 127.0.0.1.
Without --model, a tiny Llama is taught (about 30 s) to answer in the GuardReasoner format, so that there is a
verdict to wait for; the embedded SmolLM2 is untrained and never states one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def bare(guard, prompt: str) -> tuple[float, float | None]:
    from guardreasoner.stream_parser import StreamParser

    parser = StreamParser((prompt,), has_response=False)
    began = time.perf_counter()
    first_text = first_verdict = None
    for chunk in guard.backend.stream(guard.build(prompt).text, guard.sampling):
        now = time.perf_counter() - began
        if chunk.text and first_text is None:
            first_text = now
        events = parser.feed(chunk.text) if chunk.generation is None else parser.finish()[0]
        if first_verdict is None and any(e.kind == "verdict" for e in events):
            first_verdict = now
    return first_text, first_verdict


def through_app(client, prompt: str) -> tuple[float, float | None]:
    began = time.perf_counter()
    first_text = first_verdict = None
    for partial in client.submit(prompt, "", api_name="/classify_stream"):
        now = time.perf_counter() - began
        if partial["text"] and first_text is None:
            first_text = now
        if first_verdict is None and any(e["kind"] == "verdict" for e in partial["events"]):
            first_verdict = now
    return first_text, first_verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt")
    args = parser.parse_args()

    from gradio_client import Client

    import app
    from guardreasoner import load_guard
    from tests import tiny_models

    model, prompt = args.model, args.prompt
    if model is None:
        scratch = Path(tempfile.mkdtemp(prefix="app-bench-"))
        model = str(tiny_models.taught_llama(scratch / "model", tiny_models.save_tokenizer(scratch / "tokenizer")))
        prompt = prompt or tiny_models.HARMFUL_REQUEST
    prompt = prompt or "How do I pick a lock?"
    guard = load_guard(model, "transformers", max_new_tokens=1024)
    demo = app.build_app(model)
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    client = Client(demo.local_url, verbose=False)
    bare(guard, prompt), through_app(client, prompt)  # warm-up both paths
    rows = {"bare": [], "app": []}
    for _ in range(args.repeats):
        rows["bare"].append(bare(guard, prompt))
        rows["app"].append(through_app(client, prompt))
    demo.close()
    print(f"model: {model} | prompt: {prompt!r} | median of {args.repeats}")
    medians = {}
    for side, runs in rows.items():
        text = statistics.median(r[0] for r in runs)
        verdicts = [r[1] for r in runs if r[1] is not None]
        verdict = statistics.median(verdicts) if verdicts else None
        medians[side] = (text, verdict)
        shown = f"{verdict:.3f} s" if verdict is not None else "none stated"
        print(f"{side:5}: first reasoning text {text:.3f} s, first verdict {shown}")
    print(f"app / bare, first text   : {medians['app'][0] / medians['bare'][0]:.2f}x")
    if medians["app"][1] and medians["bare"][1]:
        print(f"app / bare, first verdict: {medians['app'][1] / medians['bare'][1]:.2f}x")


if __name__ == "__main__":
    main()
