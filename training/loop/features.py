"""The frozen encoder body's view of items, computed once: the mask-weighted mean of its last layer, the vector
the verdict heads read. The loop retrains only the heads, so every release shares the body, and these vectors
are kept on disk by item and body (``STATE/features/<body digest>.npz``): a later round computes only the items
it has not seen.

Also here: a screen folder's heads as arrays (weights, biases, temperatures, cuts), and their probabilities on
such vectors, which equal what the screen serves in ``off`` in float32 (``logits = heads(mean)``, as
``EncoderScreen.read`` computes them).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guardreasoner.encoder import WEIGHTS_FILE, load_encoder_screen
from guardreasoner.results import VERDICT_KEYS
from guardreasoner.screen import CARD_FILE

from .collect import item_key

HEAD_TENSORS = ("heads.weight", "heads.bias")
CHUNK = 1024  # items read between two saves of the cache


def read_card(folder: Path) -> dict:
    return json.loads((Path(folder) / CARD_FILE).read_text(encoding="utf-8"))


def body_digest(folder: Path) -> str:
    """A digest of the stored encoder body (every tensor but the heads) and the length it reads to."""
    from safetensors import safe_open

    hasher = hashlib.sha256()
    with safe_open(str(Path(folder) / WEIGHTS_FILE), framework="pt") as weights:
        for name in sorted(weights.keys()):
            if name.split(".int8_scale")[0] not in HEAD_TENSORS:
                hasher.update(name.encode())
                hasher.update(weights.get_tensor(name).numpy().tobytes())
    hasher.update(str(read_card(folder).get("max_length", 512)).encode())
    return hasher.hexdigest()[:16]


@dataclass
class Heads:
    """One screen's three heads as arrays: ``weight`` (verdicts x hidden), ``bias``, and per verdict the
    temperature and the ``off`` cut (NaN where the card has no head for it)."""

    weight: np.ndarray
    bias: np.ndarray
    temperature: np.ndarray
    cut: np.ndarray

    @classmethod
    def of_folder(cls, folder: Path) -> Heads:
        from safetensors.torch import load_file

        stored = load_file(str(Path(folder) / WEIGHTS_FILE))
        temperature = np.full(len(VERDICT_KEYS), np.nan)
        cut = np.full(len(VERDICT_KEYS), np.nan)
        for head in read_card(folder)["heads"]:
            temperature[head["position"]] = head.get("temperature", 1.0)
            cut[head["position"]] = head.get("thresholds", {}).get("cut", 0.5)
        return cls(stored["heads.weight"].float().numpy(), stored["heads.bias"].float().numpy(), temperature, cut)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """Rows x verdicts: each head's calibrated probability of its positive label."""
        from scipy.special import expit

        return expit((vectors @ self.weight.T + self.bias) / self.temperature)

    def positive(self, vectors: np.ndarray) -> np.ndarray:
        """Rows x verdicts: the ``off`` verdict (positive at p >= cut)."""
        return self.probabilities(vectors) >= self.cut


class FeatureCache:
    """Last-layer means of items through one screen folder's body, kept on disk by item."""

    def __init__(self, folder: Path, cache_dir: Path):
        self.folder = Path(folder)
        self.digest = body_digest(self.folder)
        self.path = Path(cache_dir) / f"{self.digest}.npz"
        self.known: dict[str, np.ndarray] = {}
        if self.path.is_file():
            with np.load(self.path) as stored:
                self.known = dict(zip(stored["keys"].tolist(), stored["vectors"]))
        self.computed = 0

    def vectors(self, items: list[tuple[str, str | None]]) -> np.ndarray:
        """Rows x hidden for ``items``, computing (in float32) only those not cached yet."""
        keys = [item_key(prompt, response) for prompt, response in items]
        todo = {key: item for key, item in zip(keys, items) if key not in self.known}
        if todo:
            screen = load_encoder_screen(self.folder, read_card(self.folder), "float32")
            last = screen.module.encoder.config.num_hidden_layers
            names = list(todo)
            for start in range(0, len(names), CHUNK):  # saved chunk by chunk: a killed round keeps what it read
                chunk = names[start : start + CHUNK]
                _, _, computed = screen.read([todo[key] for key in chunk], layers=(last,))
                self.known.update(zip(chunk, computed))
                self.computed += len(chunk)
                self.save()
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.known[key] for key in keys])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial.npz")
        np.savez(partial, keys=np.array(list(self.known)), vectors=np.stack(list(self.known.values())))
        os.replace(partial, self.path)  # whole or absent: a round killed here keeps the previous cache
