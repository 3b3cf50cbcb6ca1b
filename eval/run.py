"""Generate one output per benchmark row (all three verdicts at once) into upstream's run-folder format.

Each benchmark gets ``RUN/<Benchmark>/generated_predictions.jsonl`` in the core's prediction format
(``guardreasoner.predictions``). Rows are appended per batch and synced, so an interrupted run loses at most the
batch in flight and resumes after the rows already written.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm.auto import tqdm

from guardreasoner.backends.base import Generation
from guardreasoner.cascade import SCREEN_FLAG
from guardreasoner.predictions import PREDICTIONS_FILE, Prediction, append_predictions, iter_predictions
from guardreasoner.results import answers_block
from guardreasoner.rows import done_lines, seeded_sample
from stagekit.splits import UNSEEN_BENCHMARKS, load_split

from .data import EvalRow, load_benchmark


def _predict(result) -> str:
    """What the scorer reads: the model's output, or, where a screen decided some verdicts (reasoning off or
    auto), an Answers block of the final verdicts (the reasoning, if any ran, is kept beside it)."""
    if SCREEN_FLAG not in result.flags:
        return result.output
    return answers_block({key: verdict.label for key, verdict in result.verdicts.items()})


def _record(guard, row: EvalRow, result) -> Prediction:
    record = Prediction.of_result(row.index, row.prompt, row.response, row.labels, _predict(result), result,
                                  model_input=guard.model_input(row.prompt, row.response))
    if SCREEN_FLAG in result.flags:  # "predict" holds the final Answers block: the reasoning (if it ran) is kept
        record.reasoning_output = result.output
    return record


def split_part(rows: list[EvalRow], benchmark: str, part: str | None) -> list[EvalRow]:
    """The rows of one part (train/fit/validation/test) of the committed split; a benchmark that is never
    split (OpenAIModeration, SafeRLHF) is held out whole, so its test part is all of it."""
    if part is None:
        return rows
    if benchmark in UNSEEN_BENCHMARKS and part == "test":
        return rows
    split = load_split(benchmark)
    if split.rows != len(rows):
        raise ValueError(f"{benchmark}: the split is of a {split.rows}-row file; this one has {len(rows)} rows")
    chosen = set(split.part(part))
    return [row for row in rows if row.index in chosen]


def reusable_records(guard, benchmark: str, rows: list[EvalRow], folders: list[Path]) -> dict[int, Prediction]:
    """Records of ``rows`` already made in other run folders (``--reuse``: the same model and settings on an
    overlapping sample, e.g. an earlier, smaller ``--sample``), each checked to have read exactly the input this
    guard builds for its row; the first folder holding a row wins."""
    wanted = {row.index: guard.model_input(row.prompt, row.response) for row in rows}
    found: dict[int, Prediction] = {}
    for folder in folders:
        path = Path(folder) / benchmark / PREDICTIONS_FILE
        if not path.is_file():
            continue
        for record in iter_predictions(path, benchmark):
            if record.index not in wanted or record.index in found:
                continue
            if record.model_input != wanted[record.index]:
                raise ValueError(f"{path}: line {record.line + 1} (row {record.index}) was generated from another "
                                 "input than this guard builds for it: reuse only runs of the same model and settings")
            found[record.index] = record
    return found


def reasoned_alone(record: Prediction) -> bool:
    """Whether the reasoning guard made the whole record (no screen decided a verdict): its ``predict`` is the
    model's output, and the record is what a ``full`` run writes."""
    return record.reasoning_output is None and "screen" not in (record.decided_by or {}).values()


def recorded_generation(record: Prediction) -> Generation | None:
    """The reasoning model's output kept in a record, or None where the screen decided every verdict."""
    text = record.predict if reasoned_alone(record) else record.reasoning_output
    if not text:
        return None
    return Generation(text=text, prompt_tokens=record.input_tokens or 0, completion_tokens=record.output_tokens or 0,
                      latency_s=record.latency_s or 0.0, finish_reason=record.finish_reason)


class Replay:
    """The guard's backend, answering the inputs another run already reasoned on with that run's output (the
    reasoning model decodes greedily, so it would write the same) and the rest with the real backend: a run in
    another reasoning mode (auto over a full run's rows) sends the screen's new calls through the same guard
    code without generating again."""

    def __init__(self, backend, generations: dict[str, Generation]):
        self.backend, self.generations, self.replayed = backend, generations, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def generate(self, prompts: list[str], sampling, on_progress=None) -> list[Generation]:
        kept = [self.generations.get(self.backend.render(prompt)) for prompt in prompts]
        fresh = [position for position, generation in enumerate(kept) if generation is None]
        made = self.backend.generate([prompts[p] for p in fresh], sampling, on_progress) if fresh else []
        for position, generation in zip(fresh, made):
            kept[position] = generation
        self.replayed += len(prompts) - len(fresh)
        return kept


def run_benchmark(guard, benchmark: str, data_dir: Path | None, out: Path, *, limit: int | None = None,
                  batch_size: int = 32, sample: int | None = None, seed: int = 0, part: str | None = None,
                  reuse: list[Path] | None = None) -> int:
    """Generate the rows of one benchmark that are not yet in ``out`` (copying those found in ``reuse``
    folders); returns how many were generated."""
    rows = split_part(load_benchmark(benchmark, data_dir), benchmark, part)[:limit]
    if sample is not None:
        rows = seeded_sample(rows, sample, seed)  # the same rows for every model evaluated with the same seed
    path = out / benchmark / PREDICTIONS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    done = done_lines(path, key="index")
    todo = [row for row in rows if row.index not in done]
    replay: dict[str, Generation] = {}
    if reuse and todo:
        found = reusable_records(guard, benchmark, todo, reuse)
        # A whole record is copied only into a run that would have made it (full, from a record the reasoning
        # guard made alone); otherwise its reasoning is replayed and the screen decides anew.
        copied = [found.pop(row.index) for row in todo
                  if guard.reasoning == "full" and row.index in found and reasoned_alone(found[row.index])]
        if copied:
            append_predictions(path, copied)
        done |= {record.index for record in copied}
        todo = [row for row in todo if row.index not in done]
        replay = {record.model_input: generation for record in found.values()
                  if (generation := recorded_generation(record)) is not None}
    if not todo:
        return 0
    replaying = Replay(guard.backend, replay)
    replayer = guard.with_backend(replaying)  # the caller's guard is left as it is
    with tqdm(total=len(rows), initial=len(rows) - len(todo), desc=benchmark, unit="row") as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            results = replayer.classify([{"prompt": row.prompt, "response": row.response} for row in chunk])
            append_predictions(path, [_record(guard, row, result) for row, result in zip(chunk, results)])
            bar.update(len(chunk))
    replayed = replaying.replayed
    if replayed:
        print(f"{benchmark}: reasoning of {replayed} rows replayed from {', '.join(map(str, reuse))}",
              file=sys.stderr)
    return len(todo)
