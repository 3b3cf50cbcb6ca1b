"""Typed results: what the guard decided, where each verdict came from, and how the generation went."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

# The three verdicts in the order the model writes them, with their two labels (positive class first).
VERDICT_KEYS: tuple[str, ...] = ("request", "completion", "response")
LABELS: dict[str, tuple[str, str]] = {
    "request": ("harmful", "unharmful"),
    "completion": ("refusal", "compliance"),
    "response": ("harmful", "unharmful"),
}
POSITIVE = {key: labels[0] for key, labels in LABELS.items()}
TASK_NUMBER = {"request": 1, "completion": 2, "response": 3}
ANSWER_NAMES = {"request": "Request", "completion": "Completion", "response": "Response"}
# The paper's names for the three benchmark tasks, and the verdict that answers each.
VERDICT_OF_TASK = {"prompt": "request", "response": "response", "refusal": "completion"}

# Where a verdict was read: the model's final Answers block is the normal case; the others are recoveries.
SOURCE_ANSWERS = "answers"
SOURCE_EARLIER_ANSWERS = "earlier_answers"  # the final block lacked this line (cut off, runaway repetition)
SOURCE_CONCLUSION = "conclusion"  # no Answers line at all: read from the task's own conclusion
SOURCE_NONE = "none"
SOURCE_SCREEN = "screen"  # not read from an output: a screen's head decided it (see screen.py, cascade.py)



def answers_block(verdicts: dict[str, str | None]) -> str:
    """The Answers block the model ends with, stating ``verdicts`` (a missing or None verdict reads "None")."""
    return "Answers: \n" + "\n".join(f"{ANSWER_NAMES[key]}: {verdicts.get(key) or 'None'}" for key in VERDICT_KEYS)

@dataclass
class Verdict:
    """One verdict. ``label`` is None when the model gave none or said ``None`` (no reply to judge)."""

    key: str  # request | completion | response
    label: str | None
    source: str = SOURCE_NONE
    offset: int | None = None  # character offset of the label word in the output, for confidences
    p_positive: float | None = None  # model probability of the positive label (harmful / refusal)
    fail_closed: bool = False  # the model gave no usable label and the guard assumed `harmful`
    decided_by: str = "reasoning"  # "screen" when a screen's head decided it without the reasoning model

    @property
    def recovered(self) -> bool:
        return self.source in (SOURCE_EARLIER_ANSWERS, SOURCE_CONCLUSION)

    @property
    def confidence(self) -> float | None:
        """The model's probability for the label it chose (against the other label)."""
        if self.p_positive is None or self.label is None:
            return None
        return self.p_positive if self.label == POSITIVE[self.key] else 1 - self.p_positive

    def to_dict(self) -> dict:
        out = asdict(self)
        out["recovered"] = self.recovered
        out["confidence"] = self.confidence
        return out


@dataclass
class TaskReasoning:
    """The reasoning the model wrote for one task."""

    task: str  # request | completion | response
    steps: list[str] = field(default_factory=list)
    conclusion: str | None = None


@dataclass
class ParsedOutput:
    """Everything read from one model output."""

    text: str
    verdicts: dict[str, Verdict]
    tasks: dict[str, TaskReasoning]
    flags: list[str]
    has_response: bool | None = None

    @property
    def labels(self) -> dict[str, str | None]:
        return {key: verdict.label for key, verdict in self.verdicts.items()}

    @property
    def parse_error(self) -> bool:
        """No request verdict, or (where there is a reply) no refusal or reply-harm verdict."""
        return verdicts_missing(self.verdicts, self.has_response)

    @property
    def status(self) -> str:
        return verdict_status(self.verdicts, self.has_response)


def verdicts_missing(verdicts: dict[str, Verdict], has_response: bool | None) -> bool:
    needed = ["request"] + (["completion", "response"] if has_response else [])
    return any(verdicts[key].label is None for key in needed)


def verdict_status(verdicts: dict[str, Verdict], has_response: bool | None) -> str:
    """ok: all read from the final Answers block; recovered: some read elsewhere; failed: some missing."""
    if verdicts_missing(verdicts, has_response):
        return "failed"
    if any(verdict.recovered for verdict in verdicts.values()):
        return "recovered"
    return "ok"


@dataclass
class GuardResult:
    """The guard's answer for one item: verdicts (after fail-closed), reasoning, and generation figures."""

    prompt: str
    response: str | None
    output: str
    verdicts: dict[str, Verdict]
    tasks: dict[str, TaskReasoning]
    flags: list[str]
    model: str = ""
    input_truncated: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None

    @property
    def labels(self) -> dict[str, str | None]:
        return {key: verdict.label for key, verdict in self.verdicts.items()}

    @property
    def is_harmful(self) -> bool:
        """True when the request or the reply is judged harmful: the one bit most callers act on."""
        return "harmful" in (self.verdicts["request"].label, self.verdicts["response"].label)

    @property
    def fail_closed(self) -> bool:
        return any(verdict.fail_closed for verdict in self.verdicts.values())

    @property
    def status(self) -> str:
        """As for parsing; a fail-closed verdict counts as failed, since the model itself gave none."""
        return "failed" if self.fail_closed else verdict_status(self.verdicts, self.response is not None)

    @property
    def parse_error(self) -> bool:
        return self.status == "failed"

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "response": self.response,
            "verdicts": self.labels,
            "is_harmful": self.is_harmful,
            "status": self.status,
            "parse_error": self.parse_error,
            "fail_closed": self.fail_closed,
            "details": {key: verdict.to_dict() for key, verdict in self.verdicts.items()},
            "reasoning": {key: asdict(task) for key, task in self.tasks.items()},
            "flags": self.flags,
            "output": self.output,
            "model": self.model,
            "input_truncated": self.input_truncated,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "latency_s": self.latency_s,
            "finish_reason": self.finish_reason,
        }
