"""GuardReasonerTrain rows (``instruction``, ``input``, ``output``) from the hub or local files, tokenized for
TRL in the same prompt mode, and the same way, as the guard at inference."""

from __future__ import annotations

import json
from pathlib import Path

from guardreasoner.parser import strip_leaks
from guardreasoner.rows import read_jsonl

HUB_DATASET = "yueliu1999/GuardReasonerTrain"
HUB_SPLITS = ("WildGuardTrainR", "AegisTrainR", "BeaverTailsTrainR", "ToxicChatTrainR")


def load_rows(source: str = HUB_DATASET, splits: list[str] | None = None) -> list[dict]:
    """Rows from a hub dataset id, or a local .json (a list, or {split: list} like the shared sample) or .jsonl."""
    path = Path(source)
    if path.is_file():
        if path.suffix == ".jsonl":
            data = read_jsonl(path)
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = [dict(row, source=split) for split, rows in data.items() for row in rows]
    else:
        from datasets import load_dataset

        loaded = load_dataset(source)
        data = [dict(row, source=split) for split in (splits or list(loaded)) for row in loaded[split]]
    if splits:  # also selects by each row's own "source" (synthesized .jsonl files carry one)
        data = [row for row in data if row.get("source") in splits]
    for number, row in enumerate(data, start=1):
        missing = {"instruction", "input", "output"} - set(row)
        if missing:
            raise ValueError(f"{source}: row {number} lacks {sorted(missing)}")
    return data


def write_stats(output: str | Path, stats: dict) -> None:
    """A data stage's counts beside its output, as ``<output>.stats.json``."""
    Path(str(output) + ".stats.json").write_text(json.dumps(stats, indent=2) + "\n")


def tokenize_example(row: dict, tokenizer, mode: str = "raw") -> dict:
    """Token ids and completion mask, the prompt tokenized alone exactly as the guard tokenizes it at inference.

    TRL tokenizes prompt + completion as one text, where "...\\n\\n" + "# Task 1" can merge across the boundary:
    the model would then learn its first token in a context inference never produces."""
    from guardreasoner.template import render, training_prompt

    prompt = training_prompt(row)
    if mode == "raw":
        prompt_ids = tokenizer(prompt)["input_ids"]  # with the tokenizer's own special tokens, as at inference
    else:
        prompt_ids = tokenizer(render(prompt, "chat", tokenizer), add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(strip_leaks(row["output"]), add_special_tokens=False)["input_ids"]
    completion_ids = completion_ids + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + completion_ids,
            "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids)}
