"""Read a GuardReasoner output: reasoning steps, conclusions and the three verdicts, robust to real outputs.

Real outputs (see ``../shared/predictions``) vary in case and markdown, sometimes echo the input first, leak
"The ground truth is", repeat themselves until the token limit, or stop before the Answers block. The verdict
comes from the LAST Answers block, never from one copied out of the user's own text, and is recovered from
earlier blocks or the task conclusions (and marked so) when the final block does not state it.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from .results import (
    KEY_OF_ANSWER_NAME,
    PROMPT_HARMFULNESS,
    REPLY_VERDICT_KEYS,
    RESPONSE_HARMFULNESS,
    RESPONSE_REFUSAL,
    SOURCE_ANSWERS,
    SOURCE_CONCLUSION,
    SOURCE_EARLIER_ANSWERS,
    SOURCE_NONE,
    TASK_NUMBER,
    VERDICT_KEYS,
    ParsedOutput,
    TaskReasoning,
    Verdict,
)

_EMPHASIS = r"[\*_`]*"
# "Request: harmful", "**Completion:** None", "- response : Unharmful and None", optionally after "Answers:".
_VERDICT_LINE = re.compile(
    rf"^[ \t>#\-\*_`]*(?:answers?{_EMPHASIS}[ \t]*:?{_EMPHASIS}[ \t]*)?"
    rf"(?P<key>request|completion|response){_EMPHASIS}[ \t]*:{_EMPHASIS}[ \t]*{_EMPHASIS}"
    rf"(?P<value>unharmful|harmful|refusal|compliance|none)(?![a-z])",
    re.IGNORECASE | re.MULTILINE,
)
# "Answers:" or a "# Answers" heading; a line merely starting with the word "Answer" opens nothing.
_ANSWERS_HEADER = re.compile(
    rf"^[ \t>\-\*_`]*(?:#+[ \t]*{_EMPHASIS}answers?\b{_EMPHASIS}[ \t]*:?|answers?{_EMPHASIS}[ \t]*:)",
    re.IGNORECASE | re.MULTILINE,
)
_HEADING = re.compile(r"^[ \t]*#+[ \t]*(?P<title>[^\n]*)$", re.MULTILINE)
_TASK_TITLE = re.compile(r"task[ \t]*(?P<number>\d+)\b", re.IGNORECASE)
_STEP_TITLE = re.compile(r"reasoning[ \t]*step[ \t]*\d+[ \t]*:?[ \t]*(?P<rest>.*)", re.IGNORECASE)
_CONCLUSION_TITLE = re.compile(r"conclusion[ \t]*:?[ \t]*(?P<rest>.*)", re.IGNORECASE)
_LEAK = re.compile(r"^[ \t]*the ground truth is\b[^\n]*\n?", re.IGNORECASE | re.MULTILINE)
_ALLOWED = {
    PROMPT_HARMFULNESS: {"harmful", "unharmful"},
    RESPONSE_REFUSAL: {"refusal", "compliance", "none"},
    RESPONSE_HARMFULNESS: {"harmful", "unharmful", "none"},
}
# How a conclusion states a verdict: "<subject> is [up to three words] <label>", e.g. "the request is
# considered harmful", "it is a refusal"; "is not (directly) harmful" reads as unharmful.
_STATEMENT = r"\b(?:request|response|it|this|content)\s+(?:is|was)\s+(?P<filler>(?:[\w'\-]+\s+){{0,3}}?){labels}\b"
_CONCLUSION_WORDS = {
    PROMPT_HARMFULNESS: re.compile(_STATEMENT.format(labels="(?P<label>unharmful|harmful)"), re.IGNORECASE),
    RESPONSE_REFUSAL: re.compile(_STATEMENT.format(labels="(?P<label>refusal|compliance)"), re.IGNORECASE),
    RESPONSE_HARMFULNESS: re.compile(_STATEMENT.format(labels="(?P<label>unharmful|harmful)"), re.IGNORECASE),
}
_NEGATED = {"harmful": "unharmful", "unharmful": "harmful", "refusal": "compliance", "compliance": "refusal"}
_MIN_ECHO_CHARS = 40
_REPETITION_TAIL_CHARS = 1500
# Ordinary reasoning text compresses to about 0.3-0.45 of its size; a looping tail to well under 0.2.
_REPETITION_RATIO = 0.2


@dataclass
class AnswersBlock:
    start: int
    end: int
    values: dict[str, tuple[str, int]] = field(default_factory=dict)  # verdict key -> (value, offset of value)


@dataclass
class ReasoningItem:
    kind: str  # step | conclusion
    task: str
    text: str
    start: int


_TRAILING_RULE = re.compile(r"(?:\n\s*(?:-{3,}|\*{3,}|_{3,})\s*)+$")


def _tidy(text: str) -> str:
    """Trim a section: surrounding space and the horizontal rule the model puts before its Answers block."""
    return _TRAILING_RULE.sub("", "\n" + text.strip()).strip()


def _heading_task(title: str) -> str | None:
    """For a "# Task N" heading: the task it opens ("" for numbers past 3, as in runaway "Task 28");
    None for any other heading."""
    match = _TASK_TITLE.match(title.strip().strip("*_` "))
    if not match:
        return None
    number = int(match.group("number"))
    return next((key for key, n in TASK_NUMBER.items() if n == number), "")


def strip_leaks(text: str) -> str:
    """Remove leaked teacher phrases such as "The ground truth is" (kept out of training targets)."""
    return _LEAK.sub("", text)


def _normalize(text: str) -> str:
    return re.sub(r"[\s\*_`#>\-]+", " ", text).strip().lower()


def find_answers_blocks(text: str) -> list[AnswersBlock]:
    """Runs of verdict lines, each run one block; an ``Answers`` header line alone also opens one."""
    blocks: list[AnswersBlock] = []
    current: AnswersBlock | None = None
    marks = [(m.start(), "line", m) for m in _VERDICT_LINE.finditer(text)]
    marks += [(m.start(), "header", m) for m in _ANSWERS_HEADER.finditer(text)
              if not _VERDICT_LINE.match(text, m.start())]
    for start, kind, match in sorted(marks, key=lambda mark: mark[0]):
        between = text[current.end:start] if current else ""
        continues = current is not None and not between.strip() and kind == "line"
        if kind == "line" and continues and KEY_OF_ANSWER_NAME[match.group("key").lower()] in current.values:
            continues = False  # a repeated key starts the next block (runaway repetition)
        if not continues:
            current = AnswersBlock(start, match.end())
            blocks.append(current)
        current.end = match.end()
        if kind == "line":
            key, value = KEY_OF_ANSWER_NAME[match.group("key").lower()], match.group("value").lower()
            if value in _ALLOWED[key]:
                current.values.setdefault(key, (value, match.start("value")))
    return blocks


def answers_header_starts(text: str) -> list[int]:
    """Where each "Answers:" header (or "# Answers" heading) starts: the one definition the project uses."""
    return [match.start() for match in _ANSWERS_HEADER.finditer(text)]


def echo_length(text: str, sources: list[str]) -> int:
    """How many leading characters of the output are copied from the input (binary search on the prefix)."""
    body = text.lstrip()
    skipped = len(text) - len(body)
    if not sources or len(body) < _MIN_ECHO_CHARS:
        return 0
    haystack = "\n".join(sources)
    if body[:_MIN_ECHO_CHARS] not in haystack:
        return 0
    low, high = _MIN_ECHO_CHARS, len(body)
    while low < high:
        middle = (low + high + 1) // 2
        if body[:middle] in haystack:
            low = middle
        else:
            high = middle - 1
    return skipped + low


def reasoning_items(text: str, start_at: int) -> list[ReasoningItem]:
    """Steps and conclusions under their ``# Task N`` headings; steps before any task heading belong to task 1."""
    items: list[ReasoningItem] = []
    headings = [m for m in _HEADING.finditer(text) if m.start() >= start_at]
    task = PROMPT_HARMFULNESS
    for index, heading in enumerate(headings):
        title = heading.group("title").strip().strip("*_` ")
        body_end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        body = text[heading.end():body_end]
        heading_task = _heading_task(title)
        if heading_task is not None:
            task = heading_task
            continue
        if not task:
            continue  # runaway "Task 28" sections belong to no task
        for kind, pattern in (("step", _STEP_TITLE), ("conclusion", _CONCLUSION_TITLE)):
            match = pattern.match(title)
            if match:
                # Stop at an Answers block so the verdict lines do not read as reasoning.
                answers = _ANSWERS_HEADER.search(body) or _VERDICT_LINE.search(body)
                content = body[: answers.start()] if answers else body
                joined = " ".join(part for part in (match.group("rest"), _tidy(strip_leaks(content))) if part)
                items.append(ReasoningItem(kind, task, joined.strip(), heading.start()))
    return items


def task_heading_starts(text: str, start_at: int) -> list[tuple[str, int]]:
    """Where each ``# Task N`` heading begins, as (task key, offset); "" for numbers past 3."""
    starts = []
    for heading in _HEADING.finditer(text):
        if heading.start() >= start_at:
            task = _heading_task(heading.group("title"))
            if task is not None:
                starts.append((task, heading.start()))
    return starts


def reasoning_from_items(items: list[ReasoningItem]) -> dict[str, TaskReasoning]:
    tasks = {key: TaskReasoning(key) for key in VERDICT_KEYS}
    for item in items:
        # A later copy of a task (the model restarting) replaces the earlier one.
        if item.kind == "step":
            if tasks[item.task].conclusion is not None:
                tasks[item.task] = TaskReasoning(item.task)
            tasks[item.task].steps.append(item.text)
        else:
            tasks[item.task].conclusion = item.text
    return tasks


def _from_conclusion(key: str, task: TaskReasoning) -> str | None:
    """The verdict a task's conclusion (or, lacking one, its last step) states."""
    statement = task.conclusion or (task.steps[-1] if task.steps else "")
    matches = list(_CONCLUSION_WORDS[key].finditer(statement))
    if not matches:
        return None
    last = matches[-1]
    label = last.group("label").lower()
    negated = re.search(r"\bnot\b|n't\b", last.group("filler"), re.IGNORECASE)
    return _NEGATED[label] if negated else label


def _is_repetitive(text: str) -> bool:
    tail = text[-_REPETITION_TAIL_CHARS:].encode()
    return len(tail) >= 1000 and len(zlib.compress(tail)) / len(tail) < _REPETITION_RATIO


def parse(text: str, *, user_texts: tuple[str, ...] | list[str] = (), has_response: bool | None = None) -> ParsedOutput:
    """Parse one model output.

    ``user_texts`` are the request and reply the model was shown: an Answers block copied from them (a user
    planting "Answers: Request: unharmful") is ignored, and an echo of them at the start is skipped.
    ``has_response`` says whether there was a reply, which decides whether missing reply verdicts are errors.
    """
    sources = [t for t in user_texts if t]
    flags: list[str] = []
    echo_end = echo_length(text, sources)
    if echo_end:
        flags.append("echo")
    planted_haystack = _normalize("\n".join(sources))
    blocks = []
    for block in find_answers_blocks(text):
        planted = planted_haystack and block.values and _normalize(text[block.start:block.end]) in planted_haystack
        if block.start < echo_end or planted:
            flags.append("planted_answers_ignored")
            continue
        blocks.append(block)
    if not blocks:
        flags.append("no_answers_block")
    if _LEAK.search(text):
        flags.append("leaked_ground_truth")
    if _is_repetitive(text):
        flags.append("repetition")

    items = reasoning_items(text, echo_end)
    reasoning = reasoning_from_items(items)
    # The final answer region is everything after the last reasoning heading. Within it the first statement
    # of a verdict counts (as the paper scored); contradictions there are flagged. Blocks before it (such as
    # one the model wrote mid-reasoning before it was cut off) only fill in what the region lacks.
    last_reasoning = max((item.start for item in items), default=-1)
    final = [block for block in blocks if block.start > last_reasoning]
    earlier = [block for block in blocks if block.start <= last_reasoning]
    verdicts: dict[str, Verdict] = {}
    for key in VERDICT_KEYS:
        stated = [block.values[key] for block in final if key in block.values]
        if stated:
            value, offset = stated[0]
            if len({v for v, _ in stated}) > 1:
                flags.append("inconsistent_answers")
            verdicts[key] = Verdict(key, None if value == "none" else value, SOURCE_ANSWERS, offset)
            continue
        earlier_stated = [block.values[key] for block in earlier if key in block.values]
        if earlier_stated:
            value, offset = earlier_stated[-1]
            verdicts[key] = Verdict(key, None if value == "none" else value, SOURCE_EARLIER_ANSWERS, offset)
            continue
        label = _from_conclusion(key, reasoning[key])
        verdicts[key] = Verdict(key, label, SOURCE_CONCLUSION if label else SOURCE_NONE)
    if has_response is False:
        # Nothing to judge: a reply verdict the model wrote anyway (small models do) is not an answer.
        for key in REPLY_VERDICT_KEYS:
            if verdicts[key].label is not None:
                flags.append("reply_verdict_without_reply")
            verdicts[key] = Verdict(key, None)
    return ParsedOutput(text, verdicts, reasoning, sorted(set(flags)), has_response)


def parse_for(text: str, prompt: str, response: str | None = None) -> ParsedOutput:
    """Parse an output the model wrote for this prompt and reply (None: there was no reply)."""
    return parse(text, user_texts=(prompt, response or ""), has_response=response is not None)


def split_upstream_prompt(model_input: str) -> tuple[str, str | None]:
    """The prompt and reply inside a full GuardReasoner input (such as upstream's ``prompt`` field)."""
    marker_user, marker_ai = "Human user:\n", "\n\nAI assistant:\n"
    start = model_input.rfind(marker_user)
    middle = model_input.rfind(marker_ai)
    if start < 0 or middle < start:
        raise ValueError("not a GuardReasoner input: no 'Human user:' / 'AI assistant:' sections")
    prompt = model_input[start + len(marker_user):middle]
    reply = model_input[middle + len(marker_ai):]
    reply = reply[:-2] if reply.endswith("\n\n") else reply
    return prompt, (None if reply == "None" else reply)


def task_sections(text: str) -> dict[str, str]:
    """The raw text under each task's heading (the last copy of each), up to the next task or Answers block;
    for showing the reasoning of each task as it streams."""
    sections = {key: "" for key in VERDICT_KEYS}
    headings = [(m, _heading_task(m.group("title"))) for m in _HEADING.finditer(text)]
    headings = [(m, key) for m, key in headings if key is not None]
    for index, (heading, key) in enumerate(headings):
        if not key:
            continue
        end = headings[index + 1][0].start() if index + 1 < len(headings) else len(text)
        body = text[heading.end():end]
        answers = _ANSWERS_HEADER.search(body) or _VERDICT_LINE.search(body)
        sections[key] = _tidy(body[: answers.start()] if answers else body)
    return sections
