"""Prediction files (``<run>/<Benchmark>/generated_predictions.jsonl``): the one record type, with its one writer
and its one reader, used by every stage that writes or reads them (evaluation, scoring, the annotation workspace,
training, the analyses, ``python -m guardreasoner parse``).

A record we write, in this key order (the optional keys only where they are known):

    {"index", "prompt", "response", "model_input", "labels": {verdict key: gold}, "label", "predict",
     "input_tokens", "output_tokens", "latency_s", "finish_reason", "decided_by", "p_positive", "reasoning_output"}

``prompt``/``response`` are the user's texts; ``model_input`` is what the model read; ``label``/``predict`` are
upstream's fields, kept so upstream's evaluate.py still scores our runs. ``decided_by``/``p_positive`` say who
decided each verdict (the reasoning model or a screen) and with what probability; where a screen decided some,
``predict`` is an Answers block of the final verdicts and ``reasoning_output`` keeps the reasoning, if any ran.

Two older shapes are still read: upstream's own files (``prompt`` = the whole model input, one ``label``) and this
project's earlier files (``request`` = the user's text, ``labels`` keyed by the paper's task names,
``completion_tokens`` for ``output_tokens``), the latter with a one-line note.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .parser import ParsedOutput, parse, split_upstream_prompt
from .results import (
    LEGACY_TASK_KEYS,
    PROMPT_HARMFULNESS,
    RESPONSE_HARMFULNESS,
    RESPONSE_REFUSAL,
    current_verdict_keys,
    deprecated_names,
)
from .rows import append_lines, read_jsonl

PREDICTIONS_FILE = "generated_predictions.jsonl"
# Written together, and only for a record made from a guard result (a baseline without one writes latency alone).
_RESULT_FIELDS = ("input_tokens", "output_tokens", "latency_s", "finish_reason")


@dataclass
class Prediction:
    """One row of a prediction file: the user's texts, the gold labels, and what the guard wrote."""

    index: int  # the row's position in its benchmark file
    prompt: str
    response: str | None
    predict: str  # what scorers read: the model's output, or an Answers block where a screen decided
    labels: dict[str, str | None] | None = None  # verdict key -> gold label (None: unlabelled); None: upstream file
    model_input: str = ""
    label: str | None = None  # upstream's single label field, read from files without ``labels`` (written: derived)
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_s: float | None = None
    finish_reason: str | None = None
    decided_by: dict[str, str] | None = None
    p_positive: dict[str, float | None] | None = None
    reasoning_output: str | None = None
    # Where it was read from; not written.
    benchmark: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)  # 0-based position in its file
    texts_known: bool = field(default=True, compare=False)  # False: an upstream prompt that is no GuardReasoner input

    @classmethod
    def of_result(cls, index: int, prompt: str, response: str | None, labels: dict[str, str | None], predict: str,
                  result, *, model_input: str = "") -> Prediction:
        """A record of a ``GuardResult``: its token counts, timing, and who decided each verdict."""
        return cls(index, prompt, response, predict, dict(labels), model_input,
                   input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                   latency_s=result.latency_s, finish_reason=result.finish_reason,
                   decided_by={key: verdict.decided_by for key, verdict in result.verdicts.items()},
                   p_positive={key: verdict.p_positive for key, verdict in result.verdicts.items()})

    @property
    def output(self) -> str:
        return self.predict

    @property
    def gold(self) -> dict[str, str]:
        """The gold label of each verdict the row labels (upstream files: from their single ``label``)."""
        if self.labels is not None:
            return {key: label for key, label in self.labels.items() if label is not None}
        label = str(self.label or "").strip().lower()
        if label in ("refusal", "compliance"):
            return {RESPONSE_REFUSAL: label}
        if label in ("harmful", "unharmful"):
            # Upstream's files: a harm label answers the reply where there is one (true of every upstream
            # benchmark file, whose prompt-task rows have no reply).
            return {RESPONSE_HARMFULNESS if self.response is not None else PROMPT_HARMFULNESS: label}
        return {}

    def parsed(self, text: str | None = None) -> ParsedOutput:
        """``text`` (default: ``predict``) parsed as the guard parses what it wrote for this row: copies of the
        user's texts are not answers, and a row without a reply has no reply verdicts."""
        text = self.predict if text is None else text
        if not self.texts_known:
            return parse(text)
        return parse(text, user_texts=(self.prompt, self.response or ""), has_response=self.response is not None)

    def to_dict(self) -> dict:
        labels = self.labels or {}
        record = {"index": self.index, "prompt": self.prompt, "response": self.response,
                  "model_input": self.model_input, "labels": labels, "label": upstream_label(labels),
                  "predict": self.predict}
        if self.output_tokens is not None:
            record.update({name: getattr(self, name) for name in _RESULT_FIELDS})
        elif self.latency_s is not None:
            record["latency_s"] = self.latency_s
        for name in ("decided_by", "p_positive", "reasoning_output"):
            if getattr(self, name) is not None:
                record[name] = getattr(self, name)
        return record

    @classmethod
    def from_dict(cls, record: dict, *, benchmark: str = "", line: int = 0,
                  where: str = "a prediction file") -> Prediction:
        """Read a record of any of the three shapes (ours, this project's earlier one, upstream's)."""
        prompt, response, texts_known = _user_texts(record, where)
        labels = record.get("labels")
        if isinstance(labels, dict):
            labels = current_verdict_keys(labels, LEGACY_TASK_KEYS, where)
        elif labels is not None:
            raise ValueError(f"{where}: line {line + 1}: 'labels' must be an object")
        predict = record.get("predict")
        if not isinstance(predict, str):
            raise ValueError(f"{where}: line {line + 1} has no 'predict' text")
        label = record.get("label") if labels is None else None
        return cls(record.get("index", line), prompt, response, predict, labels, record.get("model_input") or "",
                   None if label is None else str(label), record.get("input_tokens"),
                   record.get("output_tokens", record.get("completion_tokens")), record.get("latency_s"),
                   record.get("finish_reason"), record.get("decided_by"), record.get("p_positive"),
                   record.get("reasoning_output"), benchmark, line, texts_known)


def upstream_label(labels: dict[str, str | None]) -> str:
    """Upstream's single ``label`` field: the label itself where one verdict is labelled, else all as JSON."""
    stated = [label for label in labels.values() if label is not None]
    return stated[0] if len(labels) == 1 and stated else json.dumps(labels)


def _user_texts(record: dict, where: str) -> tuple[str, str | None, bool]:
    """(prompt, response, known) of a record in any of the three shapes; an upstream prompt that is no
    GuardReasoner input is kept whole as the prompt, with ``known`` False."""
    if "model_input" in record:
        if not isinstance(record.get("prompt"), str):
            raise ValueError(f"{where}: a record with 'model_input' needs the user's 'prompt' text")
        return record["prompt"], record.get("response"), True
    if "request" in record:
        deprecated_names(where, "request", "prompt")
        return record["request"], record.get("response"), True
    model_input = record.get("prompt") or ""
    try:
        return (*split_upstream_prompt(model_input), True)
    except ValueError:
        return model_input, None, False


def append_predictions(path: str | Path, predictions: list[Prediction]) -> None:
    """Append records to a prediction file, synced: an interrupted run loses at most what was in flight."""
    append_lines(path, [json.dumps(prediction.to_dict(), ensure_ascii=False) for prediction in predictions])


def iter_predictions(path: str | Path, benchmark: str | None = None, *,
                     need_texts: bool = True) -> Iterator[Prediction]:
    """The records of one prediction file; with ``need_texts``, a record whose user texts cannot be told (an
    upstream prompt that is no GuardReasoner input) is an error rather than a row with unknown texts."""
    path = Path(path)
    for line, record in enumerate(read_jsonl(path)):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {line + 1} is not a JSON object")
        prediction = Prediction.from_dict(record, benchmark=benchmark or path.parent.name, line=line,
                                          where=str(path))
        if need_texts and not prediction.texts_known:
            raise ValueError(f"{path}: line {line + 1} has neither the user's texts nor a GuardReasoner input")
        yield prediction


def read_predictions(path: str | Path, benchmark: str | None = None, *, need_texts: bool = True) -> list[Prediction]:
    return list(iter_predictions(path, benchmark, need_texts=need_texts))


def read_run(run: str | Path) -> list[Prediction]:
    """Every benchmark's rows in a run folder, benchmarks in name order."""
    return [row for path in sorted(Path(run).glob(f"*/{PREDICTIONS_FILE}")) for row in read_predictions(path)]
