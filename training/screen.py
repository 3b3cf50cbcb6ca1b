"""Train a screen (``guardreasoner/screen.py``) for any guard model from labelled rows, and choose its thresholds.

    python -m eval.split export --data-dir ../shared/benchmarks/guardreasoner --part fit --out runs/screen/fit.jsonl
    python -m eval.split export --data-dir ../shared/benchmarks/guardreasoner --part validation \\
        --out runs/screen/validation.jsonl
    python -m training.screen --model embedded --features guard-state --train runs/screen/fit.jsonl \\
        --runs ../shared/predictions/GuardReasoner-1B --validation runs/screen/validation.jsonl \\
        --reasoning-run runs/screen/reasoning-validation --out assets/screen/embedded

Labelled rows: GuardReasonerTrain-format files (``--train``; the Answers block is the label, ``None`` = not
labelled) and prediction run folders (``--runs``; only their gold labels are used, not the model's outputs).
One logistic-regression head per verdict with both labels among its rows; a verdict without them gets no head,
and the screen then leaves it to the reasoning model.

Thresholds are chosen on the validation rows only. ``cut`` (for ``off``) maximises the screen's F1. ``low`` and
``high`` (for ``auto``) maximise the cascade's estimated F1 under the constraint that its estimated recall is at
least the reasoning guard's: rows the screen leaves to the reasoning guard are counted at the reasoning guard's
recall and false-positive rate, measured on validation rows (``--reasoning-run``: ``eval run --split
validation``) or given (``--reasoning-rates``).

Which mode the screen's model runs in by default (``load_guard(..., reasoning="recommended")``, the CLI, ``serve``
and the app) is measured, not chosen by hand: score the three modes on the same held-out rows (``eval run
--reasoning off|auto|full``, then ``eval score --scoring strict --json``) and write the best into the card:

    python -m training.screen recommend assets/screen/embedded-minilm off=runs/modes/off.json \
        auto=runs/modes/auto.json full=runs/modes/full.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from guardreasoner.parser import parse, split_upstream_prompt
from guardreasoner.predictions import read_run
from guardreasoner.results import POSITIVE, VERDICT_KEYS
from guardreasoner.rows import seeded_sample
from guardreasoner.screen import CARD_FILE, FEATURES, RECOMMENDED_SECTION, Head, Screen, Thresholds
from stagekit.metrics import f1_from_counts, f1_of_flags

from .data import load_rows

MIN_PER_LABEL = 5  # a head needs at least this many rows of each label
GRID = np.linspace(0.0, 1.0, 101)


@dataclass
class Labelled:
    prompt: str
    response: str | None
    labels: dict[str, str]  # verdict key -> gold label, for the verdicts this row labels
    source: str


@dataclass
class Rates:
    """The reasoning guard's recall and false-positive rate on one verdict (validation rows)."""

    recall: float
    false_positive_rate: float
    rows: int | None = None
    source: str = "given"


@dataclass
class Fitted:
    screen: Screen
    report: dict = field(default_factory=dict)


def rows_from_train_file(path: str | Path) -> list[Labelled]:
    out = []
    for row in load_rows(path):
        prompt, response = split_upstream_prompt(row["input"])
        labels = {key: label for key, label in parse(row["output"]).labels.items() if label is not None}
        out.append(Labelled(prompt, response, labels, row.get("source") or Path(path).name))
    return out


def rows_from_run(run: str | Path) -> list[Labelled]:
    """Gold labels of a prediction run folder (the model's outputs are not used)."""
    return [Labelled(row.prompt, row.response, dict(row.gold), f"{Path(run).name}/{row.benchmark}")
            for row in read_run(run) if row.gold]


def merge(rows: list[Labelled]) -> list[Labelled]:
    """One row per (prompt, response), its labels gathered (the first label of a verdict wins)."""
    merged: dict[tuple, Labelled] = {}
    for row in rows:
        kept = merged.setdefault((row.prompt, row.response), Labelled(row.prompt, row.response, {}, row.source))
        for key, label in row.labels.items():
            kept.labels.setdefault(key, label)
    return list(merged.values())


def rates_from_run(run: str | Path) -> dict[str, Rates]:
    """The reasoning guard's recall and false-positive rate per verdict, from its outputs on validation rows,
    for the verdicts with at least ``MIN_PER_LABEL`` rows of each label. A missing harm verdict counts as harmful
    (the guard fails closed); a missing refusal verdict as wrong."""
    counts = {key: {"tp": 0, "fn": 0, "fp": 0, "tn": 0} for key in VERDICT_KEYS}
    for row in read_run(run):
        labels = row.parsed().labels
        for key, gold in row.gold.items():
            positive, said = gold == POSITIVE[key], labels.get(key)
            if said is None:  # fail-closed on harm; an unknown refusal verdict counts as wrong
                predicted = True if POSITIVE[key] == "harmful" else not positive
            else:
                predicted = said == POSITIVE[key]
            counts[key]["tp" if positive and predicted else "fn" if positive else "fp" if predicted else "tn"] += 1
    rates = {}
    for key, c in counts.items():  # a rate from fewer rows than a head needs would be a guess
        if min(c["tp"] + c["fn"], c["fp"] + c["tn"]) >= MIN_PER_LABEL:
            rates[key] = Rates(c["tp"] / (c["tp"] + c["fn"]), c["fp"] / (c["fp"] + c["tn"]), sum(c.values()),
                               str(run))
    return rates


def parse_rates(specs: list[str]) -> dict[str, Rates]:
    """``KEY=RECALL/FPR`` (position names accepted: 0, 1, 2 for the verdicts in order)."""
    rates = {}
    for spec in specs:
        key, _, value = spec.partition("=")
        key = VERDICT_KEYS[int(key)] if key.isdigit() else key
        if key not in VERDICT_KEYS or "/" not in value:
            raise ValueError(f"--reasoning-rates {spec!r}: write KEY=RECALL/FPR with KEY one of {VERDICT_KEYS}")
        recall, fpr = (float(part) for part in value.split("/"))
        rates[key] = Rates(recall, fpr)
    return rates


def choose_cut(p: np.ndarray, y: np.ndarray) -> float:
    """The threshold with the screen's best F1 on these rows (the middle one of ties)."""
    scores = [f1_of_flags(y, p >= t) for t in GRID]
    best = max(scores)
    ties = [t for t, s in zip(GRID, scores) if s == best]
    return float(ties[len(ties) // 2])


def choose_band(p: np.ndarray, y: np.ndarray, rates: Rates) -> tuple[float, float, dict]:
    """``low``, ``high``: the cascade's best estimated F1 with estimated recall >= the reasoning guard's; among
    equal F1, the band the screen decides most of. Deferred rows count at the reasoning guard's rates."""
    positives = int(y.sum())
    best = None
    for low_index, low in enumerate(GRID):
        for high in GRID[low_index:]:
            above, below = p >= high, p < low
            deferred = ~above & ~below
            tp = np.sum(y & above) + rates.recall * np.sum(y & deferred)
            fp = np.sum(~y & above) + rates.false_positive_rate * np.sum(~y & deferred)
            recall = tp / positives if positives else 1.0
            if recall + 1e-9 < rates.recall:
                continue
            key = (round(f1_from_counts(tp, fp, positives - tp), 6), 1 - deferred.mean())
            if best is None or key > best[0]:
                best = (key, float(low), float(high), recall, float(deferred.mean()))
    (f1, _), low, high, recall, deferred_share = best
    return low, high, {"estimated_f1": round(100 * f1, 2), "estimated_recall": round(recall, 4),
                       "deferred_share": round(deferred_share, 4)}


class CachedFeatures:
    """Features kept on disk by the exact items (and model) they are of, so that choosing thresholds again, or
    retraining with another C, does not run the encoder again."""

    def __init__(self, inner, folder: Path, model_name: str):
        self.inner, self.folder, self.model_name = inner, Path(folder), model_name
        self.views = inner.views

    def vectors(self, items):
        import hashlib

        digest = hashlib.sha256(json.dumps([self.inner.kind, self.model_name, items]).encode()).hexdigest()[:16]
        path = self.folder / f"{self.inner.kind}-{digest}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as stored:
                return {view: stored[view] for view in stored.files}
        vectors = self.inner.vectors(items)
        self.folder.mkdir(parents=True, exist_ok=True)
        np.savez(path, **vectors)
        return vectors


def _features(kind: str, guard, cache: Path | None = None, model_name: str = ""):
    from guardreasoner.screen import GuardStateFeatures, MiniLMFeatures

    features = GuardStateFeatures.of_guard(guard) if kind == "guard-state" else MiniLMFeatures()
    return CachedFeatures(features, cache, model_name) if cache else features


def _column(rows: list[Labelled], key: str) -> tuple[list[int], np.ndarray]:
    chosen = [i for i, row in enumerate(rows) if key in row.labels]
    return chosen, np.array([rows[i].labels[key] == POSITIVE[key] for i in chosen], dtype=bool)


def fit_screen(rows: list[Labelled], validation: list[Labelled], rates: dict[str, Rates], *, kind: str, guard,
               model_name: str, seed: int = 0, c: float = 1.0, cache: Path | None = None,
               weights: str | None = None) -> Fitted:
    """Fit one head per verdict on ``rows`` and choose its thresholds on ``validation``. ``weights``
    (``models.weights_id``) tells apart retrained weights under one model name: guard-state heads record it, and
    cached guard-state features are keyed by it."""
    from sklearn.linear_model import LogisticRegression

    reads_weights = kind == "guard-state" and weights is not None
    features = _features(kind, guard, cache, f"{model_name}@{weights}" if reads_weights else model_name)
    began = time.perf_counter()
    vectors = features.vectors([(row.prompt, row.response) for row in rows])
    validation_vectors = features.vectors([(row.prompt, row.response) for row in validation]) if validation else {}
    featurize_s = time.perf_counter() - began
    view_of = {key: (features.views[0] if key == VERDICT_KEYS[0] else features.views[-1]) for key in VERDICT_KEYS}
    heads, report = {}, {"heads": {}, "featurize_s": round(featurize_s, 1)}
    for key in VERDICT_KEYS:
        chosen, y = _column(rows, key)
        if min(int(y.sum()), int((~y).sum())) < MIN_PER_LABEL:
            report["heads"][key] = {"rows": len(chosen), "skipped": f"fewer than {MIN_PER_LABEL} rows of a label"}
            continue
        x = vectors[view_of[key]][chosen]
        mean, scale = x.mean(0), x.std(0) + 1e-6
        model = LogisticRegression(C=c, max_iter=3000, class_weight="balanced", random_state=seed)
        model.fit((x - mean) / scale, y)
        head = Head(key, view_of[key], mean, scale, model.coef_[0].astype(np.float32), float(model.intercept_[0]))
        entry = {"rows": len(chosen), "positive": int(y.sum())}
        held, y_held = _column(validation, key)
        if held and y_held.any() and (~y_held).any():
            p = head.probability(validation_vectors[view_of[key]][held])
            cut = choose_cut(p, y_held)
            entry["validation"] = {"rows": len(held), "positive": int(y_held.sum()), "cut": cut,
                                   "f1_at_cut": round(100 * f1_of_flags(y_held, p >= cut), 2)}
            if key in rates:
                low, high, band = choose_band(p, y_held, rates[key])
                head.thresholds = Thresholds(cut, low, high)
                entry["validation"].update(band, reasoning=vars(rates[key]))
            else:  # no reasoning figures for this verdict: auto leaves it to the screen's cut
                head.thresholds = Thresholds(cut, cut, cut)
                entry["validation"]["note"] = "no reasoning-guard rates for this verdict: auto uses the cut"
        heads[key] = head
        report["heads"][key] = entry
    sources: dict[str, int] = {}
    for row in rows:
        sources[row.source] = sources.get(row.source, 0) + 1
    report.update(rows=len(rows), validation_rows=len(validation), sources=sources,
                  train_s=round(time.perf_counter() - began, 1))
    card = {"trained": report, "encoder": "sentence-transformers/all-MiniLM-L6-v2" if kind == "minilm" else None}
    if reads_weights:  # the heads read these weights' hidden states; load_screen refuses them on others
        card["weights"] = weights
    return Fitted(Screen(model_name, kind, heads, card), report)


CHEAPEST_FIRST = ("off", "auto", "full")  # a tie in F1 goes to the mode that reasons less


def recommendation(reports: dict[str, dict], paths: dict[str, str]) -> dict:
    """The card's ``recommended_reasoning`` section from each mode's strict report (``eval score --json``) on
    the same cells: the mode with the best mean strict F1 over the cells (as ``eval compare`` means them), the
    figures it was chosen on and where they came from."""
    unknown = sorted(set(reports) - set(CHEAPEST_FIRST))
    if unknown or not reports:
        raise ValueError(f"modes {', '.join(unknown) or '(none)'}: give MODE=REPORT for some of "
                         f"{', '.join(CHEAPEST_FIRST)}")
    cells = {}
    for mode, report in reports.items():
        if report.get("mode") != "strict":
            raise ValueError(f"{paths[mode]}: scored {report.get('mode')!r}; the modes are compared strictly "
                             "(eval score --scoring strict)")
        cells[mode] = {(cell["benchmark"], cell["task"], cell["n"]): cell["f1"] for cell in report["cells"]}
    first = next(iter(cells))
    for mode in cells:
        if set(cells[mode]) != set(cells[first]):
            raise ValueError(f"{paths[mode]} and {paths[first]} score different cells or row counts: the modes "
                             "must be measured on the same rows")
    means = {mode: round(sum(scores.values()) / len(scores), 2) for mode, scores in cells.items()}
    best = max((mode for mode in CHEAPEST_FIRST if mode in means), key=lambda mode: means[mode])
    return {"mode": best, "mean_strict_f1": means, "cells": len(cells[first]),
            "rows": sum(n for _, _, n in cells[first]), "reports": paths,
            "rule": "the best mean strict F1 over the same held-out cells; a tie goes to the mode reasoning less"}


def recommend_main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m training.screen recommend",
                                     description="write the mode measured best into a screen's card")
    parser.add_argument("screen", help="the screen folder whose card gets the recommendation")
    parser.add_argument("reports", nargs="+", metavar="MODE=REPORT",
                        help="each mode's strict report on the same rows (eval score --scoring strict --json)")
    parser.add_argument("--model", default=None, help="the guard model the modes were measured with (default: the "
                        "embedded guard); other models keep full")
    args = parser.parse_args(argv)
    paths = dict(spec.split("=", 1) for spec in args.reports if "=" in spec)
    if len(paths) != len(args.reports):
        parser.error("give each report as MODE=REPORT, e.g. off=runs/modes/off.json")
    card_path = Path(args.screen) / CARD_FILE
    if not card_path.is_file():
        parser.error(f"{card_path}: no screen card here")
    try:
        section = recommendation({mode: json.loads(Path(path).read_text(encoding="utf-8"))
                                  for mode, path in paths.items()}, paths)
    except (OSError, ValueError, KeyError) as error:
        parser.error(str(error))
    from guardreasoner.models import EMBEDDED_GUARD_NAME

    section["model"] = args.model or EMBEDDED_GUARD_NAME
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card[RECOMMENDED_SECTION] = section
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({"screen": args.screen, **section}))
    return section


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["recommend"]:
        return recommend_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m training.screen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the guard the screen serves (as load_guard takes it)")
    parser.add_argument("--features", choices=FEATURES, default="guard-state")
    parser.add_argument("--train", nargs="*", default=[], help="GuardReasonerTrain-format .json/.jsonl files")
    parser.add_argument("--runs", nargs="*", default=[], help="prediction run folders (their gold labels)")
    parser.add_argument("--validation", nargs="*", default=[], help="GuardReasonerTrain-format validation rows")
    parser.add_argument("--reasoning-run", help="the reasoning guard's prediction run on validation rows")
    parser.add_argument("--reasoning-rates", nargs="*", default=[], help="KEY=RECALL/FPR, instead of a run")
    parser.add_argument("--sample", type=int, help="a seeded N of the training rows (CPU budget)")
    parser.add_argument("--validation-sample", type=int, help="a seeded N of the validation rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--c", type=float, default=1.0, help="inverse L2 strength of the heads")
    parser.add_argument("--out", required=True, help="the screen folder to write")
    parser.add_argument("--cache", help="a folder to keep computed features in (reused when the rows are the same)")
    args = parser.parse_args(argv)
    rows = [row for path in args.train for row in rows_from_train_file(path)]
    rows += [row for run in args.runs for row in rows_from_run(run)]
    rows = seeded_sample(merge(rows), args.sample, args.seed)
    validation = seeded_sample(merge([row for path in args.validation for row in rows_from_train_file(path)]),
                               args.validation_sample, args.seed)
    overlap = {(r.prompt, r.response) for r in rows} & {(r.prompt, r.response) for r in validation}
    rows = [row for row in rows if (row.prompt, row.response) not in overlap]  # validation rows stay unseen
    if not rows:
        parser.error("no labelled rows: pass --train files and/or --runs folders")
    rates = rates_from_run(args.reasoning_run) if args.reasoning_run else {}
    rates.update(parse_rates(args.reasoning_rates))
    if validation and not rates:
        parser.error("choosing auto's thresholds needs the reasoning guard's rates on validation rows: "
                     "--reasoning-run (eval run --split validation) or --reasoning-rates")
    from guardreasoner import load_guard
    from guardreasoner.models import resolve_model, weights_id

    guard = load_guard(args.model, "transformers", fallback=False) if args.features == "guard-state" else None
    spec = resolve_model(args.model)
    fitted = fit_screen(rows, validation, rates, kind=args.features, guard=guard, model_name=spec.name,
                        seed=args.seed, c=args.c, cache=Path(args.cache) if args.cache else None,
                        weights=weights_id(spec))
    fitted.screen.card["trained"].update(train_files=args.train, runs=args.runs, validation_files=args.validation,
                                         removed_as_validation=len(overlap), seed=args.seed, c=args.c)
    earlier = Path(args.out) / "screen.json"
    if earlier.is_file():  # refit in place: sections written by hand (held-out scores, how it was made) and the
        # measured recommended_reasoning (rewritten by `recommend` once the modes are measured again) stay;
        # what this fit writes overrides the rest, and "weights", written only for guard-state heads, never stays
        kept = json.loads(earlier.read_text(encoding="utf-8"))
        kept.pop("weights", None)
        fitted.screen.card = {**kept, **fitted.screen.card}
    fitted.screen.save(args.out)
    print(json.dumps({"out": args.out, **{k: v for k, v in fitted.report.items() if k != "sources"}}))
    return fitted.report


if __name__ == "__main__":
    main()
