"""LiteLLM's Generic Guardrail API (``POST /beta/litellm_basic_guardrail_api``): one route that LiteLLM calls
before a model call (``input_type: request``) and after it (``input_type: response``), for every endpoint it
proxies, with no LiteLLM plugin.

- request: the last user message (from ``structured_messages`` where LiteLLM sends them, else the last text) is
  judged as a request (``prompt_harmfulness``); it is kept by ``litellm_call_id`` for the reply's check.
- response: each reply text is judged with its request (``response_harmfulness``): the request from
  ``structured_messages``, else the one kept for the call id; with neither, the reply is judged alone as a text
  (``prompt_harmfulness``, as /v1/moderations does).
- the answer is ``BLOCKED`` with a reason when any verdict is harmful, else ``NONE``; it never rewrites text.
  ``additional_provider_specific_params`` may carry ``reasoning`` and ``thresholds`` as in /v1/classify.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..results import PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS
from .moderations import bearer
from .schemas import ClassifyRequest, ErrorResponse, Item

router = APIRouter()
REMEMBERED_CALLS = 4096  # requests kept for their replies' checks, the oldest dropped first


class GuardrailRequest(BaseModel):
    """What LiteLLM sends (its ``GenericGuardrailAPIRequest``); fields it may add later are ignored."""

    model_config = ConfigDict(extra="ignore")

    input_type: Literal["request", "response"]
    texts: list[str] | None = None
    structured_messages: list[dict[str, Any]] | None = None
    images: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    litellm_call_id: str | None = None
    litellm_trace_id: str | None = None
    request_data: dict[str, Any] | None = None
    additional_provider_specific_params: dict[str, Any] | None = None


class GuardrailResponse(BaseModel):
    action: Literal["BLOCKED", "NONE"]
    blocked_reason: str | None = None
    verdicts: list[dict[str, Any]] = Field(default_factory=list,
                                           description="per judged text: the verdict applied, label, probability "
                                                       "and decider (LiteLLM ignores it; logs may keep it)")


def text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "\n".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return ""


def last_user_message(messages: list[dict[str, Any]] | None) -> str | None:
    for message in reversed(messages or []):
        if message.get("role") == "user" and text_of(message.get("content")).strip():
            return text_of(message.get("content"))
    return None


class Guardrail:
    """The route's state: the requests kept by call id, so a reply sent alone is judged with its request."""

    def __init__(self, remembered: int = REMEMBERED_CALLS):
        self.requests: OrderedDict[str, str] = OrderedDict()
        self.remembered = remembered

    def remember(self, call_id: str | None, prompt: str) -> None:
        if call_id:
            self.requests[call_id] = prompt
            self.requests.move_to_end(call_id)
            while len(self.requests) > self.remembered:
                self.requests.popitem(last=False)

    def items(self, body: GuardrailRequest) -> list[tuple[Item, str]]:
        """What to judge, each with the verdict that decides it."""
        texts = [text for text in body.texts or [] if text.strip()]
        if body.input_type == "request":
            prompt = last_user_message(body.structured_messages) or (texts[-1] if texts else None)
            if prompt is None:
                return []
            self.remember(body.litellm_call_id, prompt)
            return [(Item(prompt=prompt), PROMPT_HARMFULNESS)]
        prompt = last_user_message(body.structured_messages) or self.requests.get(body.litellm_call_id or "")
        if prompt is None:
            return [(Item(prompt=text), PROMPT_HARMFULNESS) for text in texts]
        return [(Item(prompt=prompt, response=text), RESPONSE_HARMFULNESS) for text in texts]


def _options(params: dict[str, Any] | None) -> dict[str, Any]:
    return {key: value for key, value in (params or {}).items() if key in ("reasoning", "thresholds")}


@router.post("/beta/litellm_basic_guardrail_api", response_model=GuardrailResponse, tags=["drop-in"],
             dependencies=[Depends(bearer)],
             responses={status: {"model": ErrorResponse} for status in (401, 413, 422, 504)})
async def litellm_guardrail(body: GuardrailRequest, request: Request):
    """LiteLLM's Generic Guardrail API, pre-call and post-call: BLOCKED when the request, or a reply with its
    request, is judged harmful; NONE otherwise (and for anything without text, such as images alone)."""
    state = request.app.state
    judged = state.guardrail.items(body)
    if not judged:
        return GuardrailResponse(action="NONE")
    try:
        classify = ClassifyRequest(items=[item for item, _ in judged],
                                   **_options(body.additional_provider_specific_params))
    except ValidationError as error:
        raise HTTPException(422, f"additional_provider_specific_params: {error.errors()[0]['msg']}")
    classified = await state.serving.classify(classify)
    verdicts, harmful = [], []
    for (_, key), result in zip(judged, classified.results):
        verdict = result.verdicts[key]
        verdicts.append({"verdict": key, "label": verdict.label, "p_positive": verdict.p_positive,
                         "decided_by": verdict.decided_by})
        if verdict.label == "harmful":
            p = f" p={verdict.p_positive:.2f}" if verdict.p_positive is not None else ""
            harmful.append(f"{key} harmful ({verdict.decided_by}{p})")
    if harmful:
        return GuardrailResponse(action="BLOCKED", blocked_reason="GuardReasoner: " + "; ".join(harmful),
                                 verdicts=verdicts)
    return GuardrailResponse(action="NONE", verdicts=verdicts)
