"""Records that one stage writes and another reads, defined once: the app's flags (read by the annotation
workspace). Prediction files live in ``predictions``; rows to classify in ``rows``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from .results import current_verdict_keys, deprecated_names, field_values


def flag_id(prompt: str, response: str | None, output: str) -> str:
    """Stable id from the content, so flagging the same result twice names the same record."""
    digest = hashlib.sha256(json.dumps([prompt, response, output]).encode()).hexdigest()
    return f"flag-{digest[:16]}"


@dataclass
class FlagRecord:
    """A person's "this result is wrong": the item, what the model said, and the labels they say are right."""

    id: str
    prompt: str
    response: str | None
    output: str
    model_verdicts: dict[str, str | None]  # verdict key -> the model's label
    corrected: dict[str, str | None]  # verdict key -> the right label (None: no opinion / no reply)
    comment: str = ""
    model: str | None = None
    source: str = "app_flag"
    # A flag can also correct a policy: its name and the label the item should get (``positive``/``negative``);
    # ``python -m guardreasoner policy fit --flags QUEUE`` adds it to that policy's examples.
    policy: str | None = None
    policy_label: str | None = None
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @classmethod
    def for_result(cls, result: dict, corrected: dict[str, str | None], comment: str = "") -> FlagRecord:
        """A flag of a ``GuardResult.to_dict()``."""
        output = result.get("output", "")
        return cls(flag_id(result["prompt"], result.get("response"), output), result["prompt"], result.get("response"),
                   output, dict(result.get("labels", {})), dict(corrected), comment or "", result.get("model"))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "a flag queue") -> FlagRecord:
        """Read a flag, including those earlier versions wrote (``request`` for the prompt, Answers-word keys)."""
        data = dict(data)
        if "request" in data and "prompt" not in data:
            deprecated_names(where, "request", "prompt")
            data["prompt"] = data.pop("request")
        for name in ("model_verdicts", "corrected"):
            data[name] = current_verdict_keys(data.get(name) or {}, where=where)
        return cls(**field_values(cls, data))


def latest_flags(flags: list[FlagRecord]) -> list[FlagRecord]:
    """One flag per id, the last one written: a queue is append-only, and flagging the same result again
    (the same item and output) writes a newer record that replaces the earlier one. First-seen order."""
    latest: dict[str, FlagRecord] = {}
    for flag in flags:
        latest[flag.id] = flag
    return list(latest.values())


def training_row(prompt: str, response: str | None, output: str, **extra) -> dict:
    """A GuardReasonerTrain row (``instruction``, ``input``, ``output``: the format R-SFT reads), plus ``extra``."""
    from .template import INSTRUCTION, format_input

    return {"instruction": INSTRUCTION, "input": format_input(prompt, response), "output": output, **extra}


@dataclass
class PushReport:
    """What one push to the review server did; ``python -m annotate push --report FILE`` writes it as JSON, so
    the app reads the outcome from a file instead of another process's output."""

    queued: int  # new items added to the outbox by this push
    delivered: int  # items sent to the review server by this push
    pending: int  # items still waiting (the server could not be reached)
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PushReport:
        return cls(**field_values(cls, data))
