"""Your own policies, learned from a few dozen labelled examples: one calibrated linear head per policy on the
verdict encoder's representation (``encoder.EncoderScreen.read``), answered beside the three verdicts.

    python -m guardreasoner policy fit NAME --examples FILE --out DIR

FILE is CSV or JSONL with ``prompt``, optional ``response`` and ``label`` (1/0, positive/negative, true/false),
optionally opening with a ``# description: ...`` line. The fit cross-validates (stratified folds), fits a Platt
scaling on the out-of-fold scores so ``p`` means what it says, picks the threshold with the best out-of-fold F1,
and writes a small folder:

    policy.json        the card: name, description, the encoder it was fitted on, layers, threshold, scaling,
                       cross-validated figures, the examples it got wrong out of fold
    head.safetensors   ``coef`` and ``intercept`` of the linear head, on the raw (unscaled) representation
    examples.jsonl     the examples it was fitted on (``prompt``, ``response``, ``label``): what a refit starts
                       from (``training.loop`` adds the corrections reviewers made to the policy)

A policy reads the same forward pass as the verdicts (``PolicyScreen``), so policies cost a dot product each.
Each policy answers independently: an item can fall under several.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import GuardReasonerError
from .results import CATEGORY_LABELS, Category
from .rows import RowError, leading_comments, read_rows

FORMAT = "guardreasoner-policy/1"
CARD_FILE = "policy.json"
HEAD_FILE = "head.safetensors"
EXAMPLES_FILE = "examples.jsonl"
MIN_PER_CLASS = 16
FOLDS = 5
C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse regularisation strengths tried, the best out-of-fold log-loss wins
# Hidden-state layers whose means are the representation (0 = embeddings, 6 = the last of MiniLM-L6), chosen by
# measurement (benchmarks/policy_representation.py on docs/policies' two held-out files, docs/policies.md): the
# middle layer held topics best (held-out F1 97.5 and 98.7; the last layer, which the verdict fine-tuning shaped
# most, 97.4 and 90.7; frozen all-MiniLM-L6-v2 with a logistic regression 96.3 and 96.3).
DEFAULT_LAYERS = (3,)
POSITIVE_WORDS = {"1", "positive", "true", "yes"}
NEGATIVE_WORDS = {"0", "negative", "false", "no"}


class PolicyError(GuardReasonerError, ValueError):
    """Examples or a policy folder that cannot be used; the message names the file, the lines and what is wrong."""


@dataclass
class Example:
    prompt: str
    response: str | None
    label: int  # 1: falls under the policy
    line: int
    source: str  # the file it came from


def read_examples(path: str | Path) -> tuple[list[Example], str | None]:
    """The labelled examples of a CSV/JSONL file and its ``# description:`` line (None without one); every bad
    line is reported at once."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"{path}: no such examples file")
    description = next((text.partition(":")[2].strip() for text in leading_comments(path)
                        if text.lower().startswith("description:")), None)
    examples, errors = [], []
    for row in read_rows(path):
        if isinstance(row, RowError):
            errors.append(str(row))
            continue
        word = str(row.extra.get("label", "")).strip().lower()
        if word not in POSITIVE_WORDS | NEGATIVE_WORDS:
            errors.append(f"line {row.line}: label {row.extra.get('label')!r} is not 1/0 or positive/negative")
            continue
        examples.append(Example(row.prompt, row.response, int(word in POSITIVE_WORDS), row.line, str(path)))
    if errors:
        shown = "; ".join(errors[:10]) + (f"; and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise PolicyError(f"{path}: {len(errors)} bad line(s): {shown}")
    return examples, description


def flag_examples(path: str | Path, policy: str) -> list[Example]:
    """The flags of a queue (the app's JSONL, or an Argilla pull in the same record format) that name ``policy``
    and a label for it: a reviewer's correction becomes an example."""
    from .records import FlagRecord, latest_flags

    flags, path = [], Path(path)
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                try:
                    flags.append((number, FlagRecord.from_dict(json.loads(text), where=str(path))))
                except (json.JSONDecodeError, TypeError) as error:
                    raise PolicyError(f"{path}: line {number} is not a flag record ({error})") from error
    lines = {flag.id: number for number, flag in flags}
    out = []
    for flag in latest_flags([flag for _, flag in flags]):
        if flag.policy == policy and flag.policy_label in CATEGORY_LABELS:
            out.append(Example(flag.prompt, flag.response, int(flag.policy_label == "positive"), lines[flag.id],
                               str(path)))
    return out


def item_key(example: Example) -> tuple[str, str]:
    """What makes two examples the same item: their texts, case and spacing aside."""
    return " ".join(example.prompt.split()).lower(), " ".join((example.response or "").split()).lower()


def checked(examples: list[Example]) -> list[Example]:
    """The examples with exact repeats of one label dropped; an error where an item carries both labels or a
    class has fewer than MIN_PER_CLASS examples."""
    seen: dict[tuple, Example] = {}
    conflicts = []
    for example in examples:
        key = item_key(example)
        earlier = seen.get(key)
        if earlier is None:
            seen[key] = example
        elif earlier.label != example.label:
            conflicts.append(f"line {example.line} of {Path(example.source).name} repeats line {earlier.line} of "
                             f"{Path(earlier.source).name} with the other label")
    if conflicts:
        raise PolicyError(f"{len(conflicts)} example(s) carry both labels: " + "; ".join(conflicts[:10]))
    kept = list(seen.values())
    counts = {label: sum(example.label == label for example in kept) for label in (1, 0)}
    if min(counts.values()) == 0:
        only = "positive" if counts[1] else "negative"
        raise PolicyError(f"all {len(kept)} distinct examples are {only}: a policy needs both labels "
                          f"(at least {MIN_PER_CLASS} of each)")
    if min(counts.values()) < MIN_PER_CLASS:
        raise PolicyError(f"{counts[1]} positive and {counts[0]} negative distinct examples: a policy needs at least "
                          f"{MIN_PER_CLASS} of each to be fitted and cross-validated")
    return kept


_ENCODER_IDS: dict[tuple, str] = {}


def encoder_id(screen) -> str:
    """The first 16 hex digits of a sha256 over the encoder's body weights (every tensor but the verdict heads'):
    what a policy was fitted on. A release of ``training.loop`` refits only the heads, so its policies stay."""
    from safetensors import safe_open

    folder = getattr(screen, "folder", None)
    if getattr(screen, "feature_kind", None) != "encoder" or folder is None:
        raise PolicyError(f"policies read the verdict encoder's representation; this screen "
                          f"({getattr(screen, 'feature_kind', type(screen).__name__)}) is not an encoder screen")
    weights = Path(folder) / "model.safetensors"
    key = (str(weights.resolve()), weights.stat().st_mtime_ns)
    if key not in _ENCODER_IDS:
        digest = hashlib.sha256()
        with safe_open(str(weights), framework="np") as tensors:
            for name in sorted(tensors.keys()):
                if not name.startswith("heads."):
                    digest.update(name.encode() + tensors.get_tensor(name).tobytes())
        _ENCODER_IDS[key] = digest.hexdigest()[:16]
    return _ENCODER_IDS[key]


def representation(screen, pairs: list[tuple[str, str | None]], layers: tuple[int, ...]) -> np.ndarray:
    """The encoder's representation of ``pairs``: the means of ``layers`` side by side (rows x features)."""
    if not hasattr(screen, "read"):
        encoder_id(screen)  # says why: not an encoder screen
    return screen.read(pairs, layers=tuple(layers))[2]


@dataclass
class PolicyHead:
    """A fitted policy: ``p = sigmoid(scale * (x . coef + intercept) + shift)`` on the representation ``x`` of
    ``layers``; the label is positive at ``p >= threshold``."""

    name: str
    coef: np.ndarray
    intercept: float
    scale: float
    shift: float
    threshold: float
    layers: tuple[int, ...]
    encoder: str
    card: dict = field(default_factory=dict)
    folder: Path | None = None
    examples: list[Example] = field(default_factory=list, repr=False)  # what it was fitted on, where known
    out_of_fold_p: np.ndarray | None = field(default=None, repr=False)  # per example, where just fitted

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        z = features @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-(self.scale * z + self.shift)))

    def category(self, p: float) -> Category:
        return Category(CATEGORY_LABELS[0] if p >= self.threshold else CATEGORY_LABELS[1], round(float(p), 6),
                        self.threshold, source="head")


def _logistic(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000, random_state=seed)


def out_of_fold(x: np.ndarray, y: np.ndarray, c: float, folds: int, seed: int) -> np.ndarray:
    """Each example's decision value from a head fitted without its fold (standardised within the fold)."""
    from sklearn.model_selection import StratifiedKFold

    scores = np.zeros(len(y))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        mean, std = x[train].mean(0), x[train].std(0) + 1e-6
        model = _logistic(c, seed).fit((x[train] - mean) / std, y[train])
        scores[test] = model.decision_function((x[test] - mean) / std)
    return scores


def platt(scores: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float]:
    """Platt's scaling of out-of-fold decision values, with his smoothed targets ((N+ + 1) / (N+ + 2) and
    1 / (N- + 2)), so that examples a head separates perfectly do not drive the probabilities to 0 and 1."""
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    target = np.where(y == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    z = np.concatenate([scores, scores]).reshape(-1, 1)
    model = _logistic(1e6, seed).fit(z, np.r_[np.ones(len(y)), np.zeros(len(y))],
                                     sample_weight=np.r_[target, 1 - target])
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def best_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The cut with the best F1, tried at 0.5 and midway between neighbouring probabilities (ties: the one
    nearest 0.5, so examples separated with room to spare get the plain cut)."""
    from sklearn.metrics import f1_score

    values = np.unique(p)
    candidates = np.r_[0.5, (values[1:] + values[:-1]) / 2]
    scored = [(round(f1_score(y, p >= t, zero_division=0), 9), -abs(t - 0.5), t) for t in candidates]
    return round(float(max(scored)[2]), 6)


@dataclass
class HeadFit:
    """A linear head fitted on a representation: its weights on the raw features, Platt's scaling, the threshold,
    and the out-of-fold probabilities the scaling and the threshold were chosen on."""

    coef: np.ndarray
    intercept: float
    scale: float
    shift: float
    threshold: float
    c: float
    folds: int
    out_of_fold_p: np.ndarray
    log_loss: float


def fit_head(x: np.ndarray, y: np.ndarray, folds: int = FOLDS, seed: int = 0) -> HeadFit:
    """Regularisation by out-of-fold log-loss, Platt's scaling and the best-F1 threshold on the out-of-fold
    scores, then the head refitted on every example."""
    from sklearn.metrics import log_loss

    x = x.astype(np.float64)
    folds = min(folds, int(np.bincount(y).min()))
    by_c = {c: out_of_fold(x, y, c, folds, seed) for c in C_GRID}
    losses = {c: log_loss(y, 1 / (1 + np.exp(-s)), labels=[0, 1]) for c, s in by_c.items()}
    c = min(losses, key=losses.get)
    scale, shift = platt(by_c[c], y, seed)  # p = sigmoid(scale * z + shift), fitted out of fold
    p = 1 / (1 + np.exp(-(scale * by_c[c] + shift)))
    mean, std = x.mean(0), x.std(0) + 1e-6
    model = _logistic(c, seed).fit((x - mean) / std, y)
    coef = model.coef_[0] / std  # folded into the raw representation: serving needs no scaler
    return HeadFit(coef.astype(np.float32), float(model.intercept_[0] - (mean * coef).sum()), scale, shift,
                   best_threshold(p, y), c, folds, p, float(losses[c]))


def fit_policy(name: str, examples: list[Example], screen, *, description: str | None = None,
               layers: tuple[int, ...] = DEFAULT_LAYERS, folds: int = FOLDS, seed: int = 0) -> PolicyHead:
    """Fit, cross-validate and calibrate a policy head on ``screen``'s representation of ``examples``."""
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise PolicyError(f"policy name {name!r}: use letters, digits, '-' and '_' (it names a result field)")
    began = time.perf_counter()
    examples = checked(examples)
    x = representation(screen, [(e.prompt, e.response) for e in examples], layers)
    y = np.array([e.label for e in examples])
    fit = fit_head(x, y, folds, seed)
    p = fit.out_of_fold_p
    predicted = p >= fit.threshold
    wrong = [{"line": e.line, "source": Path(e.source).name, "label": CATEGORY_LABELS[1 - e.label],
              "p": round(float(pi), 4), "prompt": e.prompt, "response": e.response}
             for e, pi, hit in zip(examples, p, predicted) if hit != bool(e.label)]
    card = {
        "format": FORMAT, "name": name, "description": description, "encoder": encoder_id(screen),
        "encoder_folder": Path(screen.folder).name, "layers": list(layers), "threshold": fit.threshold,
        "scaling": {"scale": fit.scale, "shift": fit.shift}, "C": fit.c,
        "examples": {"positive": int(y.sum()), "negative": int(len(y) - y.sum())},
        "cross_validation": {"folds": fit.folds, "seed": seed, "f1": round(100 * f1_score(y, predicted), 2),
                             "precision": round(100 * precision_score(y, predicted, zero_division=0), 2),
                             "recall": round(100 * recall_score(y, predicted), 2),
                             "roc_auc": round(float(roc_auc_score(y, p)), 4), "log_loss": round(fit.log_loss, 4)},
        "misclassified": wrong,
        "fit_seconds": round(time.perf_counter() - began, 2),
    }
    return PolicyHead(name, fit.coef, fit.intercept, fit.scale, fit.shift, fit.threshold, tuple(layers),
                      card["encoder"], card, examples=examples, out_of_fold_p=p)


def save_policy(policy: PolicyHead, out: str | Path) -> Path:
    """Write the folder atomically: a half-written policy never exists under ``out``."""
    from safetensors.numpy import save_file

    out = Path(out)
    if out.exists() and not (out / CARD_FILE).is_file():
        raise PolicyError(f"{out}: exists and is not a policy folder; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        save_file({"coef": policy.coef, "intercept": np.array([policy.intercept], dtype=np.float32)},
                  str(staging / HEAD_FILE))
        (staging / CARD_FILE).write_text(json.dumps(policy.card, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
        if policy.examples:
            (staging / EXAMPLES_FILE).write_text("".join(
                json.dumps({"prompt": e.prompt, "response": e.response, "label": e.label}, ensure_ascii=False) + "\n"
                for e in policy.examples), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    policy.folder = out
    return out


def fitted_examples(folder: str | Path) -> list[Example]:
    """The examples a policy folder was fitted on (its ``examples.jsonl``); an error for a folder written before
    folders kept them, saying how to write it again."""
    path = Path(folder) / EXAMPLES_FILE
    if not path.is_file():
        raise PolicyError(f"{folder}: no {EXAMPLES_FILE} (the examples a refit starts from): fit the policy again "
                          "with this version (python -m guardreasoner policy fit NAME --examples FILE --out "
                          f"{folder})")
    return read_examples(path)[0]


def read_card(folder: str | Path) -> dict | None:
    """A policy folder's card (fitted or text policy), or None where the folder has none."""
    card_path = Path(folder) / CARD_FILE
    if not card_path.is_file():
        return None
    try:
        return json.loads(card_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise PolicyError(f"{card_path}: not JSON ({error})") from error


def load_policy(folder: str | Path, screen=None) -> PolicyHead:
    """A policy folder; with ``screen``, one fitted on another encoder is refused (its representation differs)."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    card_path = folder / CARD_FILE
    card = read_card(folder)
    if card is None:
        raise PolicyError(f"{card_path}: no policy card here (python -m guardreasoner policy fit writes one)")
    if card.get("format") != FORMAT:
        raise PolicyError(f"{card_path}: format {card.get('format')!r}, this version reads {FORMAT!r}")
    if screen is not None and card["encoder"] != encoder_id(screen):
        raise PolicyError(f"{card_path}: fitted on the encoder {card['encoder']} ({card.get('encoder_folder')}); "
                          f"this guard's encoder is {encoder_id(screen)} ({Path(screen.folder).name}): fit the "
                          "policy again on it (python -m guardreasoner policy fit)")
    try:
        arrays = load_file(str(folder / HEAD_FILE))
    except (OSError, ValueError) as error:
        raise PolicyError(f"{folder / HEAD_FILE}: cannot be read ({error})") from error
    scaling = card["scaling"]
    return PolicyHead(card["name"], arrays["coef"], float(arrays["intercept"][0]), float(scaling["scale"]),
                      float(scaling["shift"]), float(card["threshold"]), tuple(card["layers"]), card["encoder"],
                      card, folder)


class PolicyScreen:
    """A screen that also answers policies: the encoder's verdicts and, from the same forward pass, each head
    policy's category (``probabilities`` rows gain ``categories``); text policies (``text_policy``) are asked
    after it. Everything else reads through to the screen it wraps."""

    def __init__(self, screen, heads: list[PolicyHead], texts: list | None = None):
        names = [policy.name for policy in [*heads, *(texts or [])]]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise PolicyError(f"two policies are named {', '.join(repeated)}: each names a result field")
        self.screen, self.policies, self.texts = screen, list(heads), list(texts or [])
        self.layers = tuple(sorted({layer for policy in self.policies for layer in policy.layers}))

    def __getattr__(self, name):
        return getattr(self.screen, name)

    @property
    def names(self) -> list[str]:
        return [policy.name for policy in [*self.policies, *self.texts]]

    def bind(self, guard) -> PolicyScreen:
        return PolicyScreen(self.screen.bind(guard), self.policies, self.texts)

    def probabilities(self, items: list[tuple[str, str | None]]) -> list[dict]:
        if not self.policies:
            rows = self.screen.probabilities(items)
        else:
            rows, features = self.screen.scored(items, self.layers)
            width = features.shape[1] // len(self.layers)
            for policy in self.policies:
                columns = np.concatenate([np.arange(width) + width * self.layers.index(layer)
                                          for layer in policy.layers])
                for row, p in zip(rows, policy.probabilities(features[:, columns])):
                    row.setdefault("categories", {})[policy.name] = policy.category(p)
        for text in self.texts:
            try:
                categories = text.categorize(items)
            except GuardReasonerError as error:  # its server is down: the verdicts still stand, the policy says why
                categories = [Category(None, source="text", rationale=f"no answer: {error}") for _ in items]
            for row, category in zip(rows, categories):
                row.setdefault("categories", {})[text.name] = category
        return rows

    def timed_probabilities(self, items) -> tuple[list[dict], float]:
        began = time.perf_counter()
        rows = self.probabilities(items)
        return rows, time.perf_counter() - began


def load_policies(folders: list[str | Path], screen) -> PolicyScreen:
    """The policies of ``folders`` (fitted heads, or text policies: a folder whose card says ``kind: text``)
    around ``screen``."""
    heads, texts = [], []
    for folder in folders:
        if (read_card(folder) or {}).get("kind") == "text":
            from .text_policy import load_text_policy

            texts.append(load_text_policy(folder))
        else:
            heads.append(load_policy(folder, screen))
    return PolicyScreen(screen, heads, texts)


def with_policies(guard, folders: list[str | Path]):
    """``guard`` answering the policies of ``folders`` too, without loading its model again: its screen wrapped
    in a ``PolicyScreen`` (a guard without a screen gets the shipped encoder, and runs in ``full`` as before).
    No folders: the guard as it is, without any policies it had."""
    from .cascade import Cascade
    from .screen import default_screen_folder, load_screen

    screen = getattr(guard, "screen", None)
    if isinstance(screen, PolicyScreen):
        screen = screen.screen
    if not folders:
        return guard if screen is getattr(guard, "screen", None) else Cascade(guard.guard, screen, guard.reasoning)
    if screen is None:
        base, reasoning = getattr(guard, "guard", guard), getattr(guard, "reasoning", "full")
        screen = load_screen(default_screen_folder(base.model_name))
    else:
        base, reasoning = guard.guard, guard.reasoning
    return Cascade(base, load_policies(list(folders), screen).bind(base), reasoning)
