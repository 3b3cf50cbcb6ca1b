"""How many 512-token pairs a second this CPU could give the encoder screen if it did nothing but its matrix
products at the speed torch reaches on them: the work of one pair counted from the config, divided into the
measured rate of a matrix product of the encoder's own shape, per dtype. A ceiling, not a forecast: it leaves out
attention's softmax, layer norms, GELU and memory traffic, which the measured pairs/s pays for.

    python -m benchmarks.encoder_ceiling                        # the shipped screen, float32 and bfloat16
    python -m benchmarks.encoder_ceiling --seconds 5 --threads 2
    python -m benchmarks.encoder_ceiling --profile             # and where one batch of 8 pairs spends its time

Run it on an idle machine: the figure is the machine's, and other jobs take their share of it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

PAIRS = 8  # a batch as the screen batches long pairs: 8 of 512 tokens fill its 4,096-token batch


def pair_flops(config: dict, tokens: int) -> float:
    """Multiply-adds x 2 of one ``tokens``-long pair through the encoder's layers: the four attention projections,
    the two feed-forward matrices, and attention's two products (scores and the weighted values)."""
    hidden, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    projections = 4 * hidden * hidden + 2 * hidden * inner
    attention = 2 * tokens * hidden
    return 2.0 * layers * tokens * (projections + attention)


def matmul_rate(dtype, rows: int, hidden: int, inner: int, seconds: float) -> float:
    """Sustained FLOP/s of ``(rows x hidden) @ (hidden x inner)``, the feed-forward's shape, in ``dtype``."""
    import torch

    left = torch.randn(rows, hidden).to(dtype)
    right = torch.randn(hidden, inner).to(dtype)
    for _ in range(3):
        left @ right
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        left @ right
        done += 1
    return 2.0 * rows * hidden * inner * done / (time.perf_counter() - began)


def time_by_operator(module, tokens: int, dtype: str, repeats: int = 3) -> dict:
    """Wall seconds of one batch of ``PAIRS`` ``tokens``-long pairs through the screen's module (best of
    ``repeats``), and the share of the profiled CPU time each of its largest operators took."""
    import torch

    from guardreasoner.encoder import computing

    ids = torch.randint(1000, 20000, (PAIRS, tokens))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}

    def forward():
        with torch.inference_mode(), computing(dtype):
            module(**batch)

    forward()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        forward()
        best = min(best, time.perf_counter() - began)
    with torch.profiler.profile() as profile:
        forward()
    spent = {event.key: event.self_cpu_time_total for event in profile.key_averages()}
    total = sum(spent.values())
    largest = sorted(spent.items(), key=lambda item: -item[1])[:5]
    return {"batch_s": round(best, 3), "pairs_per_s": round(PAIRS / best, 1),
            "share": {name: round(value / total, 3) for name, value in largest}}


def main(argv: list[str] | None = None) -> dict:
    import torch

    from guardreasoner.cpu import native_bfloat16
    from guardreasoner.encoder import load_module

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--screen", default="assets/screen/encoder")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=3.0, help="per dtype")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--profile", action="store_true", help="also time one batch through the screen, by operator")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = json.loads((Path(args.screen) / "config.json").read_text(encoding="utf-8"))
    flops = pair_flops(config, args.tokens)
    rows = PAIRS * args.tokens
    module = load_module(Path(args.screen)) if args.profile else None
    out = {"gflop_per_pair": round(flops / 1e9, 2), "threads": args.threads, "native_bfloat16": native_bfloat16()}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        rate = matmul_rate(dtype, rows, config["hidden_size"], config["intermediate_size"], args.seconds)
        out[name] = {"matmul_gflop_per_s": round(rate / 1e9, 1), "ceiling_pairs_per_s": round(rate / flops, 1)}
        if args.profile:
            out[name]["measured"] = time_by_operator(module, args.tokens, name)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
