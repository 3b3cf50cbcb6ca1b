"""Typed results: what the guard decided, where each verdict came from, and how the generation went.

One vocabulary everywhere (API, CLI output, files, app, reports): an item is a ``prompt`` (the human user's
request) and an optional ``response`` (the AI reply); the guard answers three verdicts, named as WildGuard names
them. The model's own Answers words (Request / Completion / Response) appear only where its text is read or
written (template, parser).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, fields

PROMPT_HARMFULNESS = "prompt_harmfulness"
RESPONSE_REFUSAL = "response_refusal"
RESPONSE_HARMFULNESS = "response_harmfulness"
# The three verdicts in the order the model writes them, with their two labels (positive class first).
VERDICT_KEYS: tuple[str, ...] = (PROMPT_HARMFULNESS, RESPONSE_REFUSAL, RESPONSE_HARMFULNESS)
REPLY_VERDICT_KEYS: tuple[str, ...] = (RESPONSE_REFUSAL, RESPONSE_HARMFULNESS)  # judged only when there is a reply
LABELS: dict[str, tuple[str, str]] = {
    PROMPT_HARMFULNESS: ("harmful", "unharmful"),
    RESPONSE_REFUSAL: ("refusal", "compliance"),
    RESPONSE_HARMFULNESS: ("harmful", "unharmful"),
}
POSITIVE = {key: labels[0] for key, labels in LABELS.items()}
NEGATIVE = {key: labels[1] for key, labels in LABELS.items()}
TASK_NUMBER = {PROMPT_HARMFULNESS: 1, RESPONSE_REFUSAL: 2, RESPONSE_HARMFULNESS: 3}
# The model's words for each verdict in its "Answers:" block.
ANSWER_NAMES = {PROMPT_HARMFULNESS: "Request", RESPONSE_REFUSAL: "Completion", RESPONSE_HARMFULNESS: "Response"}
KEY_OF_ANSWER_NAME = {name.lower(): key for key, name in ANSWER_NAMES.items()}

# Names earlier versions wrote into files (prediction rows, flag queues, outboxes, reports): verdict keys as the
# Answers words, and the paper's three task names. Read, never written.
LEGACY_VERDICT_KEYS = {"request": PROMPT_HARMFULNESS, "completion": RESPONSE_REFUSAL, "response": RESPONSE_HARMFULNESS}
LEGACY_TASK_KEYS = {"prompt": PROMPT_HARMFULNESS, "response": RESPONSE_HARMFULNESS, "refusal": RESPONSE_REFUSAL}
_logger = logging.getLogger("guardreasoner")
_warned: set[str] = set()


def deprecated_names(where: str, old: str, new: str) -> None:
    """Say once per kind of file that it uses names of an earlier version (still read)."""
    if where not in _warned:
        _warned.add(where)
        _logger.warning("%s uses the old names %s; read as %s (earlier versions wrote them)", where, old, new)


def current_verdict_keys(mapping: dict, legacy: dict[str, str] = LEGACY_VERDICT_KEYS, where: str = "a file") -> dict:
    """A dict keyed by verdict keys, accepting the keys earlier versions wrote (with a one-line note)."""
    if all(key in VERDICT_KEYS for key in mapping):
        return dict(mapping)
    deprecated_names(where, "/".join(legacy), "/".join(VERDICT_KEYS))
    return {legacy.get(key, key): value for key, value in mapping.items()}

def field_values(cls, data: dict) -> dict:
    """The values of ``data`` that are fields of the dataclass ``cls`` (for ``from_dict``: other keys, such as
    derived ones a ``to_dict`` adds, are left out)."""
    return {f.name: data[f.name] for f in fields(cls) if f.name in data}


# Where a verdict was read: the model's final Answers block is the normal case; the others are recoveries.
SOURCE_ANSWERS = "answers"
SOURCE_EARLIER_ANSWERS = "earlier_answers"  # the final block lacked this line (cut off, runaway repetition)
SOURCE_CONCLUSION = "conclusion"  # no Answers line at all: read from the task's own conclusion
SOURCE_NONE = "none"
SOURCE_SCREEN = "screen"  # not read from an output: a screen's head decided it (see screen.py, cascade.py)



def answers_block(verdicts: dict[str, str | None]) -> str:
    """The Answers block the model ends with, stating ``verdicts`` (a missing or None verdict reads "None")."""
    return "Answers: \n" + "\n".join(f"{ANSWER_NAMES[key]}: {verdicts.get(key) or 'None'}" for key in VERDICT_KEYS)

UNCALIBRATED = "none: the reasoning model's verdict-token share, not calibrated"
INPUT_TRUNCATED = "input_truncated"  # a result flag: the guard, or the screen, read only part of the item

@dataclass
class Verdict:
    """One verdict. ``label`` is None when the model gave none or said ``None`` (no reply to judge)."""

    key: str  # one of VERDICT_KEYS
    label: str | None
    source: str = SOURCE_NONE
    offset: int | None = None  # character offset of the label word in the output, for confidences
    p_positive: float | None = None  # probability of the positive label (harmful / refusal)
    fail_closed: bool = False  # the model gave no usable label and the guard assumed `harmful`
    decided_by: str = "reasoning"  # "reasoning" (the model's written verdict) or "screen" (a fast classifier)
    # What the screen said of this verdict where the reasoning model decided it (auto's band, or an explanation
    # asked for): its probability and the label its cut gives. ``disagrees`` compares the two.
    screen_p_positive: float | None = None
    screen_label: str | None = None
    # The threshold on ``p_positive`` that chose the label, where thresholds or an operating point set one (None:
    # the model's own answer, or the screen's cut).
    threshold: float | None = None
    # How ``p_positive`` was made: the screen head's calibration (e.g. "temperature 1.31 on the head's logit,
    # fitted on validation rows (screen encoder)"), or UNCALIBRATED for the reasoning model's verdict-token share.
    calibration: str | None = None

    @property
    def recovered(self) -> bool:
        return self.source in (SOURCE_EARLIER_ANSWERS, SOURCE_CONCLUSION)

    @property
    def disagrees(self) -> bool:
        """The reasoning model decided this verdict and the screen's cut would have said the other label."""
        return (self.decided_by == "reasoning" and self.screen_label is not None and self.label is not None
                and self.screen_label != self.label)

    @property
    def confidence(self) -> float | None:
        """The probability of the label it chose (against the other label)."""
        if self.p_positive is None or self.label is None:
            return None
        return self.p_positive if self.label == POSITIVE[self.key] else 1 - self.p_positive

    def to_dict(self) -> dict:
        out = asdict(self)
        out["recovered"] = self.recovered
        out["confidence"] = self.confidence
        out["disagrees"] = self.disagrees
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Verdict:
        return cls(**field_values(cls, data))


# A category's two labels: the item falls under the policy, or it does not.
CATEGORY_LABELS = ("positive", "negative")


@dataclass
class Category:
    """One policy's answer for an item, independent of the other policies' and of the three verdicts (an item
    can fall under several). ``p`` is the calibrated probability that it falls under the policy (None where the
    policy model gave a label without one); ``threshold`` the cut on ``p`` that chose ``label``."""

    label: str | None  # one of CATEGORY_LABELS, or None where the policy model gave no usable answer
    p: float | None = None
    threshold: float | None = None
    source: str = "head"  # "head" (a policy fitted on examples) or "text" (a written policy a served model applied)
    rationale: str | None = None  # a text policy's reason, where the model gave one
    rule_ids: list[str] = field(default_factory=list)  # the rules of a text policy it cited

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Category:
        return cls(**field_values(cls, data))


@dataclass
class TaskReasoning:
    """The reasoning the model wrote for one verdict's task."""

    task: str  # one of VERDICT_KEYS
    steps: list[str] = field(default_factory=list)
    conclusion: str | None = None


@dataclass
class ParsedOutput:
    """Everything read from one model output."""

    text: str
    verdicts: dict[str, Verdict]
    reasoning: dict[str, TaskReasoning]
    flags: list[str]
    has_response: bool | None = None

    @property
    def labels(self) -> dict[str, str | None]:
        return {key: verdict.label for key, verdict in self.verdicts.items()}

    @property
    def parse_error(self) -> bool:
        """No prompt verdict, or (where there is a reply) no refusal or reply-harm verdict."""
        return verdicts_missing(self.verdicts, self.has_response)

    @property
    def status(self) -> str:
        return verdict_status(self.verdicts, self.has_response)


def verdicts_missing(verdicts: dict[str, Verdict], has_response: bool | None) -> bool:
    needed = (PROMPT_HARMFULNESS, *(REPLY_VERDICT_KEYS if has_response else ()))
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
    """The guard's answer for one item: verdicts (after fail-closed), reasoning, and generation figures.

    ``prompt`` and ``response`` are what the caller passed; ``model_input`` is the text the model read (the
    GuardReasoner input, cut in the middle when ``input_truncated``). ``to_dict()`` keys are these attribute
    names (and the properties), so a reader can predict the JSON from the class."""

    prompt: str
    response: str | None
    model_input: str
    output: str
    verdicts: dict[str, Verdict]
    reasoning: dict[str, TaskReasoning]
    flags: list[str]
    model: str = ""
    input_truncated: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None
    operating_point: str | None = None  # the operating point whose thresholds chose the labels (its folder's name)
    categories: dict[str, Category] = field(default_factory=dict)  # per policy (its name), beside the verdicts

    @property
    def labels(self) -> dict[str, str | None]:
        return {key: verdict.label for key, verdict in self.verdicts.items()}

    @property
    def is_harmful(self) -> bool:
        """True when the prompt or the reply is judged harmful: the one bit most callers act on."""
        return "harmful" in (self.verdicts[PROMPT_HARMFULNESS].label, self.verdicts[RESPONSE_HARMFULNESS].label)

    @property
    def fail_closed(self) -> bool:
        return any(verdict.fail_closed for verdict in self.verdicts.values())

    @property
    def status(self) -> str:
        """As for parsing; a fail-closed verdict counts as failed, since the model itself gave none."""
        return "failed" if self.fail_closed else verdict_status(self.verdicts, self.response is not None)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["verdicts"] = {key: verdict.to_dict() for key, verdict in self.verdicts.items()}
        out["reasoning"] = {key: asdict(task) for key, task in self.reasoning.items()}
        out["flags"] = list(self.flags)
        out["categories"] = {name: category.to_dict() for name, category in self.categories.items()}
        out.update(labels=self.labels, is_harmful=self.is_harmful, status=self.status, fail_closed=self.fail_closed)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> GuardResult:
        """The result ``to_dict()`` wrote (derived keys such as ``labels`` are recomputed, not read)."""
        values = field_values(cls, data)
        values["verdicts"] = {key: Verdict.from_dict(v) for key, v in data["verdicts"].items()}
        values["reasoning"] = {key: TaskReasoning(**v) for key, v in data.get("reasoning", {}).items()}
        values["categories"] = {name: Category.from_dict(v) for name, v in (data.get("categories") or {}).items()}
        values.setdefault("model_input", "")
        values.setdefault("flags", [])
        return cls(**values)


@dataclass
class ParseEvent:
    """What the stream parser settled in the text so far (``stream_parser.StreamParser``)."""

    kind: str  # "step" | "conclusion" | "verdict"
    task: str  # a verdict key (VERDICT_KEYS)
    text: str | None = None  # the step or conclusion
    index: int | None = None  # the step's position in its task, from 0
    label: str | None = None  # the verdict
    source: str | None = None  # where the verdict was read (see SOURCE_*)
    provisional: bool | None = None  # a verdict read from reasoning, before the Answers block confirms it


@dataclass
class StreamUpdate:
    """One step of a stream: the new text, what it settled, and (on the last update) the full result."""

    delta: str
    text: str
    events: list[ParseEvent] = field(default_factory=list)
    elapsed_s: float = 0.0
    result: GuardResult | None = None
    screen: GuardResult | None = None  # reasoning="auto"/"off": the screen's verdicts, before any reasoning
