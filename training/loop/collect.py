"""Collect a round's corrections: the app's flags and the reviews submitted in Argilla since the last round.

A correction is one item (a request and its reply, if any) with the labels a person says are right. Flags come
from the app's queue (``FlagRecord`` lines; the last record of a flag wins, as everywhere); reviews from
Argilla through annotate's own pull code. Each input is named by a fingerprint of what it says (a flag's id and
its labels, a review record's id and every reviewer's answers), so an input an earlier round used is not new,
while a flag changed or a review added to since then is.

A correction of a custom policy (a flag's or a review's ``policy`` and its ``policy_label``) is a correction of its
own, keyed by the policy and the item, carrying ``policy`` and ``label``; the round refits that policy
(``policies.py``) where it was given the policy's folder.

Rules: reviewers who disagree on a verdict or a policy label are a conflict (reported, left out; never guessed);
a review beats a flag of the same item; a flag with no label chosen is left out and says why. An unreachable
Argilla server is reported as ``argilla_error``: the round then stops and uses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from annotate.pull import Review, agreed_policy_label, agreed_verdicts
from guardreasoner.records import FlagRecord, latest_flags
from guardreasoner.results import CATEGORY_LABELS, LABELS, PROMPT_HARMFULNESS
from guardreasoner.rows import read_jsonl

FLAG_QUEUE_ENV = "GUARDREASONER_FLAG_QUEUE"  # webapp/flags.py reads the same variable
DEFAULT_FLAG_QUEUE = Path("flagged") / "queue.jsonl"
SOURCE_FLAG, SOURCE_REVIEW = "flag", "review"


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


def item_key(prompt: str, response: str | None) -> str:
    """One item, whoever flagged or reviewed it: a correction of it replaces an earlier one."""
    return "item-" + digest([prompt, response])


def default_flag_queue() -> Path:
    return Path(os.environ.get(FLAG_QUEUE_ENV, DEFAULT_FLAG_QUEUE))


def read_flags(queue: Path) -> list[FlagRecord]:
    if not queue.is_file():
        return []
    return latest_flags([FlagRecord.from_dict(record, str(queue)) for record in read_jsonl(queue)])


def argilla_reviews() -> list[Review] | None:
    """Every record's submitted reviews on the configured Argilla server; None where none is configured
    (ARGILLA_API_URL unset). Raises whatever the client raises when the server cannot be reached."""
    if not os.environ.get("ARGILLA_API_URL"):
        return None
    from annotate.pull import reviews_from_argilla
    from annotate.workspace import Target

    try:
        return reviews_from_argilla(Target())
    except LookupError:  # no review dataset yet: nothing has been pushed, so nothing was reviewed
        return []


@dataclass
class Collected:
    corrections: list[dict] = field(default_factory=list)  # new this round, one per item
    inputs: list[str] = field(default_factory=list)  # fingerprints of the new inputs this round reads
    reviews: list[Review] = field(default_factory=list)  # new, agreed reviews: where DPO pairs come from
    left_out: list[dict] = field(default_factory=list)  # {"id", "source", "reason"}
    conflicts: list[dict] = field(default_factory=list)
    seen: dict = field(default_factory=dict)  # how many flags and reviews there were, new or not
    notes: list[str] = field(default_factory=list)
    argilla_error: str | None = None

    def summary(self) -> dict:
        return {"seen": self.seen, "new_inputs": len(self.inputs), "corrections": len(self.corrections),
                "left_out": len(self.left_out), "conflicts": len(self.conflicts), "notes": self.notes,
                "argilla_error": self.argilla_error}


def usable_labels(labels: dict[str, str | None], response: str | None) -> tuple[dict[str, str], list[str]]:
    """The labels that can be learnt (known label, a reply to judge for reply verdicts) and what was dropped."""
    kept, dropped = {}, []
    for key, label in labels.items():
        if not label:
            continue
        if key not in LABELS or label not in LABELS[key]:
            dropped.append(f"{key}={label!r} is no label of this guard")
        elif key != PROMPT_HARMFULNESS and response is None:
            dropped.append(f"{key}: the item has no reply to judge")
        else:
            kept[key] = label
    return kept, dropped


def correction(prompt: str, response: str | None, labels: dict[str, str], source: str, origin: str,
               fingerprint: str) -> dict:
    return {"key": item_key(prompt, response), "prompt": prompt, "response": response, "labels": labels,
            "source": source, "origin": origin, "fingerprint": fingerprint}


def policy_correction(policy: str, label: str, prompt: str, response: str | None, source: str, origin: str,
                      fingerprint: str) -> dict:
    """A correction of one custom policy's label for an item (``positive``: it falls under the policy)."""
    return {"key": f"policy-{digest([policy, prompt, response])}", "policy": policy, "label": label,
            "prompt": prompt, "response": response, "source": source, "origin": origin, "fingerprint": fingerprint}


def is_policy_correction(record: dict) -> bool:
    return bool(record.get("policy"))


def _keep(found: dict[str, dict], item: dict, out: Collected, review_id: str | None = None) -> None:
    """This round's correction of an item; a review replaces a flag of the same item (saying so)."""
    earlier = found.get(item["key"])
    if review_id and earlier is not None and earlier["source"] == SOURCE_FLAG and \
            (earlier.get("labels"), earlier.get("label")) != (item.get("labels"), item.get("label")):
        said = item.get("labels") or f"{item['policy']}={item['label']}"
        out.left_out.append({"id": earlier["origin"], "source": SOURCE_FLAG,
                             "reason": f"the review {review_id} of the same item says {said}: the review wins"})
    found[item["key"]] = item


def collect(flag_queue: Path | None, reviews: Callable[[], list[Review] | None] | None,
            used: set[str]) -> Collected:
    """What is new since the inputs ``used`` by earlier rounds. ``reviews`` returns every submitted review
    (None: no server configured); a failure to reach the server is kept as ``argilla_error``."""
    out = Collected()
    found: dict[str, dict] = {}  # item key -> this round's correction
    flags = read_flags(flag_queue) if flag_queue else []
    out.seen["flags"] = len(flags)
    for flag in flags:
        fingerprint = f"flag:{flag.id}:{digest([flag.corrected, flag.policy, flag.policy_label])}"
        if fingerprint in used:
            continue
        out.inputs.append(fingerprint)
        labels, dropped = usable_labels(flag.corrected, flag.response)
        for reason in dropped:
            out.left_out.append({"id": flag.id, "source": SOURCE_FLAG, "reason": reason})
        policy_label = flag.policy_label if flag.policy and flag.policy_label in CATEGORY_LABELS else None
        if flag.policy and flag.policy_label and not policy_label:
            out.left_out.append({"id": flag.id, "source": SOURCE_FLAG, "reason": f"policy label "
                                 f"{flag.policy_label!r} is not one of {', '.join(CATEGORY_LABELS)}"})
        if not labels and not policy_label:
            out.left_out.append({"id": flag.id, "source": SOURCE_FLAG, "reason": "no label chosen"})
            continue
        if labels:
            _keep(found, correction(flag.prompt, flag.response, labels, SOURCE_FLAG, flag.id, fingerprint), out)
        if policy_label:
            _keep(found, policy_correction(flag.policy, policy_label, flag.prompt, flag.response, SOURCE_FLAG,
                                           flag.id, fingerprint), out)
    try:
        submitted = reviews() if reviews else None
    except Exception as error:  # noqa: BLE001 - any failure to reach Argilla keeps the round's inputs
        out.argilla_error = f"{type(error).__name__}: {error}"
        return out
    if submitted is None:
        out.notes.append("no Argilla server configured (ARGILLA_API_URL): reviews were not collected")
        submitted = []
    out.seen["reviews"] = len(submitted)
    for review in submitted:
        fingerprint = f"review:{review.id}:{digest(review.by_user)}"
        if fingerprint in used:
            continue
        out.inputs.append(fingerprint)
        verdicts, conflict = agreed_verdicts(review)
        policy_label, policy_conflict = agreed_policy_label(review)
        for disagreement in (conflict, policy_conflict):
            if disagreement is not None:
                out.conflicts.append(disagreement)
                out.left_out.append({"id": review.id, "source": SOURCE_REVIEW, "reason": f"reviewers disagree on "
                                     f"{disagreement['verdict']}: {disagreement['reviews']}"})
        labels, dropped = usable_labels(verdicts, review.response)
        for reason in dropped:
            out.left_out.append({"id": review.id, "source": SOURCE_REVIEW, "reason": reason})
        if not labels and not policy_label:
            if conflict is None and policy_conflict is None:
                out.left_out.append({"id": review.id, "source": SOURCE_REVIEW, "reason": "no verdict answered"})
            continue
        if labels:
            out.reviews.append(review)
            _keep(found, correction(review.prompt, review.response, labels, SOURCE_REVIEW, review.id, fingerprint),
                  out, review.id)
        if policy_label:
            _keep(found, policy_correction(review.policy, policy_label, review.prompt, review.response,
                                           SOURCE_REVIEW, review.id, fingerprint), out, review.id)
    out.corrections = list(found.values())
    return out


def current_corrections(records: list[dict]) -> dict[str, dict]:
    """Every correction ever accepted, one per item: the last one, except that a flag never replaces a review
    (a reviewer checked it); a ``withdrawn`` record takes the item out."""
    current: dict[str, dict] = {}
    for record in records:
        if record.get("withdrawn"):
            current.pop(record["key"], None)
            continue
        earlier = current.get(record["key"])
        if earlier is not None and earlier["source"] == SOURCE_REVIEW and record["source"] == SOURCE_FLAG:
            continue
        current[record["key"]] = record
    return current
