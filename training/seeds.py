"""Seed rows for synthesis: a request, an optional reply and whatever gold labels the source has.

The four GuardReasonerTrain sources are declarative entries mapping a hub dataset's columns to one row shape;
any local file in that shape works too (``prompt``, ``response``, and the verdict keys ``prompt_harmfulness``,
``response_refusal``, ``response_harmfulness`` as label columns; JSONL or CSV, bad lines reported by number).
The hub column mappings follow the datasets' cards; this project's tests check them on rows in those schemas, not
against the hub.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from guardreasoner.results import (
    LABELS,
    PROMPT_HARMFULNESS,
    RESPONSE_HARMFULNESS,
    RESPONSE_REFUSAL,
    VERDICT_KEYS,
)
from guardreasoner.rows import split_rows
from stagekit.label_specs import check_spec, read_label

# The core's verdict keys, and the values each may take.
LABEL_VALUES = LABELS
# A local seed file names its label columns by the verdict keys.
LOCAL_LABEL_COLUMNS = {key: key for key in VERDICT_KEYS}
MAX_LISTED_PROBLEMS = 20  # a wrong file has a problem on every line: name the first ones and count the rest


@dataclass
class Seed:
    id: str  # stable within its source, so an interrupted synthesis resumes after it
    source: str
    prompt: str
    response: str | None
    labels: dict[str, str]  # verdict key -> gold value, only for the tasks the source labels


@dataclass(frozen=True)
class SeedSource:
    """A hub dataset and how its rows map to seeds; ``labels`` maps verdict keys to label specs (see
    ``stagekit.label_specs``)."""

    repo: str
    split: str
    config: str | None = None
    prompt: str = "prompt"
    response: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    keep: tuple[str, str] | None = None  # (column, value): only rows where column == value

    def __post_init__(self):
        for spec in self.labels.values():
            check_spec(spec)


SOURCES: dict[str, SeedSource] = {
    "WildGuardTrain": SeedSource("allenai/wildguardmix", "train", "wildguardtrain", response="response",
                                 labels={PROMPT_HARMFULNESS: "prompt_harm_label",
                                         RESPONSE_REFUSAL: "response_refusal_label",
                                         RESPONSE_HARMFULNESS: "response_harm_label"}),
    "AegisTrain": SeedSource("nvidia/Aegis-AI-Content-Safety-Dataset-1.0", "train", prompt="text",
                             labels={PROMPT_HARMFULNESS: "majority:labels_0,labels_1,labels_2,labels_3,labels_4"},
                             keep=("text_type", "user_message")),
    "BeaverTails": SeedSource("PKU-Alignment/BeaverTails", "30k_train", response="response",
                              labels={RESPONSE_HARMFULNESS: "not:is_safe"}),
    "ToxicChat": SeedSource("lmsys/toxic-chat", "train", "toxicchat0124", prompt="user_input",
                            labels={PROMPT_HARMFULNESS: "flag:toxicity"}),
}


def from_record(record: dict, source_name: str, source: SeedSource, index: int) -> Seed | None:
    if source.keep and record.get(source.keep[0]) != source.keep[1]:
        return None
    prompt = record.get(source.prompt)
    if not isinstance(prompt, str) or not prompt.strip():
        return None
    response = record.get(source.response) if source.response else None
    labels = {key: read_label(record, spec, key) for key, spec in source.labels.items()}
    if not isinstance(response, str) or not response.strip():
        response = None
        labels = {key: value for key, value in labels.items() if key == PROMPT_HARMFULNESS}
    return Seed(f"{source_name}-{index}", source_name, prompt, response,
                {key: value for key, value in labels.items() if value is not None})


def load_hub_seeds(name: str) -> list[Seed]:
    from datasets import load_dataset

    source = SOURCES[name]
    data = load_dataset(source.repo, source.config, split=source.split)
    return [seed for index, record in enumerate(data) if (seed := from_record(record, name, source, index))]


def load_local_seeds(path: str | Path) -> list[Seed]:
    """Seeds from a local JSONL/CSV file; a bad row or label stops the load with its line number."""
    path = Path(path)
    rows, errors = split_rows(path)
    problems = [str(error) for error in errors]
    seeds = []
    for row in rows:
        labels = {}
        for key, column in LOCAL_LABEL_COLUMNS.items():
            value = row.extra.get(column)
            if value in (None, ""):
                continue
            value = str(value).strip().lower()
            if value not in LABEL_VALUES[key]:
                problems.append(f"line {row.line}: {column} must be one of {LABEL_VALUES[key]}, got {value!r}")
            labels[key] = value
        if not labels:
            columns = list(LOCAL_LABEL_COLUMNS.values())
            problems.append(f"line {row.line}: no gold label (give at least one of {columns})")
        # A "source" column (eval.split writes the benchmark) names the seed's source; else the file does.
        seeds.append(Seed(str(row.extra.get("id", f"{path.stem}-{row.line}")), str(row.extra.get("source", path.stem)),
                          row.prompt, row.response, labels))
    if problems:
        shown = "; ".join(problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - MAX_LISTED_PROBLEMS
        hint = ""
        if not rows and '"instruction"' in path.read_text(encoding="utf-8", errors="replace")[:4096]:
            hint = (" (this looks like GuardReasonerTrain rows; seeds are prompt/response rows with label columns:"
                    " `python -m eval.split export --format seeds` writes a split's rows that way)")
        raise ValueError(f"{path}: {shown}" + (f"; and {more} more" if more > 0 else "") + hint)
    return seeds


def load_seeds(spec: str) -> list[Seed]:
    """Seeds from a source name (its hub dataset) or a local file."""
    if spec in SOURCES:
        return load_hub_seeds(spec)
    if Path(spec).is_file():
        return load_local_seeds(spec)
    raise ValueError(f"{spec!r} is neither a seed source ({', '.join(SOURCES)}) nor a file")
