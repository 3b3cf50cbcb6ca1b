"""Submitted reviews -> weighted preference pairs for HS-DPO (and SFT rows from corrected reasoning).

For each record with submitted reviews: the reviewers' verdicts must agree (otherwise the record is reported as
a conflict, never guessed). Chosen is the reviewer's corrected reasoning closed by an Answers block of their
verdicts, or else a model output whose verdicts all agree with the review; rejected is a model output that
contradicts it. A review that agrees with every output gives no pair; so does one that contradicts every
output without a corrected reasoning. The pairs file is what ``training.hs_dpo`` reads as it is.

A record whose item names a policy (metadata ``policy``) may also carry reviewers' answers to ``policy_label``:
where they agree, the record becomes a flag record (``guardreasoner.records.FlagRecord``, source ``argilla``)
naming the policy and the label, which ``python -m guardreasoner policy fit NAME --flags FILE`` adds to that
policy's examples; where they disagree, a conflict, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guardreasoner.parser import answers_header_starts, find_answers_blocks
from guardreasoner.records import FlagRecord, training_row
from guardreasoner.results import PROMPT_HARMFULNESS, REPLY_VERDICT_KEYS, VERDICT_KEYS, answers_block
from guardreasoner.template import user_turn

from .items import verdicts_of
from .workspace import (
    COMMENT,
    CORRECTED_REASONING,
    POLICY,
    POLICY_LABEL,
    QUESTION_OF_VERDICT,
    Target,
    dataset,
    field_text,
)

DEFAULT_WEIGHT = 1.5  # above every mined pair (their weights lie in [0.8, 1.2]): a person checked these


@dataclass
class Review:
    """What one record's submitted reviews say, read out of Argilla (or built by hand in tests)."""

    id: str
    prompt: str
    response: str | None
    outputs: list[str]
    by_user: dict[str, dict]  # user id -> {verdict key: label, "corrected_reasoning": ..., "comment": ...,
    #                                       "policy_label": "positive" | "negative"}
    source: str = ""
    policy: str = ""  # the policy the item is asked about, if any


@dataclass
class PullResult:
    pairs: list[dict] = field(default_factory=list)
    sft_rows: list[dict] = field(default_factory=list)
    conflicts: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # no pair: the review agrees with every output, or none
    policy_examples: list[dict] = field(default_factory=list)  # FlagRecord dicts: what ``policy fit --flags`` reads


def close_with_answers(reasoning: str, verdicts: dict[str, str | None]) -> str:
    """The reviewer's reasoning, with whatever Answers block they wrote (even a malformed one) replaced by one
    stating their verdicts."""
    cut = len(reasoning)
    headers = answers_header_starts(reasoning)
    if headers:
        cut = headers[-1]
    blocks = find_answers_blocks(reasoning)
    if blocks and not reasoning[blocks[-1].end :].strip():
        cut = min(cut, blocks[-1].start)
    body = reasoning[:cut]
    body = body.rstrip().removesuffix("---").rstrip()
    return f"{body}\n\n---\n\n{answers_block(verdicts)}"


def agreed_verdicts(review: Review) -> tuple[dict[str, str], dict | None]:
    """The verdicts a record's reviewers agree on, and None; or ({}, a conflict report) where two of them
    disagree on a verdict. Without a reply only the request's verdict is read (nothing else to judge)."""
    verdicts: dict[str, str] = {}
    keys = VERDICT_KEYS if review.response is not None else (PROMPT_HARMFULNESS,)
    for answers in review.by_user.values():
        for key in keys:
            value = answers.get(key)
            if value is None:
                continue
            if verdicts.setdefault(key, value) != value:
                disagreeing = {u: a.get(key) for u, a in review.by_user.items() if a.get(key)}
                return {}, {"id": review.id, "verdict": key, "reviews": disagreeing}
    return verdicts, None


def agreed_policy_label(review: Review) -> tuple[str | None, dict | None]:
    """The label for the record's policy its reviewers agree on (None where it names no policy or nobody
    answered), and None; or (None, a conflict report) where two of them answered differently."""
    if not review.policy:
        return None, None
    answered = {user: answers[POLICY_LABEL] for user, answers in review.by_user.items() if answers.get(POLICY_LABEL)}
    if len(set(answered.values())) > 1:
        return None, {"id": review.id, "verdict": POLICY_LABEL, "policy": review.policy, "reviews": answered}
    return next(iter(answered.values()), None), None


def policy_example(review: Review, label: str) -> dict:
    """The record as a flag naming its policy and the reviewers' label (the line ``policy fit --flags`` reads);
    its verdict corrections are the reviewers' agreed verdicts, where they agree."""
    output = review.outputs[0] if review.outputs else ""
    verdicts, _ = agreed_verdicts(review)
    comments = [answers[COMMENT] for answers in review.by_user.values() if answers.get(COMMENT)]
    return FlagRecord(review.id, review.prompt, review.response, output,
                      verdicts_of(output, review.prompt, review.response) if output else {}, verdicts,
                      "; ".join(comments), source="argilla", policy=review.policy, policy_label=label).to_dict()


def review_pair(review: Review, weight: float = DEFAULT_WEIGHT) -> tuple[str, dict]:
    """("pair", pair) or ("conflict" | "skipped", report) for one record's reviews."""
    verdicts, conflict = agreed_verdicts(review)
    if conflict is not None:
        return "conflict", conflict
    corrected = next((a[CORRECTED_REASONING] for a in review.by_user.values() if a.get(CORRECTED_REASONING)), None)
    parsed = [verdicts_of(output, review.prompt, review.response) for output in review.outputs]
    agreeing = [o for o, p in zip(review.outputs, parsed) if all(p.get(k) == v for k, v in verdicts.items())]
    contradicting = [(o, p) for o, p in zip(review.outputs, parsed) if o not in agreeing]
    if not contradicting:
        return "skipped", {"id": review.id, "reason": "the review agrees with every model output"}
    full = dict(verdicts)
    if review.response is None:
        full.update(dict.fromkeys(REPLY_VERDICT_KEYS))
    chosen = close_with_answers(corrected, full) if corrected else (agreeing[0] if agreeing else None)
    if chosen is None:
        return "skipped", {"id": review.id, "reason": "no model output agrees and no corrected reasoning was given"}
    rejected, rejected_verdicts = contradicting[0]
    task = next(k for k in VERDICT_KEYS if k in verdicts and rejected_verdicts.get(k) != verdicts[k])
    return "pair", {
        "prompt": user_turn(review.prompt, review.response),
        "chosen": chosen,
        "rejected": rejected,
        "weight": weight,
        "task": task,
        "source": "review:" + (review.source or "unknown"),
        "id": review.id,
        "corrected": corrected is not None,
    }


def reviews_from_argilla(target: Target) -> list[Review]:
    import argilla as rg

    found = dataset(target, create=False)
    if found is None:
        raise LookupError(f"no dataset {target.dataset!r} on the Argilla server")
    submitted = rg.Query(filter=rg.Filter(("response.status", "==", "submitted")))
    reviews = []
    for record in found.records(query=submitted, with_responses=True):
        by_user: dict[str, dict] = {}
        key_of = {question: key for key, question in QUESTION_OF_VERDICT.items()}
        for response in record.responses:
            if getattr(response.status, "value", response.status) != "submitted":
                continue
            answers = by_user.setdefault(str(response.user_id), {})
            name = response.question_name
            if name in key_of:
                answers[key_of[name]] = response.value
            elif name in (CORRECTED_REASONING, COMMENT, POLICY_LABEL) and response.value:
                answers[name] = response.value
        outputs = [field_text(record, name) for name in ("reasoning", "other_reasoning") if record.fields.get(name)]
        metadata = record.metadata or {}
        reviews.append(Review(str(record.id), field_text(record, "prompt"), field_text(record, "response") or None,
                              outputs, by_user, metadata.get("source", ""), metadata.get(POLICY) or ""))
    return reviews


def pull(reviews: list[Review], weight: float = DEFAULT_WEIGHT) -> PullResult:
    result = PullResult()
    for review in reviews:
        kind, payload = review_pair(review, weight)
        if kind == "pair":
            result.pairs.append(payload)
            if payload["corrected"]:
                result.sft_rows.append(training_row(review.prompt, review.response, payload["chosen"],
                                                    source="review", id=review.id))
        else:
            (result.conflicts if kind == "conflict" else result.skipped).append(payload)
        label, conflict = agreed_policy_label(review)
        if conflict is not None:
            result.conflicts.append(conflict)
        elif label is not None:
            result.policy_examples.append(policy_example(review, label))
    return result

