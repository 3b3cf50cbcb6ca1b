"""Training rows from a model's benchmark outputs: an output becomes a GuardReasonerTrain row only when every
verdict the benchmark labels, as the core parser reads it, equals the gold label.

    python -m training.from_predictions --runs ../shared/predictions/GuardReasoner-1B \\
        ../shared/predictions/GuardReasoner-8B --extra ../shared/traces/guardreasonertrain_sample.json \\
        --output runs/embedded/train.jsonl

Each row keeps ``source`` (model/benchmark) and ``id``; ``<output>.stats.json`` counts kept and dropped rows
per source. Leaked "The ground truth is ..." text is cut; outputs that echo the input, repeat themselves,
contradict their own answers or have no Answers block are dropped: a model trained on them would learn the
failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from guardreasoner.parser import strip_leaks
from guardreasoner.predictions import read_run
from guardreasoner.records import training_row
from guardreasoner.rows import write_jsonl

from .data import load_rows, write_stats

# Not reply_verdict_without_reply: the released models write "Completion: refusal / Response: unharmful" for a
# prompt-only input in 380 of their 4,390 outputs (AegisSafetyTest, HarmBenchPrompt, SimpleSafetyTests, nearly all
# harmful requests); dropping them would cost a tenth of the rows, most of one label. The core sets the reply
# verdicts of a prompt-only input to None whatever the model writes, so they are kept.
BAD_FLAGS = {"echo", "repetition", "inconsistent_answers", "no_answers_block"}


@dataclass
class FromPredictionsConfig:
    runs: list[str] = field(metadata={"help": "run folders of generated_predictions.jsonl files"})
    output: str = "train.jsonl"
    extra: list[str] = field(default_factory=list, metadata={
        "help": "GuardReasonerTrain files (.json/.jsonl) appended as they are, e.g. ../shared/traces/*.json"})


def rows_from_run(run: str | Path) -> tuple[list[dict], dict[str, dict[str, int]]]:
    model = Path(run).name
    kept, counts = [], {}
    for row in read_run(run):
        source = f"{model}/{row.benchmark}"
        tally = counts.setdefault(source, {"kept": 0, "wrong": 0, "malformed": 0})
        output = strip_leaks(row.output).strip()  # "The ground truth is ..." the 8B model sometimes writes
        parsed = row.parsed(output)
        if BAD_FLAGS & set(parsed.flags):
            tally["malformed"] += 1
        elif not row.gold or any(parsed.labels.get(key) != gold for key, gold in row.gold.items()):
            tally["wrong"] += 1
        else:
            tally["kept"] += 1
            kept.append(training_row(row.prompt, row.response, output, source=source, id=f"{source}/{row.line}"))
    return kept, counts


def main(argv: list[str] | None = None) -> dict:
    from transformers import HfArgumentParser

    (config,) = HfArgumentParser(FromPredictionsConfig).parse_args_into_dataclasses(argv)
    rows, counts = [], {}
    for run in config.runs:
        run_rows, run_counts = rows_from_run(run)
        rows += run_rows
        counts.update(run_counts)
    for extra in config.extra:  # already GuardReasonerTrain rows, so nothing to check against a gold label
        extra_rows = load_rows(extra)
        rows += extra_rows
        counts[extra] = {"kept": len(extra_rows), "wrong": 0, "malformed": 0}
    write_jsonl(rows, config.output)
    stats = {"rows": len(rows), "by_source": counts}
    write_stats(config.output, stats)
    print(json.dumps({"rows": len(rows), "kept": sum(c["kept"] for c in counts.values()),
                      "wrong": sum(c["wrong"] for c in counts.values()),
                      "malformed": sum(c["malformed"] for c in counts.values())}))
    return stats


if __name__ == "__main__":
    main()
