"""Speed and memory of the engines, side by side in one run. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.engine_speed --data-dir ../shared/benchmarks/guardreasoner \
        [--model embedded | --model llama-1b-shape] [--engines transformers-float32 ctranslate2-int8 ...]

Each engine runs in its own child process (so peak resident memory is its own), and the engines take turns
round after round (so a machine shared with other work slows them alike). Per engine:

- the median time of a one-token generation (the prompt's prefill) over 5 requests;
- tokens/s at batch 1 and at batch 8 (SimpleSafetyTests requests, greedy, ``--new-tokens`` each);
- time to the first reasoning text and to the first verdict through ``guard.stream`` (one request);
- ``eval run``-style rows/s: ``guard.classify`` on ``--rows`` OpenAIModeration rows (long inputs) at batch 8;
- load seconds and peak RSS (``ru_maxrss`` of the child).

Engines: ``transformers-float32``, ``transformers-bfloat16``, ``ctranslate2-int8``, ``ctranslate2-float32``,
with ``-threads2`` for two intra-op threads and ``-nocache`` to switch off CTranslate2's static prompt cache.
``--model llama-1b-shape`` builds random weights shaped like Llama-3.2-1B (GuardReasoner-1B's config) once
under the cache: speed does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LLAMA_1B_SHAPE = {  # meta-llama/Llama-3.2-1B, the base of GuardReasoner-1B
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": True, "max_position_embeddings": 8192,
    "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
}


def llama_1b_shape_dir() -> Path:
    """Random Llama-3.2-1B-shaped weights with the SmolLM2 tokenizer (its ids fit the larger vocabulary)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from guardreasoner.models import cache_dir, embedded_model_dir, write_folder_atomically

    target = cache_dir() / "bench-llama-1b-shape"
    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    config = LlamaConfig(**LLAMA_1B_SHAPE, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    write_folder_atomically(target, write)
    return target


def model_dir(model: str) -> str:
    from guardreasoner.models import model_folder, resolve_model

    return str(llama_1b_shape_dir()) if model == "llama-1b-shape" else model_folder(resolve_model(model))


def build_guard(engine: str, folder: str, args):
    from guardreasoner.guard import Guard

    parts = engine.split("-")
    kind, precision = parts[0], parts[1]
    if kind == "transformers":
        import torch

        from guardreasoner.backends.transformers_backend import TransformersBackend

        torch.set_num_threads(2 if "threads2" in parts else 1)
        backend = TransformersBackend(folder, dtype=getattr(torch, precision), batch_size=8)
    else:
        from guardreasoner.backends.ctranslate2_backend import CTranslate2Backend

        backend = CTranslate2Backend(folder, compute_type=precision, batch_size=8,
                                     inter_threads=1 if "threads2" in parts else None,
                                     intra_threads=2 if "threads2" in parts else 1,
                                     static_prompt="nocache" not in parts)
    return Guard(backend)


def child(args) -> None:
    """Measure one engine and print one JSON line."""
    from eval.data import load_benchmark
    from guardreasoner.rows import seeded_sample

    short = [row.prompt for row in load_benchmark("SimpleSafetyTests", args.data_dir)][:8]
    long_rows = seeded_sample(load_benchmark("OpenAIModeration", args.data_dir), args.rows, seed=0)
    began = time.perf_counter()
    guard = build_guard(args.child, model_dir(args.model), args)
    figures = {"engine": args.child, "load_s": time.perf_counter() - began}
    fixed = guard.with_sampling(max_new_tokens=args.new_tokens, top_logprobs=0)
    fixed.backend.generate([fixed.build(short[0]).text], fixed.sampling)  # warm-up
    one = fixed.with_sampling(max_new_tokens=1)
    timings = []
    for prompt in short[2:7]:  # prefill of a whole guard prompt: what the static prompt cache shortens
        began = time.perf_counter()
        one.backend.generate([one.build(prompt).text], one.sampling)
        timings.append(time.perf_counter() - began)
    figures["first_token_s"] = sorted(timings)[len(timings) // 2]
    for batch in (1, 8):
        began = time.perf_counter()
        made = fixed.backend.generate([fixed.build(p).text for p in short[:batch]], fixed.sampling)
        figures[f"tok_s_b{batch}"] = sum(g.completion_tokens for g in made) / (time.perf_counter() - began)
    streaming = guard.with_sampling(max_new_tokens=args.stream_tokens)
    began = time.perf_counter()
    first_text = first_verdict = None
    for update in streaming.stream(short[1]):
        now = time.perf_counter() - began
        if update.delta.strip() and first_text is None:
            first_text = now
        if first_verdict is None and any(event.kind == "verdict" for event in update.events):
            first_verdict = now
    figures.update(first_text_s=first_text, first_verdict_s=first_verdict)
    if args.rows:
        rows = guard.with_sampling(max_new_tokens=args.row_tokens)
        began = time.perf_counter()
        results = rows.classify([{"prompt": r.prompt, "response": r.response} for r in long_rows])
        figures["rows_s"] = len(results) / (time.perf_counter() - began)
        # output_tokens after the vocabulary rename, completion_tokens before it
        figures["row_tokens"] = sum(getattr(r, "output_tokens", None) or r.completion_tokens for r in results)
    figures["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(figures), flush=True)


def table(results: list[dict]) -> str:
    columns = ["engine", "load_s", "first_token_s", "tok_s_b1", "tok_s_b8", "first_text_s", "first_verdict_s",
               "rows_s", "peak_rss_gib"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for figures in results:
        cells = [figures.get(c) for c in columns]
        lines.append("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default="embedded", help="a model name or folder, or llama-1b-shape")
    parser.add_argument("--engines", nargs="+", default=["transformers-float32", "ctranslate2-int8"])
    parser.add_argument("--rounds", type=int, default=1, help="each engine measured this many times, in turns")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per row for the tokens/s figures")
    parser.add_argument("--stream-tokens", type=int, default=512, help="max new tokens of the stream")
    parser.add_argument("--rows", type=int, default=8, help="OpenAIModeration rows for rows/s (0 skips)")
    parser.add_argument("--row-tokens", type=int, default=512, help="max new tokens per row for rows/s")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.model == "llama-1b-shape":
        llama_1b_shape_dir()  # built once, before the children time anything
    results = []
    for round_ in range(args.rounds):
        for engine in args.engines:
            command = [sys.executable, "-m", "benchmarks.engine_speed", "--child", engine, "--data-dir", args.data_dir,
                       "--model", args.model, "--new-tokens", str(args.new_tokens),
                       "--stream-tokens", str(args.stream_tokens), "--rows", str(args.rows),
                       "--row-tokens", str(args.row_tokens)]
            done = subprocess.run(command, capture_output=True, text=True, check=False,
                                  env=os.environ | {"OMP_NUM_THREADS": "2"})
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{engine}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            results.append(json.loads(line[len("RESULT "):]) | {"round": round_})
            print(json.dumps(results[-1]), flush=True)
    print(f"\nmodel {args.model}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the end\n")
    print(table(results))


if __name__ == "__main__":
    main()
