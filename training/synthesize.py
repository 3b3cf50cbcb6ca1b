"""Stage 1: reasoning traces from a teacher over any OpenAI-compatible API, kept only when they reach the gold labels.

    python -m training.synthesize --seeds WildGuardTrain AegisTrain BeaverTails ToxicChat \\
        --base_url https://api.openai.com/v1 --teacher gpt-4o --output traces.jsonl
    python -m training.synthesize --seeds my_rows.jsonl --base_url http://127.0.0.1:8000/v1 --output traces.jsonl

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
"""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from guardreasoner.backends.base import SamplingConfig
from guardreasoner.parser import parse_for, strip_leaks
from guardreasoner.records import training_row
from guardreasoner.results import (
    ANSWER_NAMES,
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
    base_url: str = field(metadata={"help": "the teacher's OpenAI-compatible endpoint, e.g. http://host:8000/v1"})
    output: str = "traces.jsonl"
    teacher: str | None = field(default=None, metadata={"help": "model name; default: the server's first model"})
    teacher_mode: str = field(default="chat", metadata={"help": "chat (instruction-tuned teachers) or raw"})
    api_key: str | None = field(default=None, metadata={"help": "default: $OPENAI_API_KEY"})
    concurrency: int = 8
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


# The parser is lenient with a model's Answers block (it reads the first line of each name); a training trace
# must not be: the embedded guard writes blocks with a name twice or one missing (5 of 14 hinted pilot traces that
# the parser read as gold), and training on them teaches that.
WELL_FORMED_ANSWERS = re.compile(
    r"Answers: ?\n" + r"\n".join(f"{ANSWER_NAMES[key]}: [a-z]+" for key in VERDICT_KEYS) + r"\s*\Z", re.IGNORECASE)


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


def ask(teacher, seed: Seed, sampling: SamplingConfig, config: SynthesisConfig):
    """The first of up to ``samples`` generations whose trace is kept, else the last: (generation, its trace, why
    it is rejected or None, how many were drawn)."""
    prompt = PROMPTS[config.prompt](seed)
    for drawn in range(1, config.samples + 1):
        generation = teacher.generate([prompt], sampling)[0]
        trace, reason = judge_generation(seed, generation)
        if reason is None:
            break
    return generation, trace, reason, drawn


def judge(seed: Seed, text: str) -> tuple[str, str | None]:
    """The trace to keep (leaks cut) and None, or the text and why it is rejected."""
    trace = strip_leaks(text).strip()
    parsed = parse_for(trace, seed.prompt, seed.response)
    if "no_answers_block" in parsed.flags:
        return trace, "no Answers block"
    if not WELL_FORMED_ANSWERS.search(trace):
        return trace, "malformed Answers block"
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

    from guardreasoner.backends.openai_backend import OpenAIBackend

    if config.prompt not in PROMPTS:
        raise ValueError(f"--prompt {config.prompt!r}: choose one of {', '.join(PROMPTS)}")
    if config.samples < 1 or (config.samples > 1 and config.temperature == 0):
        raise ValueError("--samples must be at least 1, and more than 1 needs --temperature above 0 (greedy answers "
                         "repeat)")
    if seeds is None:
        seeds = [seed for spec in config.seeds for seed in load_seeds(spec)[: config.max_rows_per_source]]
    kept_path, rejected_path = Path(config.output), Path(config.output + ".rejected.jsonl")
    kept_path.parent.mkdir(parents=True, exist_ok=True)
    kept_before, rejected_before = _ids_in(kept_path), _ids_in(rejected_path)
    done = kept_before | rejected_before
    todo = [seed for seed in seeds if seed.id not in done]
    teacher = OpenAIBackend(config.base_url, config.teacher, mode=config.teacher_mode, api_key=config.api_key,
                            timeout=config.timeout, max_retries=config.max_retries, concurrency=1)
    sampling = SamplingConfig(config.max_tokens, config.temperature, top_logprobs=0)
    stats = {"seeds": len(seeds), "already_done": len(seeds) - len(todo), "kept": 0, "rejected": 0, "failed": 0,
             "samples_drawn": 0, "input_tokens": 0, "output_tokens": 0}
    kept, rejected = kept_path, rejected_path
    with ThreadPoolExecutor(max_workers=config.concurrency) as pool, tqdm(total=len(todo), desc="synthesize") as bar:
        pending: dict = {}

        def record_finished(return_when) -> None:
            finished, _ = wait(pending, return_when=return_when)
            for future in finished:
                _record(pending.pop(future), future, kept, rejected, stats)
                bar.update()

        # At most `concurrency` requests in flight; each result is written as it arrives.
        for seed in todo:
            if len(pending) >= config.concurrency:
                record_finished(FIRST_COMPLETED)
            pending[pool.submit(ask, teacher, seed, sampling, config)] = seed
        if pending:
            record_finished(ALL_COMPLETED)
    teacher.close()
    stats["file_kept"] = len(kept_before) + stats["kept"]
    stats["file_rejected"] = len(rejected_before) + stats["rejected"]
    write_stats(config.output, stats)
    return stats


def _record(seed: Seed, future, kept: Path, rejected: Path, stats: dict) -> None:
    """Write one seed's outcome, synced: a row said to be kept survives an interruption."""
    try:
        generation, trace, reason, drawn = future.result()
    except Exception as error:  # noqa: BLE001 - one failed seed must not stop the run; it is retried next run
        logger.warning("%s: the teacher failed after retries (%s); it will be tried again next run", seed.id, error)
        stats["failed"] += 1
        return
    stats["samples_drawn"] += drawn
    stats["input_tokens"] += generation.prompt_tokens  # of the generation judged: earlier draws are not counted
    stats["output_tokens"] += generation.completion_tokens
    if reason is None:
        append_lines(kept, [json.dumps(seed_training_row(seed, trace), ensure_ascii=False)])
        stats["kept"] += 1
    else:
        append_lines(rejected, [json.dumps({"id": seed.id, "source": seed.source, "reason": reason, "output": trace},
                                           ensure_ascii=False)])
        stats["rejected"] += 1


def main(argv: list[str] | None = None) -> dict:
    from transformers import HfArgumentParser

    logging.basicConfig(level=logging.INFO)
    (config,) = HfArgumentParser(SynthesisConfig).parse_args_into_dataclasses(argv)
    stats = synthesize(config)
    print(json.dumps(stats, indent=2))
    return stats


if __name__ == "__main__":
    main()
