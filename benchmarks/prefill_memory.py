"""Peak resident memory of the transformers backend's prefill at batch 8 on the longest OpenAIModeration inputs.

    .venv/bin/python -m benchmarks.prefill_memory --data-dir ../shared/benchmarks/guardreasoner [--max-batch-tokens 0]

``--max-batch-tokens 0`` turns the grouping of long rows off (all 8 rows in one padded batch). Prints one JSON
line: input lengths, peak RSS before and after, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=2)
    parser.add_argument("--max-batch-tokens", type=int, default=4096, help="0: no limit")
    args = parser.parse_args()

    import torch

    from eval.data import load_benchmark
    from guardreasoner.backends.base import SamplingConfig
    from guardreasoner.backends.transformers_backend import TransformersBackend
    from guardreasoner.guard import Guard
    from guardreasoner.models import model_folder, resolve_model

    torch.set_num_threads(1)
    rows = sorted(load_benchmark("OpenAIModeration", args.data_dir), key=lambda row: -len(row.prompt))[: args.batch]
    backend = TransformersBackend(model_folder(resolve_model(args.model)), batch_size=args.batch,
                                  max_batch_tokens=args.max_batch_tokens or None)
    guard = Guard(backend)
    texts = [guard.build(row.prompt, row.response).text for row in rows]
    before = peak_gib()
    began = time.perf_counter()
    backend.generate(texts, SamplingConfig(max_new_tokens=args.new_tokens))
    print(json.dumps({
        "input_tokens": [len(backend.tokenizer(text)["input_ids"]) for text in texts],
        "max_batch_tokens": args.max_batch_tokens or None, "peak_before_gib": round(before, 2),
        "peak_gib": round(peak_gib(), 2), "seconds": round(time.perf_counter() - began, 1),
    }))


if __name__ == "__main__":
    main()
