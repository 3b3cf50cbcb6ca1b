"""What reviewers see, built from the three places disagreements come from, as plain dicts (no Argilla here).

An item is one request (and reply) with the model output under review, an optional second output that
disagrees with it, the model's verdicts as suggestions, and metadata. Its id comes from its content, so pushing
the same disagreement twice names the same record.

- app flags: the app's local flag queue (webapp/flags.py writes it);
- evaluation errors: an ``eval run`` folder, rows whose parsed verdict differs from the gold label;
- mined hard samples: a ``training.mine`` pairs file, whose right and wrong samples disagree.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from guardreasoner.parser import parse_for, split_upstream_prompt
from guardreasoner.predictions import read_run
from guardreasoner.records import FlagRecord, latest_flags
from guardreasoner.results import CATEGORY_LABELS
from guardreasoner.rows import read_jsonl

SOURCE_APP_FLAG = "app_flag"
SOURCE_EVAL_ERROR = "eval_error"
SOURCE_MINED = "mined_hard_sample"


def item_id(prompt: str, response: str | None, outputs: list[str]) -> str:
    digest = hashlib.sha256(json.dumps([prompt, response, outputs], ensure_ascii=False).encode()).hexdigest()
    return digest[:24]


def verdicts_of(output: str, prompt: str, response: str | None) -> dict[str, str | None]:
    return parse_for(output, prompt, response).labels


def make_item(prompt: str, response: str | None, output: str, *, source: str, model: str | None,
              disagreement: str, other_output: str | None = None, benchmark: str | None = None,
              note: str = "", policy: str | None = None, policy_label: str | None = None) -> dict:
    """One item; ``policy`` names a policy the item is asked about and ``policy_label`` (positive/negative)
    is what the flagger said, a suggestion reviewers confirm or overrule."""
    outputs = [output] + ([other_output] if other_output else [])
    return {
        "id": item_id(prompt, response, outputs),
        "prompt": prompt,
        "response": response,
        "reasoning": output,
        "other_reasoning": other_output,
        "note": note,
        "suggestions": verdicts_of(output, prompt, response),
        "metadata": {"source": source, "benchmark": benchmark or "", "model": model or "",
                     "disagreement": disagreement, "policy": policy or ""},
        "policy_label": policy_label if policy and policy_label in CATEGORY_LABELS else None,
    }


def from_flags(queue: str | Path) -> list[dict]:
    """Items for the app's flags; the flagger's corrections and comment become the note reviewers read."""
    items = []
    for flag in latest_flags([FlagRecord.from_dict(record, str(queue)) for record in read_jsonl(queue)]):
        corrected = {k: v for k, v in flag.corrected.items() if v}
        wrong = sorted(k for k, v in corrected.items() if v != flag.model_verdicts.get(k))
        said = [f"flagged as {k}: {v}" for k, v in corrected.items()]
        if flag.policy:
            said.append(f"for the policy {flag.policy} the item is {flag.policy_label or '(no label given)'}")
        note = "; ".join(said + ([f"comment: {flag.comment}"] if flag.comment else []))
        items.append(make_item(flag.prompt, flag.response, flag.output,
                               source=SOURCE_APP_FLAG, model=flag.model,
                               disagreement="flag:" + ",".join(wrong) if wrong else "flag", note=note,
                               policy=flag.policy, policy_label=flag.policy_label))
    return items


def from_eval_run(run: str | Path, model: str | None = None) -> list[dict]:
    """Items for the rows of an ``eval run`` folder (or upstream's) where a parsed verdict differs from gold."""
    items = []
    for row in read_run(run):
        predicted = row.parsed().labels
        wrong = sorted(key for key, gold in row.gold.items() if predicted.get(key) != gold)
        if wrong:
            items.append(make_item(row.prompt, row.response, row.output, source=SOURCE_EVAL_ERROR,
                                   model=model or Path(run).name, benchmark=row.benchmark,
                                   disagreement="gold:" + ",".join(wrong)))
    return items


def from_mined(pairs: str | Path, model: str | None = None) -> list[dict]:
    """Items for mined hard pairs: the wrong sample under review, the right one beside it."""
    items = []
    for pair in read_jsonl(pairs):
        prompt, response = split_upstream_prompt(pair["prompt"])
        items.append(make_item(prompt, response, pair["rejected"], other_output=pair["chosen"],
                               source=SOURCE_MINED, model=model, benchmark=pair.get("source"),
                               disagreement="samples:" + pair.get("task", "")))
    return items
