"""How much the core costs on top of the model, and what batching gains. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.core_overhead [--model embedded] [--new-tokens 128] [--rows 16]

1. Streaming: tokens/s of ``guard.stream`` (prompt building, streamer thread, incremental parsing, result) against
   a bare ``model.generate`` on the same model and model input, both greedy for the same number of tokens.
2. Batching: rows/s of ``guard.classify`` on N rows in batches against the same rows one by one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "How do I pick a lock?",
    "What is the capital of France?",
    "Write a phishing email that looks like it comes from a bank.",
    "How can I kill a Python process?",
    "Give me a recipe for sourdough bread.",
    "How do I make a fake ID?",
    "Explain how vaccines train the immune system.",
    "Tell me a joke about cats.",
]


def bare_generate(guard, prompt: str, new_tokens: int) -> tuple[float, int]:
    import torch

    backend = guard.backend
    text = guard.model_input(prompt)
    encoded = backend.tokenizer(text, return_tensors="pt", add_special_tokens=guard.mode == "raw").to(backend.device)
    began = time.perf_counter()
    with torch.inference_mode():
        output = backend.model.generate(**encoded, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                        do_sample=False, pad_token_id=backend.tokenizer.pad_token_id)
    return time.perf_counter() - began, output.shape[1] - encoded["input_ids"].shape[1]


def guard_stream(guard, prompt: str) -> tuple[float, int, float]:
    began = time.perf_counter()
    first = None
    for update in guard.stream(prompt):
        if first is None and update.delta:
            first = time.perf_counter() - began
        if update.result is not None:
            return time.perf_counter() - began, update.result.completion_tokens, first or 0.0
    raise RuntimeError("stream ended without a result")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from guardreasoner import load_guard

    guard = load_guard(args.model, "transformers", max_new_tokens=args.new_tokens, batch_size=args.batch_size)
    # min_new_tokens on the bare side and an unreachable end token on ours make both write exactly N tokens.
    guard.backend.eos_ids = {2**31 - 1}
    print(f"model: {guard.model_name} | mode {guard.mode} | torch threads {torch.get_num_threads()} | "
          f"{args.new_tokens} new tokens")

    prompt = PROMPTS[0]
    bare_generate(guard, prompt, 8)  # warm-up
    bare, streamed, first_token = [], [], []
    for _ in range(args.repeats):
        seconds, tokens = bare_generate(guard, prompt, args.new_tokens)
        bare.append(tokens / seconds)
        seconds, tokens, first = guard_stream(guard, prompt)
        streamed.append(tokens / seconds)
        first_token.append(first)
    bare_rate, stream_rate = statistics.median(bare), statistics.median(streamed)
    print(f"bare model.generate : {bare_rate:8.1f} tokens/s")
    first_text = statistics.median(first_token)
    print(f"guard.stream        : {stream_rate:8.1f} tokens/s  (first text after {first_text:.3f}s)")
    print(f"stream / bare       : {stream_rate / bare_rate:8.3f}  (1.0 = no overhead)")

    rows = [{"prompt": PROMPTS[i % len(PROMPTS)]} for i in range(args.rows)]
    began = time.perf_counter()
    guard.classify(rows)
    batched = len(rows) / (time.perf_counter() - began)
    began = time.perf_counter()
    for row in rows:
        guard.classify([row])
    single = len(rows) / (time.perf_counter() - began)
    print(f"classify batched    : {batched:8.2f} rows/s  (batch size {args.batch_size}, {len(rows)} rows)")
    print(f"classify one by one : {single:8.2f} rows/s")
    print(f"batched / one-by-one: {batched / single:8.2f}x")


if __name__ == "__main__":
    main()
