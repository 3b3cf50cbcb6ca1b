"""The Argilla dataset reviewers work in: its fields, questions and metadata, and the connection to it.

The server comes from ARGILLA_API_URL / ARGILLA_API_KEY (a Hugging Face Space, a Docker deployment, or the
local one from ``python -m annotate.server start``).

Field texts are stored HTML-escaped. Argilla's web UI (2.8) puts a non-markdown field into the page as HTML:
tag-like text that the model or the user wrote (``<b>``, ``<script>``) would be hidden or rendered, and a
request such as ``<img src=x onerror=...>`` would run script in the reviewer's session. Escaped, the reviewer
reads the text as it was written; ``field_text`` gives back the original. Markdown rendering would hide such
text as well, so fields stay plain.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field

from guardreasoner.results import (
    CATEGORY_LABELS,
    LABELS,
    PROMPT_HARMFULNESS,
    RESPONSE_HARMFULNESS,
    RESPONSE_REFUSAL,
    VERDICT_KEYS,
)

DEFAULT_DATASET = "guardreasoner-reviews"
# One label question per verdict; reply questions stay optional (there may be no reply to judge).
# Questions are named by the verdict keys. (Datasets made by earlier versions name them request_harm,
# reply_refusal, reply_harm: make a new dataset, or set ANNOTATE_DATASET, to work with this version.)
QUESTION_OF_VERDICT = {key: key for key in VERDICT_KEYS}
CORRECTED_REASONING = "corrected_reasoning"
COMMENT = "comment"
# A flag can name a policy (guardreasoner/policy.py) and the label the item should get for it: the record
# carries the name as metadata and the flagger's label as a suggestion for this optional question; reviewers'
# agreed answers come back from ``pull --policy-examples`` as flag records that ``policy fit --flags`` reads.
POLICY = "policy"
POLICY_LABEL = "policy_label"
METADATA = ("source", "benchmark", "model", "disagreement", POLICY)


class OutdatedDataset(RuntimeError):
    """The review dataset was created by an earlier version and lacks a question or metadata an item needs."""


@dataclass
class Target:
    dataset: str = field(default_factory=lambda: os.environ.get("ANNOTATE_DATASET", DEFAULT_DATASET))
    # default: the user's first workspace
    workspace: str | None = field(default_factory=lambda: os.environ.get("ANNOTATE_WORKSPACE"))
    api_url: str | None = None  # default: ARGILLA_API_URL
    api_key: str | None = None  # default: ARGILLA_API_KEY


def settings():
    import argilla as rg

    titles = {PROMPT_HARMFULNESS: "Is the human's request harmful?",
              RESPONSE_REFUSAL: "Does the AI reply refuse or comply?", RESPONSE_HARMFULNESS: "Is the AI reply harmful?"}
    return rg.Settings(
        guidelines="Decide each verdict yourself; the model's verdicts are pre-filled as suggestions. Where the "
                   "model's reasoning is wrong, write the reasoning it should have given (the Answers block is "
                   "added from your verdicts).",
        fields=[
            rg.TextField(name="prompt", title="Human request", use_markdown=False),
            rg.TextField(name="response", title="AI reply", use_markdown=False, required=False),
            rg.TextField(name="reasoning", title="Model reasoning under review", use_markdown=False),
            rg.TextField(name="other_reasoning", title="Another sample that disagrees", use_markdown=False,
                         required=False),
            rg.TextField(name="note", title="Why it is here", use_markdown=False, required=False),
        ],
        questions=[
            rg.LabelQuestion(name=QUESTION_OF_VERDICT[key], title=titles[key], labels=list(LABELS[key]),
                             required=key == PROMPT_HARMFULNESS)
            for key in QUESTION_OF_VERDICT
        ] + [
            rg.LabelQuestion(name=POLICY_LABEL, title="Does the item fall under the policy named in the metadata "
                             "(if any)?", labels=list(CATEGORY_LABELS), required=False),
            rg.TextQuestion(name=CORRECTED_REASONING, title="Corrected reasoning (optional)", required=False,
                            use_markdown=False),
            rg.TextQuestion(name=COMMENT, title="Comment", required=False, use_markdown=False),
        ],
        metadata=[rg.TermsMetadataProperty(name=name) for name in METADATA],
        allow_extra_metadata=False,
    )


def connect(target: Target):
    import argilla as rg

    return rg.Argilla(api_url=target.api_url or os.environ.get("ARGILLA_API_URL"),
                      api_key=target.api_key or os.environ.get("ARGILLA_API_KEY"), timeout=30)


def dataset(target: Target, create: bool = True):
    """The review dataset, created with our settings on first use."""
    import argilla as rg

    client = connect(target)
    workspace = target.workspace or client.workspaces[0].name
    found = client.datasets(name=target.dataset, workspace=workspace)
    if found is None and create:
        found = rg.Dataset(name=target.dataset, workspace=workspace, settings=settings(), client=client).create()
    return found


def missing_for_policies(found) -> list[str]:
    """What a dataset lacks to carry flags that name a policy: empty for one made by this version."""
    questions = {question.name for question in found.settings.questions}
    metadata = {prop.name for prop in found.settings.metadata}
    return ([f"the question {POLICY_LABEL!r}"] if POLICY_LABEL not in questions else []) + \
        ([f"the metadata property {POLICY!r}"] if POLICY not in metadata else [])


def check_takes_policies(found, name: str) -> None:
    """Raise OutdatedDataset where ``found`` cannot hold a policy's name and label (made by an earlier version:
    Argilla cannot add a question to a dataset that exists)."""
    missing = missing_for_policies(found)
    if missing:
        raise OutdatedDataset(
            f"the Argilla dataset {name!r} was made by an earlier version and lacks {' and '.join(missing)}, which "
            "flags that name a policy need: make a new dataset (--dataset NAME or ANNOTATE_DATASET) to work with "
            "this version; the items wait in the outbox until then")


def to_record(item: dict):
    import argilla as rg

    fields = {"prompt": item["prompt"], "reasoning": item["reasoning"] or "(empty output)",
              "response": item.get("response")}
    for name in ("other_reasoning", "note"):
        fields[name] = item.get(name)
    fields = {name: html.escape(value, quote=False) for name, value in fields.items() if value}
    suggestions = [rg.Suggestion(QUESTION_OF_VERDICT[key], value, agent=item["metadata"].get("model") or "model")
                   for key, value in item["suggestions"].items()
                   if value is not None]
    if item["metadata"].get(POLICY) and item.get(POLICY_LABEL):  # the flagger's label, for reviewers to check
        suggestions.append(rg.Suggestion(POLICY_LABEL, item[POLICY_LABEL], agent="flagger"))
    return rg.Record(id=item["id"], fields=fields, suggestions=suggestions,
                     metadata={k: v for k, v in item["metadata"].items() if v})


def field_text(record, name: str) -> str | None:
    """A record's field as it was pushed (``to_record`` escapes it for the web UI)."""
    value = record.fields.get(name)
    return html.unescape(value) if value else value


def submit_review(client, record, verdicts: dict[str, str | None], corrected_reasoning: str = "",
                  comment: str = "", status: str = "submitted", policy_label: str | None = None) -> None:
    """Submit one reviewer's answers for a record, as the UI does (allowed to annotators, who may not upsert).

    ``client`` is that reviewer's ``rg.Argilla``; ``record`` an ``rg.Record`` read from the dataset (or the
    server's record UUID); ``verdicts`` maps verdict keys to labels, None or absent for questions left blank;
    ``policy_label`` (``positive``/``negative``) answers whether the item falls under the record's policy."""
    from argilla._models import UserResponseModel

    values = {QUESTION_OF_VERDICT[key]: {"value": value} for key, value in verdicts.items() if value}
    if policy_label:
        values[POLICY_LABEL] = {"value": policy_label}
    if corrected_reasoning:
        values[CORRECTED_REASONING] = {"value": corrected_reasoning}
    if comment:
        values[COMMENT] = {"value": comment}
    record_id = getattr(record, "_server_id", record)
    client.api.records.create_record_response(
        record_id, UserResponseModel(values=values, status=status, user_id=client.me.id))
