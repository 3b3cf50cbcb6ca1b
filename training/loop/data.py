"""The rows a round learns from and is judged on, all from the committed benchmark splits.

- fit: every split benchmark's training half less its validation part (what the shipped heads were fitted
  on), leaving out rows that are also held-out rows somewhere (``eval.split.export_rows`` decides, as for the
  shipped screen);
- validation: where temperatures and thresholds are chosen;
- test: the 13 cells' rows: each split benchmark's test half and the whole of the unseen benchmarks, a seeded
  ``sample`` of each (``rows.seeded_sample``: the same rows for the shipped screen and the candidate).

The loop chains the stages, so it reads the evaluation's benchmark loader and splits as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guardreasoner.results import POSITIVE, VERDICT_KEYS
from guardreasoner.rows import seeded_sample
from stagekit.splits import SPLIT_BENCHMARKS, UNSEEN_BENCHMARKS, load_split


@dataclass
class Item:
    prompt: str
    response: str | None
    labels: dict[str, str]  # verdict key -> gold label, for the verdicts this row labels
    source: str = ""

    @property
    def pair(self) -> tuple[str, str | None]:
        return self.prompt, self.response


def label_matrix(items: list[Item]) -> np.ndarray:
    """Rows x verdicts: 1 positive, 0 negative, -1 no label."""
    out = np.full((len(items), len(VERDICT_KEYS)), -1.0)
    for row, item in enumerate(items):
        for column, key in enumerate(VERDICT_KEYS):
            if key in item.labels:
                out[row, column] = float(item.labels[key] == POSITIVE[key])
    return out


def training_part(data_dir: Path, part: str, splits_dir: Path | None = None, sample: int | None = None,
                  seed: int = 0) -> list[Item]:
    """A training part (``fit`` or ``validation``) of every split benchmark, one item per (prompt, response)
    with its labels gathered (the first label of a verdict wins, as ``training.screen.merge`` does)."""
    from eval.split import export_rows

    merged: dict[tuple, Item] = {}
    for row in export_rows(list(SPLIT_BENCHMARKS), Path(data_dir), part, splits_dir, form="seeds"):
        item = merged.setdefault((row["prompt"], row["response"]), Item(row["prompt"], row["response"], {},
                                                                        row["source"]))
        for key in VERDICT_KEYS:
            if row.get(key):
                item.labels.setdefault(key, row[key])
    return seeded_sample(list(merged.values()), sample, seed)


def test_rows(data_dir: Path, splits_dir: Path | None = None, sample: int | None = None,
              seed: int = 0) -> dict[str, list[Item]]:
    """Per benchmark, the rows its cells are scored on (gold labels None where a task is unlabelled)."""
    from eval.data import load_benchmark

    out = {}
    for benchmark in SPLIT_BENCHMARKS + UNSEEN_BENCHMARKS:
        rows = load_benchmark(benchmark, Path(data_dir))
        if benchmark in SPLIT_BENCHMARKS:
            split = load_split(benchmark, splits_dir)
            if split.rows != len(rows):
                raise ValueError(f"{benchmark}: the split is of a {split.rows}-row file; {data_dir} has "
                                 f"{len(rows)} rows")
            rows = [rows[index] for index in split.test]
        chosen = seeded_sample(rows, sample, seed)
        out[benchmark] = [Item(row.prompt, row.response, {k: v for k, v in row.labels.items() if v}, benchmark)
                          for row in chosen]
    return out


def held_out_pairs(data_dir: Path, splits_dir: Path | None = None) -> set[tuple[str, str | None]]:
    """Every (prompt, response) some cell is scored on (any sample of it): a correction of such an item is kept
    out of training, so the gate never scores a row the candidate was trained on."""
    from eval.split import held_out_pairs as pairs

    return pairs(Path(data_dir), splits_dir)
