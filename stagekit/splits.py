"""The committed train/test split of the benchmarks that lend rows to training (``assets/splits/*.json``).

Every benchmark but OpenAIModeration and SafeRLHF is cut into a training half and a test half (seeded, stratified
by label) so that screens, encoders and retrained guards can learn in-distribution without touching the rows they
are scored on; a validation part, carved from the training half, is where epochs and thresholds are chosen.
OpenAIModeration and SafeRLHF are never trained on. The first three (``TABLE_BENCHMARKS``) were split first and
are the test halves of the held-out table every screen is compared on; the other six were added with the encoder
(issue #31), by the same method and seed, without changing the first three's indices. A split is a list of row
indices into the benchmark file, so anyone can check that no test row was trained on. ``python -m eval.split
make`` wrote the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from guardreasoner.shipped import assets_dir

# The repository's assets/splits, found as every asset is (shipped.py). Evaluation and training read them from a
# checkout; running the guard never does, so the wheel leaves them out.
SPLITS_DIR = assets_dir() / "splits"
TABLE_BENCHMARKS = ("ToxicChat", "WildGuardTest", "BeaverTails")
SPLIT_BENCHMARKS = TABLE_BENCHMARKS + ("AegisSafetyTest", "SimpleSafetyTests", "HarmBenchPrompt", "HarmBenchResponse",
                                       "XSTestResponseHarmful", "XSTestResponseRefusal")
UNSEEN_BENCHMARKS = ("OpenAIModeration", "SafeRLHF")  # wholly held out, as in the paper
PARTS = ("train", "fit", "validation", "test")


@dataclass(frozen=True)
class Split:
    """Row indices of one benchmark file. ``validation`` is a part of ``train``; ``fit`` is the rest of it."""

    benchmark: str
    rows: int  # rows in the benchmark file the indices point into
    seed: int
    train: tuple[int, ...]
    validation: tuple[int, ...]
    test: tuple[int, ...]

    @property
    def fit(self) -> tuple[int, ...]:
        """The training half less the validation rows: what heads are fitted on."""
        held = set(self.validation)
        return tuple(index for index in self.train if index not in held)

    def part(self, name: str) -> tuple[int, ...]:
        if name not in PARTS:
            raise ValueError(f"unknown split part {name!r}; choose one of {', '.join(PARTS)}")
        return getattr(self, name)


def split_path(benchmark: str, folder: str | Path | None = None) -> Path:
    return Path(folder or SPLITS_DIR) / f"{benchmark}.json"


def load_split(benchmark: str, folder: str | Path | None = None) -> Split:
    """The committed split of ``benchmark``; a benchmark without one (the unseen ones) is an error."""
    path = split_path(benchmark, folder)
    if not path.is_file() and not path.parent.is_dir():
        raise FileNotFoundError(f"{path.parent}: no split folder here (the committed splits are in a checkout's"
                                " assets/splits; an installed wheel does not carry them)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no split for {benchmark}; splits exist for {', '.join(SPLIT_BENCHMARKS)}"
                                f" ({', '.join(UNSEEN_BENCHMARKS)} are never split: they stay wholly unseen)")
    data = json.loads(path.read_text(encoding="utf-8"))
    missing = [key for key in ("benchmark", "rows", "seed", "train", "validation", "test") if key not in data]
    if missing:
        raise ValueError(f"{path}: split file lacks {', '.join(missing)}")
    return Split(data["benchmark"], data["rows"], data["seed"], tuple(data["train"]), tuple(data["validation"]),
                 tuple(data["test"]))
