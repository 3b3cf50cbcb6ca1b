"""``POST /v1/moderations`` in OpenAI's shape, so moderation clients (``client.moderations.create``) call the
guard unchanged.

Each input text is judged as a human user's request: the guard's ``prompt_harmfulness`` verdict. The mapping is
honest rather than flattering:

- our verdict goes in under its own name (``categories["prompt_harmfulness"]``, its probability in
  ``category_scores``), and ``flagged`` is that verdict;
- OpenAI's thirteen categories are all present (clients read them), each ``false`` / ``0.0`` with no applied
  input type: the guard says "harmful" across every kind of harm at once and names none of them, so none of
  OpenAI's categories corresponds to it (``illicit`` comes nearest, yet our "harmful" also covers hate,
  harassment and self-harm, which OpenAI keeps apart). ``CATEGORY_OF_VERDICT`` is where a true correspondence
  would go; it is empty;
- each result adds ``verdicts`` (labels), ``probabilities`` and ``decided_by`` (screen or reasoning);
- the server's own policies (``serve --policy``) go in under their own names, as categories of ours: true where
  the item falls under the policy, its probability as the score; ``flagged`` is true where any category is (as
  OpenAI's is), so a policy an app wants to block flags as harm does.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..results import PROMPT_HARMFULNESS
from .schemas import ClassifyRequest, ErrorResponse, Item

# OpenAI's moderation categories, as its API names them.
OPENAI_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/instructions", "self-harm/intent", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)
# Our verdict key -> the OpenAI category it truly equals. None does (see the module's docstring).
CATEGORY_OF_VERDICT: dict[str, str] = {}
JUDGED = PROMPT_HARMFULNESS  # a moderation input is judged as a user's request

router = APIRouter()
bearer = HTTPBearer(auto_error=False, description="an API key given to the server with --api-key(-file)")


class TextInput(BaseModel):
    """OpenAI's multi-modal input part; only text can be judged."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: Any = None


class ModerationRequest(BaseModel):
    """OpenAI's moderation request: ``input`` a text, a list of texts, or a list of ``{"type": "text", ...}``
    parts. ``model`` is accepted and ignored: the server serves one guard."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str] | list[TextInput] = Field(description="what to judge, each text as a user's request")
    model: str | None = Field(None, description="ignored: the answer names the guard that judged")

    @field_validator("input")
    @classmethod
    def _texts_only(cls, value):
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input is an empty list; send at least one text")
        for index, text in enumerate(texts):
            if isinstance(text, TextInput):
                if text.type != "text" or text.text is None:
                    raise ValueError(f"input.{index}: only text can be judged; this guard reads no images")
                text = text.text
            if not text.strip():
                raise ValueError(f"input.{index} is blank")
        return value

    def texts(self) -> list[str]:
        items = [self.input] if isinstance(self.input, str) else self.input
        return [item.text if isinstance(item, TextInput) else item for item in items]


class Moderation(BaseModel):
    flagged: bool = Field(description="the request was judged harmful, or falls under one of the server's policies")
    categories: dict[str, bool] = Field(description="OpenAI's categories (all false: none corresponds to ours), "
                                                    "prompt_harmfulness and each of the server's policies")
    category_scores: dict[str, float] = Field(description="0.0 for OpenAI's categories; our verdict's probability "
                                                          "of harmful (its label as 0/1 where it has none)")
    category_applied_input_types: dict[str, list[Literal["text"]]]
    verdicts: dict[str, str | None] = Field(description="our verdicts' labels")
    probabilities: dict[str, float | None] = Field(description="per verdict, the probability of its positive label")
    decided_by: dict[str, str] = Field(description="per verdict: screen or reasoning")


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[Moderation]


def openai_error(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    """An error readable both as OpenAI's (``error.message``, which its client shows) and as the service's
    (``detail``)."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": None}, "detail": message}, status,
                        headers=headers)


def moderation_of(result) -> Moderation:
    """The OpenAI-shaped answer for one of the service's results (a ``GuardResult`` model)."""
    verdict = result.verdicts[JUDGED]
    flagged = verdict.label == "harmful"
    score = verdict.p_positive if verdict.p_positive is not None else float(flagged)
    categories = {name: False for name in OPENAI_CATEGORIES}
    scores = {name: 0.0 for name in OPENAI_CATEGORIES}
    applied: dict[str, list] = {name: [] for name in OPENAI_CATEGORIES}
    for name in (JUDGED, CATEGORY_OF_VERDICT.get(JUDGED)):
        if name:
            categories[name], scores[name], applied[name] = flagged, score, ["text"]
    for name, category in (result.categories or {}).items():
        hit = category.label == "positive"
        categories[name], applied[name] = hit, ["text"]
        scores[name] = category.p if category.p is not None else float(hit)
    flagged = any(categories.values())
    return Moderation(flagged=flagged, categories=categories, category_scores=scores,
                      category_applied_input_types=applied, verdicts={JUDGED: verdict.label},
                      probabilities={JUDGED: verdict.p_positive}, decided_by={JUDGED: verdict.decided_by})


@router.post("/v1/moderations", response_model=ModerationResponse, tags=["drop-in"], dependencies=[Depends(bearer)],
             responses={status: {"model": ErrorResponse} for status in (401, 413, 422, 504)})
async def moderations(body: ModerationRequest, request: Request):
    """OpenAI's moderation API: each input judged as a user's request, batched and limited as /v1/classify."""
    serving = request.app.state.serving
    try:
        classified = await serving.classify(ClassifyRequest(items=[Item(prompt=text) for text in body.texts()]))
    except HTTPException as error:  # over a limit, or over the time limit
        return openai_error(error.status_code, error.detail, "invalid_request_error" if error.status_code < 500
                            else "timeout")
    return ModerationResponse(id=f"modr-{uuid.uuid4().hex}", model=classified.model,
                              results=[moderation_of(result) for result in classified.results])
