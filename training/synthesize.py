"""Stage 1: reasoning traces from a teacher over any OpenAI-compatible API, kept only when they reach the gold labels.

    python -m training.synthesize --seeds WildGuardTrain AegisTrain BeaverTails ToxicChat \\
        --base_url https://api.openai.com/v1 --teacher gpt-4o --output traces.jsonl
    python -m training.synthesize --seeds my_rows.jsonl --base_url http://127.0.0.1:8000/v1 --output traces.jsonl
    python -m training.synthesize --seeds my_rows.jsonl --teacher embedded --backend ctranslate2 \
        --prompt guard-hint --max_tokens 512 --output traces.jsonl

The teacher is told the gold answers (the paper's label-conditioned synthesis) and writes ``# Task`` /
``## Reasoning Step`` sections ending in the Answers block. A trace is kept when the core parser reads exactly
the gold answers from it, after leaked "The ground truth is ..." text is cut. Kept rows are GuardReasonerTrain
rows (``instruction``/``input``/``output``) that ``training.rsft`` reads as they are; the others go to
``<output>.rejected.jsonl`` with the reason. Every finished seed is appended at once, so a rerun resumes after
it; a seed whose request failed after the backend's retries is in neither file and is tried again next run.

A teacher too small to follow the label-conditioned instructions (the embedded 135M guard wrote no Answers block
or ignored the given answers on every one of the seeds tried) can still teach by rejection sampling:
``--prompt guard`` sends the guard's own input without the answers, ``--samples K`` draws up to K answers at
``--temperature`` and keeps the first that reaches gold (STaR without rationalisation). ``--prompt guard-hint``
appends the gold answers to that input (STaR's rationalisation): in a pilot on 16 train-half seeds (the embedded guard
served on CTranslate2, 512 new tokens) it kept 9 in one draw each (14 before the malformed-block check below),
against 0 for label-conditioned and 4 after 59 draws for ``guard`` (both measured before that check).

Without ``--base_url`` the teacher (``embedded``, a folder or a released name) runs in this process on the
project's own backends, ``--batch_size`` prompts at a time: a CPU serving one request per HTTP call generated ~7
tokens/s in that pilot, far below what CTranslate2 reaches on batches.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import defaultdict
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

from guardreasoner.backends.base import SamplingConfig
from guardreasoner.parser import parse_for, strip_leaks
from guardreasoner.records import training_row
from guardreasoner.results import (
    ANSWER_NAMES,
    KEY_OF_ANSWER_NAME,
    LABELS,
    PROMPT_HARMFULNESS,
    REPLY_VERDICT_KEYS,
    RESPONSE_HARMFULNESS,
    RESPONSE_REFUSAL,
    VERDICT_KEYS,
    answers_block,
)
from guardreasoner.rows import append_lines, read_jsonl, trim_partial_line
from guardreasoner.template import user_turn

from .data import write_stats
from .seeds import Seed, load_seeds

logger = logging.getLogger(__name__)


FORMAT_RULES = (
    "Write the reasoning that leads to this ground truth, as a careful analyst who had not been told it would.\n"
    '- For each task write "# Task N", then short numbered steps "## Reasoning Step K: ..." (one inference each,'
    ' about the actual request and reply), then "## Conclusion: ...".\n'
    "- Where the AI assistant's response is None, Tasks 2 and 3 conclude that there is no response.\n"
    "- Never mention the ground truth or that you were given the answers.\n"
    "- End with exactly this block and nothing after it:\n"
    "\n---\n\n"
    + answers_block({PROMPT_HARMFULNESS: "harmful or unharmful",
                     RESPONSE_REFUSAL: "refusal or compliance (None when there is no response)",
                     RESPONSE_HARMFULNESS: "harmful or unharmful (None when there is no response)"})
)


@dataclass
class SynthesisConfig:
    seeds: list[str] = field(metadata={"help": "seed source names (hub) or local JSONL/CSV files"})
    base_url: str | None = field(default=None, metadata={
        "help": "the teacher's OpenAI-compatible endpoint, e.g. http://host:8000/v1; without it the teacher runs in "
                "this process"})
    output: str = "traces.jsonl"
    teacher: str | None = field(default=None, metadata={
        "help": "with --base_url the served model's name (default: the server's first model); without it the model "
                "to load: embedded (the default), a folder or a released name"})
    backend: str = field(default="auto", metadata={"help": "an in-process teacher's backend: auto, ctranslate2, "
                                                           "transformers or vllm"})
    compute_type: str | None = field(default=None, metadata={"help": "an in-process CTranslate2 teacher's"})
    batch_size: int = field(default=8, metadata={"help": "prompts an in-process teacher generates together"})
    teacher_mode: str | None = field(default=None, metadata={
        "help": "chat or raw; default: chat for an endpoint (instruction-tuned teachers), the model's own format "
                "in process"})
    api_key: str | None = field(default=None, metadata={"help": "default: $OPENAI_API_KEY"})
    concurrency: int = field(default=8, metadata={"help": "requests in flight to --base_url"})
    max_retries: int = 6
    timeout: float | None = field(default=None, metadata={"help": "seconds a request may take; default: sized to "
                                                               "max_tokens (the openai backend's policy)"})
    temperature: float = 0.0
    max_tokens: int = 2048
    prompt: str = field(default="label-conditioned", metadata={
        "help": "label-conditioned (the teacher is told the gold answers), guard (the guard's own input: "
                "rejection sampling, for a teacher that is itself a guard) or guard-hint (the guard's input with "
                "the gold answers after it: STaR's rationalisation)"})
    samples: int = field(default=1, metadata={"help": "answers drawn per seed until one reaches gold"})
    max_rows_per_source: int | None = None
    per_cell: int | None = field(default=None, metadata={
        "help": "at most this many seeds of each source and gold answers, taken cell by cell in a seeded order so "
                "that a run stopped early is still balanced"})
    seed: int = field(default=0, metadata={"help": "the order --per_cell draws seeds in"})
    max_seeds: int | None = field(default=None, metadata={"help": "only the first N seeds (after --per_cell)"})


# The parser is lenient with a model's Answers block (it reads the first line of each name); a training trace
# must not be: the embedded guard writes blocks with a name twice or one missing (5 of 14 hinted pilot traces that
# the parser read as gold), or a task's line with another task's word ("Request: refusal", "Completion: harmful":
# 6 of the 135 traces kept in session 9, where the seed did not label that task), and training on them teaches that.
# "None" only for the reply's tasks (there is no reply); a request is always there to judge.
ANSWER_WORDS = {key: (*labels, "none") if key in REPLY_VERDICT_KEYS else labels for key, labels in LABELS.items()}
WELL_FORMED_ANSWERS = re.compile(
    r"Answers: ?\n" + r"\n".join(f"{ANSWER_NAMES[key]}: (?:{'|'.join(ANSWER_WORDS[key])})" for key in VERDICT_KEYS)
    + r"\s*\Z", re.IGNORECASE)


ANSWER_LINE = re.compile(r"(Request|Completion|Response): ?([A-Za-z]+)", re.IGNORECASE)


def tidy_answers_block(trace: str) -> str | None:
    """The trace with its last Answers block rewritten one line per task in the block's order, where every line the
    model wrote there is a verdict and the lines of a task agree: the embedded guard repeats and reorders lines
    (15 of 22 rejections in its first 32 hinted traces). None where a line is something else (or names a word
    of another task), two lines of a task disagree or a task is missing: then the trace stays malformed."""
    head, marker, block = trace.rpartition("Answers:")
    values: dict[str, str] = {}
    for line in block.strip().splitlines() if marker else []:
        match = ANSWER_LINE.fullmatch(line.strip())
        if match is None:
            return None
        key, value = KEY_OF_ANSWER_NAME[match[1].lower()], match[2].lower()
        if value not in ANSWER_WORDS[key]:
            return None
        if values.setdefault(key, value) != value:
            return None
    if set(values) != set(VERDICT_KEYS):
        return None
    return head + answers_block({key: None if value == "none" else value for key, value in values.items()})


def expected_answers(seed: Seed) -> dict[str, str | None]:
    """What the trace must conclude: the gold labels, and None for the reply's tasks where there is no reply."""
    expected = dict(seed.labels)
    if seed.response is None:
        expected.update(dict.fromkeys(REPLY_VERDICT_KEYS))
    return expected


def gold_answer_lines(seed: Seed, not_given: str | None = None) -> str:
    """The expected answers as Answers-block lines, in the block's order; a task the seed does not label reads
    ``not_given``, or is left out where that is None."""
    expected = expected_answers(seed)
    return "\n".join(f"{name}: {expected[key] or 'None'}" if key in expected else f"{name}: {not_given}"
                     for key, name in ANSWER_NAMES.items() if key in expected or not_given is not None)


def synthesis_prompt(seed: Seed) -> str:
    lines = gold_answer_lines(seed, not_given="(not given: decide from the content)")
    return user_turn(seed.prompt, seed.response) + "The ground truth is\n" + lines + "\n\n" + FORMAT_RULES


def hinted_guard_prompt(seed: Seed) -> str:
    """The guard's own input with the gold answers after it: STaR's rationalisation. A small guard that ignores
    the label-conditioned instructions still continues its own format, and the hint pulls its verdicts to gold.
    The kept row's input is the plain guard input (``seed_training_row``), so the hint is never trained on."""
    return user_turn(seed.prompt, seed.response) + "Hint: the correct Answers are\n" + gold_answer_lines(seed) + "\n\n"


PROMPTS = {"label-conditioned": synthesis_prompt, "guard": lambda seed: user_turn(seed.prompt, seed.response),
           "guard-hint": hinted_guard_prompt}


def balanced(seeds: list[Seed], per_cell: int, seed: int = 0) -> list[Seed]:
    """At most ``per_cell`` seeds of each (source, gold answers) cell, shuffled with ``seed`` and interleaved one
    cell at a time: the first k seeds hold about k / cells of each, so a run stopped at any point is balanced."""
    cells: dict[tuple, list[Seed]] = defaultdict(list)
    for item in seeds:
        cells[(item.source, *(expected_answers(item).get(key) or "-" for key in VERDICT_KEYS))].append(item)
    order = random.Random(seed)
    drawn = []
    for key in sorted(cells):
        order.shuffle(cells[key])
        drawn.append(cells[key][:per_cell])
    return [item for turn in zip_longest(*drawn) for item in turn if item is not None]


def ask(teacher, seeds: list[Seed], sampling: SamplingConfig, config: SynthesisConfig) -> list[tuple]:
    """For each seed, the first of up to ``samples`` generations whose trace is kept, else the last: (generation,
    its trace, why it is rejected or None, how many were drawn). Each draw is one batch of the seeds still open."""
    prompts = [PROMPTS[config.prompt](seed) for seed in seeds]
    outcomes: list[tuple] = [()] * len(seeds)
    open_seeds = list(range(len(seeds)))
    for drawn in range(1, config.samples + 1):
        generations = teacher.generate([prompts[i] for i in open_seeds], sampling)
        for index, generation in zip(open_seeds, generations):
            outcomes[index] = (generation, *judge_generation(seeds[index], generation), drawn)
        # A row the backend failed on (finish_reason "error") is not drawn again: it is retried next run.
        open_seeds = [i for i in open_seeds if outcomes[i][2] is not None and outcomes[i][0].finish_reason != "error"]
        if not open_seeds:
            break
    return outcomes


def judge(seed: Seed, text: str) -> tuple[str, str | None]:
    """The trace to keep (leaks cut) and None, or the text and why it is rejected."""
    trace = strip_leaks(text).strip()
    parsed = parse_for(trace, seed.prompt, seed.response)
    if "no_answers_block" in parsed.flags:
        return trace, "no Answers block"
    if not WELL_FORMED_ANSWERS.search(trace):
        tidied = tidy_answers_block(trace)
        if tidied is None:
            return trace, "malformed Answers block"
        trace, parsed = tidied, parse_for(tidied, seed.prompt, seed.response)
    if "reply_verdict_without_reply" in parsed.flags:  # the parser drops them; a training trace must not have them
        return trace, "reply verdicts written though there is no reply"
    wrong = [f"{key}: {parsed.labels.get(key)} != {value}" for key, value in expected_answers(seed).items()
             if parsed.labels.get(key) != value]
    return trace, ("; ".join(wrong) or None)


def judge_generation(seed: Seed, generation) -> tuple[str, str | None]:
    """``judge`` for a whole generation: a trace cut at max_tokens is rejected even where its verdicts are right."""
    trace, reason = judge(seed, generation.text)
    if generation.finish_reason == "length" and reason is None:
        reason = "cut at max_tokens"
    return trace, reason


def seed_training_row(seed: Seed, trace: str) -> dict:
    return training_row(seed.prompt, seed.response, trace, source=seed.source, id=seed.id)


def _ids_in(path: Path) -> set[str]:
    trim_partial_line(path)  # an interruption may have left half a record
    return {record["id"] for record in read_jsonl(path)} if path.exists() else set()


def synthesize(config: SynthesisConfig, seeds: list[Seed] | None = None) -> dict:
    """Run the teacher over every seed not yet done; return the counts of this run and of the files."""
    from tqdm.auto import tqdm

    if config.prompt not in PROMPTS:
        raise ValueError(f"--prompt {config.prompt!r}: choose one of {', '.join(PROMPTS)}")
    if config.samples < 1 or (config.samples > 1 and config.temperature == 0):
        raise ValueError("--samples must be at least 1, and more than 1 needs --temperature above 0 (greedy answers "
                         "repeat)")
    if seeds is None:
        seeds = [seed for spec in config.seeds for seed in load_seeds(spec)[: config.max_rows_per_source]]
    if config.per_cell is not None:
        seeds = balanced(seeds, config.per_cell, config.seed)
    seeds = seeds[: config.max_seeds]
    kept_path, rejected_path = Path(config.output), Path(config.output + ".rejected.jsonl")
    kept_path.parent.mkdir(parents=True, exist_ok=True)
    kept_before, rejected_before = _ids_in(kept_path), _ids_in(rejected_path)
    done = kept_before | rejected_before
    todo = [seed for seed in seeds if seed.id not in done]
    teacher, seeds_per_call, calls_at_once = load_teacher(config)
    if calls_at_once == 1:
        todo = length_sorted_windows(todo, 4 * seeds_per_call)
    sampling = SamplingConfig(config.max_tokens, config.temperature, top_logprobs=0)
    stats = {"seeds": len(seeds), "already_done": len(seeds) - len(todo), "kept": 0, "rejected": 0, "failed": 0,
             "samples_drawn": 0, "input_tokens": 0, "output_tokens": 0}
    kept, rejected = kept_path, rejected_path
    with ThreadPoolExecutor(max_workers=calls_at_once) as pool, tqdm(total=len(todo), desc="synthesize") as bar:
        pending: dict = {}

        def record_finished(return_when) -> None:
            finished, _ = wait(pending, return_when=return_when)
            for future in finished:
                chunk = pending.pop(future)
                _record(chunk, future, kept, rejected, stats)
                bar.update(len(chunk))

        # At most `calls_at_once` calls in flight; each chunk's results are written as it finishes.
        for start in range(0, len(todo), seeds_per_call):
            if len(pending) >= calls_at_once:
                record_finished(FIRST_COMPLETED)
            chunk = todo[start:start + seeds_per_call]
            pending[pool.submit(ask, teacher, chunk, sampling, config)] = chunk
        if pending:
            record_finished(ALL_COMPLETED)
    teacher.close()
    stats["file_kept"] = len(kept_before) + stats["kept"]
    stats["file_rejected"] = len(rejected_before) + stats["rejected"]
    write_stats(config.output, stats)
    return stats


def length_sorted_windows(seeds: list[Seed], window: int) -> list[Seed]:
    """Each run of ``window`` seeds sorted by length: an in-process backend batches only prompts of similar length
    (CTranslate2: within 32 tokens), so 32 seeds in the balanced order ran almost one at a time (27 s a seed)."""
    def length(seed: Seed) -> int:
        return len(seed.prompt) + len(seed.response or "")

    return [seed for start in range(0, len(seeds), window) for seed in sorted(seeds[start:start + window], key=length)]


def load_teacher(config: SynthesisConfig):
    """The teacher backend, how many seeds go in one call and how many calls run at once: an endpoint takes one
    prompt per request, ``concurrency`` requests at a time; an in-process model takes batches, one call at a time
    (its backend runs the batches of a call in parallel), of 4 batches so that results are written as they come."""
    if config.base_url:
        from guardreasoner.backends.openai_backend import OpenAIBackend

        endpoint = OpenAIBackend(config.base_url, config.teacher, mode=config.teacher_mode or "chat",
                                 api_key=config.api_key, timeout=config.timeout, max_retries=config.max_retries,
                                 concurrency=1)
        return endpoint, 1, config.concurrency
    from guardreasoner.guard import make_backend
    from guardreasoner.models import resolve_model

    options = {"compute_type": config.compute_type} if config.compute_type else {}
    teacher = make_backend(resolve_model(config.teacher or "embedded"), config.backend, mode=config.teacher_mode,
                           batch_size=config.batch_size, **options)
    return teacher, 4 * config.batch_size, 1


def _record(chunk: list[Seed], future, kept: Path, rejected: Path, stats: dict) -> None:
    """Write one chunk's outcomes, synced: a row said to be kept survives an interruption."""
    try:
        outcomes = future.result()
    except Exception as error:  # noqa: BLE001 - one failed call must not stop the run; it is retried next run
        logger.warning("%s: the teacher failed after retries (%s); tried again next run",
                       ", ".join(seed.id for seed in chunk), error)
        stats["failed"] += len(chunk)
        return
    kept_rows, rejected_rows = [], []
    for seed, (generation, trace, reason, drawn) in zip(chunk, outcomes):
        if generation.finish_reason == "error":
            logger.warning("%s: the teacher failed (%s); tried again next run", seed.id, generation.error)
            stats["failed"] += 1
            continue
        stats["samples_drawn"] += drawn
        stats["input_tokens"] += generation.prompt_tokens  # of the generation judged: earlier draws are not counted
        stats["output_tokens"] += generation.completion_tokens
        if reason is None:
            kept_rows.append(json.dumps(seed_training_row(seed, trace), ensure_ascii=False))
        else:
            rejected_rows.append(json.dumps({"id": seed.id, "source": seed.source, "reason": reason, "output": trace},
                                            ensure_ascii=False))
    append_lines(kept, kept_rows)
    append_lines(rejected, rejected_rows)
    stats["kept"] += len(kept_rows)
    stats["rejected"] += len(rejected_rows)


def main(argv: list[str] | None = None) -> dict:
    from transformers import HfArgumentParser

    logging.basicConfig(level=logging.INFO)
    (config,) = HfArgumentParser(SynthesisConfig).parse_args_into_dataclasses(argv)
    stats = synthesize(config)
    print(json.dumps(stats, indent=2))
    return stats


if __name__ == "__main__":
    main()
