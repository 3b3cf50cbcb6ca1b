"""Make the committed benchmark split, and export a part of it as labelled training rows.

    python -m eval.split make --data-dir ../shared/benchmarks/guardreasoner          # writes assets/splits/
    python -m eval.split export --data-dir ../shared/benchmarks/guardreasoner --part fit --out fit.jsonl

The split is stratified by the row's full label tuple (WildGuardTest: prompt, response, refusal labels together),
so each half has the same label mix; within a stratum the rows are shuffled with ``--seed`` and alternate between
the halves, and a seeded fifth of the training half (stratified the same way) becomes the validation part.
``export`` writes GuardReasonerTrain-format rows whose ``output`` is an Answers block of the gold labels (None for
a verdict the benchmark does not label): the labels a screen learns from, never the test half unless asked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import defaultdict
from pathlib import Path

from guardreasoner.records import training_row
from guardreasoner.results import VERDICT_KEYS, answers_block
from guardreasoner.rows import write_jsonl
from stagekit.splits import PARTS, SPLIT_BENCHMARKS, SPLITS_DIR, UNSEEN_BENCHMARKS, load_split, split_path

from .data import EvalRow, load_benchmark
from .registry import BENCHMARKS

METHOD = ("stratified by the label tuple; per stratum the indices are shuffled with random.Random(seed) and dealt "
          "alternately to train and test (train first); validation = a seeded fifth of train, dealt the same way")
VALIDATION_SHARE = 0.2


def _strata(rows: list[EvalRow]) -> dict[tuple, list[int]]:
    strata: dict[tuple, list[int]] = defaultdict(list)
    for row in rows:
        strata[tuple(row.labels.values())].append(row.index)
    return dict(sorted(strata.items(), key=lambda item: str(item[0])))


def stratified_halves(rows: list[EvalRow], seed: int) -> dict:
    rng = random.Random(seed)
    train, test, validation = [], [], []
    for indices in _strata(rows).values():
        shuffled = list(indices)
        rng.shuffle(shuffled)
        half = shuffled[0::2]
        train += half
        test += shuffled[1::2]
        validation += half[: round(len(half) * VALIDATION_SHARE)]  # already shuffled: its first fifth
    return {"train": sorted(train), "validation": sorted(validation), "test": sorted(test)}


def make_split(benchmark: str, data_dir: Path, seed: int) -> dict:
    rows = load_benchmark(benchmark, data_dir)
    path = data_dir / BENCHMARKS[benchmark].file
    strata = _strata(rows)
    return {
        "benchmark": benchmark,
        "file": path.name,
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "rows": len(rows),
        "seed": seed,
        "method": METHOD,
        "label_order": list(rows[0].labels),
        "strata": {" / ".join(str(label) for label in key): len(indices) for key, indices in strata.items()},
        **stratified_halves(rows, seed),
    }


def held_out_pairs(data_dir: Path, folder: Path | None = None) -> set[tuple[str, str | None]]:
    """Every (prompt, response) that some score is read from: each split benchmark's test half and the whole of the
    unseen benchmarks. Benchmarks share rows (the two XSTest files hold the same pairs, ToxicChat repeats prompts),
    so a row of one file's training half can be a row of another's test half."""
    pairs = set()
    for benchmark in SPLIT_BENCHMARKS + UNSEEN_BENCHMARKS:
        rows = load_benchmark(benchmark, data_dir)
        indices = load_split(benchmark, folder).test if benchmark in SPLIT_BENCHMARKS else range(len(rows))
        pairs |= {(rows[index].prompt, rows[index].response) for index in indices}
    return pairs


def export_rows(benchmarks: list[str], data_dir: Path, part: str, folder: Path | None = None,
                form: str = "train", dropped: list | None = None) -> list[dict]:
    """One split part's rows: GuardReasonerTrain format (``train``: labelled by an Answers block of the gold labels,
    what heads and R-SFT read) or synthesis seeds (``seeds``: ``prompt``/``response`` and one column per gold
    verdict key, what ``training.synthesize --seeds`` reads). A training part (train, fit, validation) leaves out
    rows that are also held-out rows (``held_out_pairs``); their ids go to ``dropped`` when given."""
    out = []
    held_out = held_out_pairs(data_dir, folder) if part != "test" else set()
    for benchmark in benchmarks:
        split = load_split(benchmark, folder)
        rows = load_benchmark(benchmark, data_dir)
        if len(rows) != split.rows:
            raise ValueError(f"{benchmark}: the split is of a {split.rows}-row file; {data_dir} has {len(rows)} rows")
        for index in split.part(part):
            row = rows[index]
            if (row.prompt, row.response) in held_out:
                if dropped is not None:
                    dropped.append(f"{benchmark}/{index}")
                continue
            if form == "seeds":
                out.append({"id": f"{benchmark}/{index}", "source": benchmark, "prompt": row.prompt,
                            "response": row.response,
                            **{key: label for key, label in row.labels.items() if label is not None}})
                continue
            out.append(training_row(row.prompt, row.response,
                                    answers_block({key: row.labels.get(key) for key in VERDICT_KEYS}),
                                    source=f"{benchmark}/{part}", id=f"{benchmark}/{index}"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.split", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="write assets/splits/<Benchmark>.json")
    make.add_argument("--data-dir", required=True)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--out", default=str(SPLITS_DIR))
    export = commands.add_parser("export", help="one part of the split as GuardReasonerTrain-format JSONL")
    export.add_argument("--data-dir", required=True)
    export.add_argument("--part", choices=PARTS, required=True)
    export.add_argument("--benchmarks", nargs="+", choices=SPLIT_BENCHMARKS, default=list(SPLIT_BENCHMARKS),
                        help="default: every split benchmark (before #31: ToxicChat, WildGuardTest, BeaverTails)")
    export.add_argument("--format", choices=("train", "seeds"), default="train",
                        help="train: GuardReasonerTrain rows with gold Answers; seeds: rows for training.synthesize")
    export.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "make":
        for benchmark in SPLIT_BENCHMARKS:
            split = make_split(benchmark, Path(args.data_dir), args.seed)
            path = split_path(benchmark, args.out)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(split) + "\n", encoding="utf-8")
            print(f"{path}: train {len(split['train'])} (validation {len(split['validation'])}), "
                  f"test {len(split['test'])}")
    else:
        dropped: list[str] = []
        rows = export_rows(args.benchmarks, Path(args.data_dir), args.part, form=args.format, dropped=dropped)
        write_jsonl(rows, args.out)
        print(f"{args.out}: {len(rows)} rows" + (f" ({len(dropped)} left out: also held-out rows of some "
                                                 "benchmark's test half or of an unseen benchmark)" if dropped else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
