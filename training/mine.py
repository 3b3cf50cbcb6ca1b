"""Hard-sample mining: sample k outputs per training row; a row is hard when its samples are mixed right and
wrong; its pair is (a right sample, a wrong one), weighted by how wrong the model tends to be.

    python -m training.mine --models runs/rsft-1b --dataset_name yueliu1999/GuardReasonerTrain --output pairs.jsonl
    python -m training.mine --models runs/rsft-1b runs/rsft-1b-no-wildguard runs/rsft-1b-no-aegis ...

With several models (the paper's leave-one-source-out models, trained with ``training.rsft --splits``), each
row's samples from all of them are pooled before judging, which finds more hard rows. Samples are appended to
``<output>.samples.jsonl`` chunk by chunk, so an interrupted run resumes where it stopped.

The task that decides is the first one with mixed samples, in the paper's order: the request, then the reply's
harm (only where the row has both a gold label and a reply), then refusal. The weight is #wrong - #correct,
min-max scaled to [0.8, 1.2] within each source split. The output is what ``training.hs_dpo`` reads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from guardreasoner.parser import parse, parse_for, split_upstream_prompt
from guardreasoner.results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL
from guardreasoner.template import training_prompt

from .args import DATASET_HELP, modern_flags

# The paper's order: prompt harmfulness, response harmfulness, refusal.
TASK_ORDER = (PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL)


@dataclass
class MiningConfig:
    models: list[str] = field(metadata={"help": "the R-SFT model, or several whose samples are pooled"})
    dataset_name: str = field(metadata={"help": "GuardReasonerTrain rows: " + DATASET_HELP})
    output: str = "pairs.jsonl"
    backend: str = "auto"
    k: int = 4
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 2048
    max_input_tokens: int = field(default=4096, metadata={"help": "longer rows lose the middle of their texts "
                                                          "(the guard's template truncation), as at inference"})
    pairing: str = field(default="longest", metadata={"help": "longest (the paper) or length_matched"})
    weight_min: float = 0.8
    weight_max: float = 1.2
    max_rows: int | None = None
    chunk_rows: int = field(default=256, metadata={"help": "rows sampled between two appends to the samples file"})
    batch_size: int = field(default=16, metadata={"help": "prompts a transformers batch generates together"})
    seed: int = 0


def gold_labels(row: dict) -> dict[str, str | None]:
    """The row's own verdicts, read from the Answers block of its reference output."""
    return parse(row["output"]).labels


def deciding_task(gold: dict, has_reply: bool, samples_correct: dict[str, list[bool]]) -> str | None:
    """The first task, in the paper's order, on which the samples are mixed right and wrong."""
    for task in TASK_ORDER:
        if task != PROMPT_HARMFULNESS and (not has_reply or gold.get(task) is None):
            continue
        if gold.get(task) is None:
            continue
        flags = samples_correct[task]
        if any(flags) and not all(flags):
            return task
    return None


def choose_pair(samples: list[str], correct: list[bool], pairing: str = "longest") -> tuple[str, str]:
    right = [s for s, ok in zip(samples, correct) if ok]
    wrong = [s for s, ok in zip(samples, correct) if not ok]
    if pairing == "longest":
        return max(right, key=len), max(wrong, key=len)
    if pairing == "length_matched":
        # The closest lengths, so that DPO cannot learn "longer is better" from the pairs.
        return min(((c, r) for c in right for r in wrong), key=lambda pair: abs(len(pair[0]) - len(pair[1])))
    raise ValueError(f"unknown pairing {pairing!r}; choose longest or length_matched")


def mine_row(row: dict, samples: list[str], pairing: str = "longest", prompt: str | None = None) -> dict | None:
    """A pair for one row, or None when the row is not hard; ``prompt``: what the model read, if it was cut."""
    gold = gold_labels(row)
    request, reply = split_upstream_prompt(row["input"])
    parsed = [parse_for(s, request, reply) for s in samples]
    correct = {task: [p.labels[task] == gold.get(task) for p in parsed] for task in TASK_ORDER}
    task = deciding_task(gold, reply is not None, correct)
    if task is None:
        return None
    chosen, rejected = choose_pair(samples, correct[task], pairing)
    right = sum(correct[task])
    return {
        "prompt": prompt or training_prompt(row),
        "chosen": chosen,
        "rejected": rejected,
        "task": task,
        "n_correct": right,
        "n_wrong": len(samples) - right,
        "source": row.get("source", "train"),
    }


def scale_weights(pairs: list[dict], low: float = 0.8, high: float = 1.2) -> list[dict]:
    """weight = #wrong - #correct, min-max scaled to [low, high] within each source (the middle if all equal)."""
    by_source: dict[str, list[dict]] = {}
    for pair in pairs:
        by_source.setdefault(pair["source"], []).append(pair)
    for group in by_source.values():
        raw = [p["n_wrong"] - p["n_correct"] for p in group]
        lo, hi = min(raw), max(raw)
        for pair, value in zip(group, raw):
            pair["weight"] = (low + high) / 2 if hi == lo else low + (high - low) * (value - lo) / (hi - lo)
    return pairs


def _digest(row: dict) -> str:
    return hashlib.sha1(training_prompt(row).encode()).hexdigest()


def model_input(guard, row: dict) -> str:
    """What the model reads for a row: its own prompt, or the guard's template truncation when it is over the
    guard's input budget (an untruncated long row would not fit the engine's context)."""
    request, reply = split_upstream_prompt(row["input"])
    built = guard.build(request, reply)
    return built.text if built.truncated else training_prompt(row)


def sample(config: MiningConfig, rows: list[dict], inputs: dict[int, str] | None = None) -> list[list[str]]:
    """k samples per row from each model, pooled per row; resumes from the samples file. ``inputs`` receives
    each row's model input where truncation changed it (the pair's prompt must be what the model read).

    Resuming never needs the engine to repeat itself: rows on file are kept as written, the rest are sampled
    (vLLM does not promise equal texts for equal seeds across different batches)."""
    from tqdm.auto import tqdm

    from guardreasoner import load_guard
    from guardreasoner.backends.base import SamplingConfig
    from guardreasoner.rows import append_lines, read_jsonl, trim_partial_line

    path = Path(config.output + ".samples.jsonl")
    trim_partial_line(path)
    done: dict[tuple[int, str], list[str]] = {}
    if path.exists():
        for record in read_jsonl(path):
            index = record["row"]
            if index < len(rows) and record["prompt_sha1"] == _digest(rows[index]):  # the same dataset
                done[index, record["model"]] = record["samples"]
                if record.get("model_input") and inputs is not None:
                    inputs.setdefault(index, record["model_input"])
    # Samples are appended through the core's synced writer, one chunk at a time.
    for model in config.models:
        todo = [index for index in range(len(rows)) if (index, model) not in done]
        if not todo:
            continue
        guard = load_guard(model, config.backend, fail_closed=False, batch_size=config.batch_size,
                           max_input_tokens=config.max_input_tokens, max_new_tokens=config.max_new_tokens)
        for start in tqdm(range(0, len(todo), config.chunk_rows), desc=f"sampling {model}"):
            chunk = todo[start : start + config.chunk_rows]
            # A seed per chunk: reproducible where the backend is (transformers), distinct per chunk anyway.
            sampling = SamplingConfig(config.max_new_tokens, config.temperature, config.top_p, top_logprobs=0,
                                      seed=config.seed + chunk[0])
            texts = {index: model_input(guard, rows[index]) for index in chunk}
            prompts = [texts[index] for index in chunk for _ in range(config.k)]
            outputs = [g.text for g in guard.backend.generate(prompts, sampling)]
            records = []
            for position, index in enumerate(chunk):
                samples = outputs[position * config.k : (position + 1) * config.k]
                done[index, model] = samples
                record = {"row": index, "model": model, "prompt_sha1": _digest(rows[index]), "samples": samples}
                if texts[index] != training_prompt(rows[index]):
                    record["model_input"] = texts[index]
                    if inputs is not None:
                        inputs.setdefault(index, texts[index])
                records.append(json.dumps(record, ensure_ascii=False))
            append_lines(path, records)  # synced: an interruption loses at most the chunk in flight
        guard.close()
    return [[text for model in config.models for text in done[index, model]] for index in range(len(rows))]


def mine(config: MiningConfig, rows: list[dict] | None = None) -> list[dict]:
    from .data import load_rows

    rows = rows if rows is not None else load_rows(config.dataset_name)[: config.max_rows]
    inputs: dict[int, str] = {}
    pooled = sample(config, rows, inputs)
    pairs = [pair for index, (row, samples) in enumerate(zip(rows, pooled))
             if (pair := mine_row(row, samples, config.pairing, inputs.get(index))) is not None]
    scale_weights(pairs, config.weight_min, config.weight_max)
    Path(config.output).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    return pairs


def main(argv: list[str] | None = None) -> list[dict]:
    from transformers import HfArgumentParser

    (config,) = HfArgumentParser(MiningConfig).parse_args_into_dataclasses(modern_flags(argv))
    pairs = mine(config)
    print(f"{len(pairs)} hard pairs written to {config.output}")
    return pairs


if __name__ == "__main__":
    main()
