"""A seeded, label-balanced subset of training rows that fits a compute budget.

    python -m training.subset --dataset_name runs/embedded/train-all.jsonl --output runs/embedded/train.jsonl \\
        --tokenizer smollm2 --per_cell 30 --max_tokens 768 --max_output_tokens 320

One epoch of the 3,975 rows ``training.from_predictions`` writes for the embedded guard is 2.5M tokens: about 9
hours of LoRA R-SFT on a 2-core CPU. This keeps what such a budget can afford without losing a task or a label:
rows are grouped into cells by benchmark and gold answers, and each cell gives at most ``per_cell`` rows. Rows
that do not fit ``max_tokens`` are left out rather than truncated (truncation would cut the Answers block, the
part the model most needs), unless ``--cut_long_inputs``: then a row whose trace fits keeps it whole and its input
loses its middle exactly as the guard cuts an over-long input at inference (``build_prompt``), so long harmful
replies are learnt from rather than dropped. One trace per input is kept so the budget is not spent twice on the
same request.
Short traces also make the trained model answer sooner, which is what a CPU guard is for; the model card says so.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from guardreasoner.parser import parse, split_upstream_prompt
from guardreasoner.rows import read_jsonl, write_jsonl
from guardreasoner.template import build_prompt, format_input, training_prompt, user_turn

from .args import DATASET_HELP, modern_flags
from .data import load_rows, write_stats


@dataclass
class SubsetConfig:
    dataset_name: str = field(metadata={"help": "GuardReasonerTrain rows: " + DATASET_HELP})
    output: str = field(metadata={"help": "the subset, .jsonl; <output>.stats.json counts the cells"})
    tokenizer: str = field(default="smollm2", metadata={"help": "model name or folder whose tokenizer counts"})
    per_cell: int = 40
    max_tokens: int = 640
    max_output_tokens: int | None = None
    cut_long_inputs: bool = field(default=False, metadata={"help": "cut an over-long input's middle as the guard "
                                                                   "does, instead of leaving the row out"})
    well_formed_only: bool = field(default=False, metadata={
        "help": "leave out rows whose Answers block the synthesis judge calls malformed (traces kept by an older "
                "judge)"})
    exclude: list[str] = field(default_factory=list, metadata={
        "help": "files (.jsonl) whose rows' ids are left out: the seeds a synthesis already used, so hard samples "
                "are mined from rows the model has not trained on"})
    seed: int = 0

# Below this many tokens for the request and reply together, a cut input says too little to learn from.
MIN_CUT_INPUT_TOKENS = 128


# eval.split's rows name their source "<benchmark>/<part>"; released outputs "<model>/<benchmark>".
SPLIT_PARTS = {"train", "fit", "validation", "test"}


def cell_of(row: dict) -> str:
    parts = row.get("source", "").split("/")
    benchmark = parts[-2] if len(parts) > 1 and parts[-1] in SPLIT_PARTS else parts[-1]
    answers = parse(row["output"]).labels
    return benchmark + " " + ",".join(f"{key}={value}" for key, value in sorted(answers.items()) if value)


def cut_input(row: dict, max_input_tokens: int, tokenizer) -> dict | None:
    """The row with its input cut in the middle to ``max_input_tokens`` (instruction included), as the guard cuts
    one at inference; None when that leaves too little of the user's texts."""
    prompt, response = split_upstream_prompt(row["input"])
    overhead = len(tokenizer(user_turn("", "" if response else None), add_special_tokens=False)["input_ids"])
    if max_input_tokens - overhead < MIN_CUT_INPUT_TOKENS:
        return None
    try:
        cut = build_prompt(prompt, response, tokenizer=tokenizer, max_input_tokens=max_input_tokens)
    except ValueError:
        return None
    return {**row, "input": format_input(cut.prompt, cut.response), "input_cut": True}


def well_formed(row: dict) -> bool:
    from .synthesize import WELL_FORMED_ANSWERS

    return WELL_FORMED_ANSWERS.search(row["output"]) is not None


def choose(rows: list[dict], count_tokens: Callable[[str], int], *, per_cell: int, max_tokens: int,
           max_output_tokens: int | None = None, seed: int = 0,
           cut: Callable[[dict, int], dict | None] | None = None,
           accept: Callable[[dict], bool] | None = None) -> tuple[list[dict], dict[str, dict[str, int]]]:
    """The subset, and per cell how many rows there were, fit the budget (``cut``: of them, after their inputs
    were cut to fit), and were kept. ``cut(row, max_input_tokens)`` returns the row cut to fit, or None; a row
    ``accept`` refuses is counted as ``refused`` and left out."""
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    cells: dict[str, list[dict]] = defaultdict(list)
    counts: dict[str, dict[str, int]] = {}
    seen_inputs = set()
    for row in shuffled:
        cell = cell_of(row)
        tally = counts.setdefault(cell, {"rows": 0, "fit": 0, "kept": 0, **({"cut": 0} if cut else {})})
        tally["rows"] += 1
        if accept is not None and not accept(row):
            tally["refused"] = tally.get("refused", 0) + 1
            continue
        output_tokens = count_tokens(row["output"])
        if max_output_tokens is not None and output_tokens > max_output_tokens:
            continue
        if output_tokens + count_tokens(training_prompt(row)) > max_tokens:
            row = cut(row, max_tokens - output_tokens) if cut else None
            if row is None or output_tokens + count_tokens(training_prompt(row)) > max_tokens:
                continue
            tally["cut"] += 1
        tally["fit"] += 1
        if row["input"] in seen_inputs or len(cells[cell]) >= per_cell:
            continue
        seen_inputs.add(row["input"])
        cells[cell].append(row)
        tally["kept"] += 1
    kept = [row for cell_rows in cells.values() for row in cell_rows]
    random.Random(seed + 1).shuffle(kept)  # cells interleaved, so no stretch of training sees one label
    return kept, dict(sorted(counts.items()))


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoTokenizer, HfArgumentParser

    from guardreasoner.models import model_folder, resolve_model

    (config,) = HfArgumentParser(SubsetConfig).parse_args_into_dataclasses(modern_flags(argv))
    tokenizer = AutoTokenizer.from_pretrained(model_folder(resolve_model(config.tokenizer)))
    rows = load_rows(config.dataset_name)
    excluded = {row["id"] for path in config.exclude for row in read_jsonl(path) if "id" in row}
    before = len(rows)
    rows = [row for row in rows if row.get("id") not in excluded]
    kept, counts = choose(rows, lambda text: len(tokenizer(text)["input_ids"]), per_cell=config.per_cell,
                          max_tokens=config.max_tokens, max_output_tokens=config.max_output_tokens,
                          seed=config.seed,
                          cut=(lambda row, room: cut_input(row, room, tokenizer)) if config.cut_long_inputs else None,
                          accept=well_formed if config.well_formed_only else None)
    write_jsonl(kept, config.output)
    stats = {"rows": before, "excluded": before - len(rows), "kept": len(kept), "config": vars(config),
             "by_cell": counts}
    write_stats(config.output, stats)
    print(json.dumps({"rows": before, "excluded": before - len(rows), "kept": len(kept)}))
    return stats


if __name__ == "__main__":
    main()
