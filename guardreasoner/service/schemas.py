"""Request and response bodies of the service, as pydantic models (so /docs documents them and bad input
gets a 422 that names the field)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..cascade import REASONING_MODES
from ..results import VERDICT_KEYS


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

    @field_validator("thresholds")
    @classmethod
    def _known_verdicts(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key, threshold in (value or {}).items():
            if key not in VERDICT_KEYS:
                raise ValueError(f"unknown verdict {key!r}; choose among {list(VERDICT_KEYS)}")
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"the threshold for {key!r} must be between 0 and 1")
        return value


class VerdictOut(BaseModel):
    """One verdict, as ``Verdict.to_dict()`` writes it."""

    key: str = Field(description="prompt_harmfulness, response_refusal or response_harmfulness")
    label: str | None = Field(description="harmful/unharmful or refusal/compliance; null where none applies")
    source: str = Field(description="answers, earlier_answers, conclusion or none: where the label was read")
    offset: int | None = None
    p_positive: float | None = Field(None, description="probability of the positive label (harmful / refusal)")
    fail_closed: bool = False
    decided_by: str = Field("reasoning", description="reasoning (the model's written verdict) or screen")
    recovered: bool = False
    confidence: float | None = Field(None, description="probability of the label it chose")


class ReasoningOut(BaseModel):
    task: str
    steps: list[str] = []
    conclusion: str | None = None


class Result(BaseModel):
    """One item's result: exactly the library's ``GuardResult.to_dict()`` (keys = its attribute names)."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(description="the prompt as the caller sent it")
    response: str | None = Field(None, description="the reply as the caller sent it; null for none")
    model_input: str = Field("", description="the text the model read (cut in the middle when input_truncated)")
    input_truncated: bool = False
    verdicts: dict[str, VerdictOut]
    labels: dict[str, str | None] = Field(description="per verdict key: its label")
    is_harmful: bool = Field(description="the prompt or the reply was judged harmful")
    status: str = Field(description="ok, recovered (some verdict read outside the final Answers) or failed")
    fail_closed: bool = Field(description="the model gave no usable label somewhere and the guard assumed harmful")
    reasoning: dict[str, ReasoningOut] = {}
    flags: list[str] = []
    output: str = Field("", description="the model's whole output")
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None


class ClassifyResponse(BaseModel):
    model: str = Field(description="the model that answered")
    results: list[Result] = Field(description="one per item, in order")


class ErrorResponse(BaseModel):
    """Every error the service returns: a readable message, and for 422 the fields at fault."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    backend: str
    batching: dict[str, Any]
    limits: dict[str, Any]
    auth: bool = Field(description="whether requests need an API key")
    reasoning: dict[str, Any] = Field(description="the default mode and the modes this server offers")


# --- The OpenAI-compatible routes (the synthesis stage's teacher and the tests use them) -----------------------

class StreamOptions(BaseModel):
    include_usage: bool = False


class _Sampling(BaseModel):
    # Unknown OpenAI fields (n, user, echo, ...) are ignored rather than refused, as OpenAI clients send them.
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="one prompt, or a list of prompts")
    logprobs: int | None = Field(None, ge=0, le=20)

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
