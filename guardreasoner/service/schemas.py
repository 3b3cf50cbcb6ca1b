"""Request and response bodies of the service, one pair per endpoint, as pydantic models (so /docs documents
them and bad input gets a 422 that names the field). The results inside the responses are generated from the
library's dataclasses (see generated.py), never restated here."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

from ..cascade import REASONING_MODES
from ..results import VERDICT_KEYS, Category, GuardResult, TaskReasoning, Verdict
from ..stream_parser import ParseEvent
from .generated import model_of


class Item(BaseModel):
    """One thing to classify: the human user's request and, optionally, the AI's reply to it."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="the human user's request", examples=["How do I bake bread?"])
    response: str | None = Field(None, description="the AI assistant's reply to judge; omit for a request alone")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is blank")
        return value


class ClassifyRequest(BaseModel):
    """Items to classify and the options for all of them. The server's limits (items per request, characters
    per item, max_new_tokens) are in GET /health under `limits`."""

    model_config = ConfigDict(extra="forbid")

    items: list[Item] = Field(min_length=1, description="what to classify, in order")
    max_new_tokens: int | None = Field(
        None, ge=1, description="tokens the model may write per item (default and most: the server's cap)"
    )
    thresholds: dict[str, float] | None = Field(
        None,
        description="per verdict, the probability of the positive label (harmful / refusal) at which it is "
        f"chosen instead of 0.5; keys among {list(VERDICT_KEYS)}",
    )
    reasoning: Literal[REASONING_MODES] | None = Field(
        None, description="full: the model reasons on every item; auto: the server's screen decides where it is "
        "sure and the model reasons on the rest; off: the screen alone (milliseconds). Default: the server's "
        "mode (GET /health). auto and off need a server with a screen.")
    operating_point: str | None = Field(
        None, description="the name of an operating point this server offers (GET /health, `operating_points`): "
        "its thresholds choose the labels, and the request runs in the reasoning mode it was calibrated for "
        "(naming another mode is refused). `thresholds` given too override it per verdict. Default: the "
        "server's default point, where it has one and the request's mode is that point's.",
        examples=["strict"])

    @field_validator("thresholds")
    @classmethod
    def _known_verdicts(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, threshold in (value or {}).items():
            if key not in VERDICT_KEYS:
                raise ValueError(f"unknown verdict {key!r}; choose among {list(VERDICT_KEYS)}")
            if not 0.0 < threshold < 1.0:  # 0 would flag every item whatever its probability
                raise ValueError(f"the threshold for {key!r} must be strictly between 0 and 1, not {threshold}")
        return value


# --- Responses: the library's results, generated from its dataclasses ------------------------------------------
# Only /docs text lives here; model_of refuses a description whose attribute the dataclass no longer has.

VerdictModel = model_of(Verdict, {
    "key": "prompt_harmfulness, response_refusal or response_harmfulness",
    "label": "harmful/unharmful or refusal/compliance; null where none applies",
    "source": "answers, earlier_answers, conclusion, screen or none: where the label was read",
    "offset": "character offset of the label word in the output",
    "p_positive": "probability of the positive label (harmful / refusal)",
    "fail_closed": "the model gave no usable label and the guard assumed harmful",
    "decided_by": "reasoning (the model's written verdict) or screen (the fast classifier)",
    "calibration": "how p_positive was made: the screen head's calibration (naming the screen), or 'none: ...' "
                   "for the reasoning model's verdict-token share",
    "recovered": "the label was read outside the final Answers block",
})
CategoryModel = model_of(Category, {
    "label": "positive (the item falls under the policy) or negative; null where the policy model gave no answer",
    "p": "the calibrated probability that it falls under the policy",
    "source": "head (a policy fitted on examples) or text (a written policy a served model applied)",
})
TaskReasoningModel = model_of(TaskReasoning, {"task": "the verdict key of the task", "steps": "the reasoning steps"})
GuardResultModel = model_of(GuardResult, {
    "prompt": "the prompt as the caller sent it",
    "response": "the reply as the caller sent it; null for none",
    "model_input": "the text the model read (cut in the middle when input_truncated)",
    "output": "the model's whole output (empty where the screen decided every verdict)",
    "verdicts": "per verdict key: the verdict, after fail-closed",
    "labels": "per verdict key: its label",
    "status": "ok, recovered (some verdict read outside the final Answers) or failed",
    "fail_closed": "the model gave no usable label somewhere and the guard assumed harmful",
    "model": "the model that answered",
    "categories": "per policy the service loaded (serve --policy): its label and probability, independent of "
                  "each other and of the verdicts",
})
ParseEventModel = model_of(ParseEvent, {
    "kind": "step, conclusion or verdict",
    "task": "the verdict key of the task it belongs to",
    "provisional": "a verdict read from the reasoning, before the Answers block confirms it",
})


class ClassifyResponse(BaseModel):
    model: str = Field(description="the model that answered")
    results: list[GuardResultModel] = Field(description="one per item, in order: each `GuardResult.to_dict()`")


# The data of each server-sent event of /v1/classify/stream (the event's name is in its `event:` line).

class ScreenEvent(BaseModel):
    """`screen` (modes auto and off): the screen's verdicts for an item, before any reasoning."""

    index: int
    result: GuardResultModel


class DeltaEvent(BaseModel):
    """`delta`: new text the model wrote for an item, and the steps, conclusions and verdicts it settled."""

    index: int
    delta: str
    events: list[ParseEventModel]


class ResultEvent(BaseModel):
    """`result`: an item's whole result, as /v1/classify gives it."""

    index: int
    events: list[ParseEventModel]
    result: GuardResultModel


class DoneEvent(BaseModel):
    """`done`: every item has its result."""

    model: str


class ErrorEvent(BaseModel):
    """`error`: generation failed or ran over the time limit; the stream ends."""

    index: int | None = Field(None, description="the item it happened on, where known")
    detail: str


class StreamEvent(RootModel[ScreenEvent | DeltaEvent | ResultEvent | DoneEvent | ErrorEvent]):
    """The data of one event of /v1/classify/stream."""


class ErrorResponse(BaseModel):
    """Every error the service returns: a readable message, and for 422 the fields at fault."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class Batching(BaseModel):
    enabled: bool = Field(description="false for a remote backend: the far side batches")
    max_size: int = Field(description="items per generate call, at most")
    wait_ms: float = Field(description="how long the first request waits for others to join it")


class Limits(BaseModel):
    max_items: int
    max_item_chars: int
    max_new_tokens: int
    max_body_bytes: int
    request_timeout_s: float


class Reasoning(BaseModel):
    default: Literal[REASONING_MODES]
    modes: list[Literal[REASONING_MODES]]


class OfferedPoint(BaseModel):
    name: str = Field(description="what a request names under `operating_point`")
    reasoning: Literal[REASONING_MODES] = Field(description="the mode it was calibrated for (and applies in)")
    target: dict[str, float] | None = Field(description="what its thresholds were chosen for: fpr or recall")
    thresholds: dict[str, float] = Field(description="per verdict, the cut on the positive label's probability "
                                         "(after the verdict's map, where it has one)")
    calibrations: dict[str, str] = Field(default_factory=dict, description="per verdict, the Platt map its "
                                         "probability goes through before the threshold (none: as the guard gives it)")


class OperatingPoints(BaseModel):
    default: str | None = Field(description="the point applied to requests that name none (in its mode)")
    offered: list[OfferedPoint] = Field(description="the points a request may name")


class Reload(BaseModel):
    release: str | None = Field(description="the release served after the check")
    changed: bool = Field(description="whether the check moved the service to another release")


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    backend: str
    batching: Batching
    limits: Limits = Field(description="what a client must keep to")
    auth: bool = Field(description="whether requests need an API key")
    reasoning: Reasoning = Field(description="the default mode and the modes this server offers")
    operating_points: OperatingPoints = Field(description="the operating points loaded (serve --operating-point)")
    release: str | None = Field(None, description="the screen's release served (serve --releases: the version "
                                                  "training.loop shipped last), or null")
