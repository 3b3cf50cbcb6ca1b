"""Refit the custom policies that corrections name, and gate each refit like the heads.

A policy the round was given (``--policy FOLDER``: a fitted policy folder, which keeps the examples it was fitted
on) and that some correction names is fitted again (``guardreasoner.policy.fit_policy``, on the served encoder's
body, which a round never changes) on its own examples with every correction of it ever made in place of the
example of the same item. The refit ships only if

- on the policy's own examples that no correction replaced, its out-of-fold F1 is not below the 95% bootstrap
  interval of the served policy's (the served policy refitted on the examples it was fitted on gives its
  out-of-fold answers again: the fit is seeded);
- every correction the served policy answers as corrected, the refit answers so too (one neither answers is
  listed with why, and fails the gate only with ``--require-every-correction``).

A refitted policy goes into the release's ``policies/NAME/``; serving answers that policy with it
(``guardreasoner.releases.with_screen``). A correction naming a policy the round was not given is kept for a
round that is, and said.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from guardreasoner.policy import (
    Example,
    PolicyError,
    fit_policy,
    fitted_examples,
    item_key,
    load_policy,
    read_card,
    representation,
    save_policy,
)
from guardreasoner.results import CATEGORY_LABELS
from stagekit.metrics import bootstrap_f1_interval, f1_of_flags


@dataclass
class PolicyRound:
    refitted: dict[str, Path] = field(default_factory=dict)  # name -> the candidate policy folder
    report: list[dict] = field(default_factory=list)  # one entry per policy a correction names
    reasons: list[str] = field(default_factory=list)  # why the gate fails, if it does


def given_policies(folders: list[Path]) -> dict[str, Path]:
    """Name -> folder of the fitted policies a round may refit; text policies and folders that do not keep
    their examples are errors that say what to do."""
    given: dict[str, Path] = {}
    for folder in folders:
        card = read_card(folder)
        if card is None:
            raise PolicyError(f"{folder}: no policy card here (python -m guardreasoner policy fit writes one)")
        if card.get("kind") == "text":
            raise PolicyError(f"{folder}: a text policy is its written text; the loop refits only fitted policies "
                              "(edit the text to change it)")
        if card["name"] in given:
            raise PolicyError(f"two --policy folders are named {card['name']}: {given[card['name']]} and {folder}")
        fitted_examples(folder)  # says how to write a folder again that does not keep its examples
        given[card["name"]] = Path(folder)
    return given


def _as_example(correction: dict) -> Example:
    return Example(correction["prompt"], correction["response"], int(correction["label"] == CATEGORY_LABELS[0]), 0,
                   f"correction {correction['origin']}")


def _f1(gold: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    low, high = bootstrap_f1_interval(gold, p >= threshold)
    return {"f1": round(100 * f1_of_flags(gold, p >= threshold), 2), "ci95": [round(low, 2), round(high, 2)]}


def _labels(head, x: np.ndarray) -> list[tuple[float, str]]:
    return [(round(float(p), 4), head.category(p).label) for p in head.probabilities(x)]


def refit_one(name: str, given: Path, served: Path, corrections: list[dict], screen, out: Path,
              require_every: bool) -> tuple[dict, list[str]]:
    """Refit one policy into ``out``; its report entry and the gate's reasons against it."""
    card = read_card(served)
    shipped = fit_policy(name, fitted_examples(served), screen, description=card.get("description"),
                         layers=tuple(card["layers"]))  # seeded: the served head's out-of-fold answers again
    corrected = {item_key(_as_example(c)) for c in corrections}
    own = [e for e in fitted_examples(given) if item_key(e) not in corrected]
    candidate = fit_policy(name, own + [_as_example(c) for c in corrections], screen,
                           description=shipped.card.get("description"), layers=shipped.layers)
    save_policy(candidate, out)
    untouched = {item_key(e): e.label for e in own}
    shipped_p = {item_key(e): p for e, p in zip(shipped.examples, shipped.out_of_fold_p)}
    candidate_p = {item_key(e): p for e, p in zip(candidate.examples, candidate.out_of_fold_p)}
    keys = [key for key in untouched if key in shipped_p and key in candidate_p]
    gold = np.array([bool(untouched[key]) for key in keys])
    entry = {"policy": name, "corrections": len(corrections), "examples": len(candidate.examples),
             "compared_on": len(keys), "served": str(served),
             "shipped": _f1(gold, np.array([shipped_p[k] for k in keys]), shipped.threshold),
             "candidate": _f1(gold, np.array([candidate_p[k] for k in keys]), candidate.threshold),
             "threshold": {"shipped": shipped.threshold, "candidate": candidate.threshold},
             "fixed": [], "still_wrong": []}
    entry["delta"] = round(entry["candidate"]["f1"] - entry["shipped"]["f1"], 2)
    entry["passed"] = entry["candidate"]["f1"] >= entry["shipped"]["ci95"][0]
    reasons = [] if entry["passed"] else [
        f"policy {name}: out-of-fold F1 on its own examples {entry['candidate']['f1']:.2f} is below the served "
        f"policy's 95% interval [{entry['shipped']['ci95'][0]:.2f}, {entry['shipped']['ci95'][1]:.2f}]"]
    x = representation(screen, [(c["prompt"], c["response"]) for c in corrections], shipped.layers)
    before, after = _labels(load_policy(served, screen), x), _labels(candidate, x)
    for correction, (_, was), (p, now) in zip(corrections, before, after):
        summary = {"key": correction["key"], "origin": correction["origin"], "prompt": correction["prompt"][:200],
                   "expected": correction["label"]}
        if now == correction["label"]:
            entry["fixed"].append({**summary, "was_wrong_before": was != correction["label"]})
            continue
        regression = was == correction["label"]
        why = ("the served policy answers it as corrected; the refit does not" if regression else
               f"the refit could not fit it (p {p} against its threshold {candidate.threshold}): examples like it "
               "say otherwise")
        entry["still_wrong"].append({**summary, "p": p, "regression": regression, "why": why})
        if regression or require_every:
            reasons.append(f"policy {name}: correction {correction['key']} ({correction['label']}) is not answered "
                           f"as corrected by the refit: {why}")
    return entry, reasons


def refit_policies(corrections: list[dict], given: dict[str, Path], served: dict[str, Path], screen, out: Path,
                   require_every: bool = False) -> PolicyRound:
    """Every given policy some correction names, refitted into ``out/NAME`` and judged; ``served`` names the
    release's refitted folders (a policy not among them is served from its given folder)."""
    result = PolicyRound()
    named = sorted({c["policy"] for c in corrections})
    for name in named:
        mine = [c for c in corrections if c["policy"] == name]
        if name not in given:
            result.report.append({"policy": name, "corrections": len(mine), "skipped": (
                f"this round was not given the policy {name} (--policy FOLDER): its corrections are kept for a "
                "round that is")})
            continue
        try:
            entry, reasons = refit_one(name, given[name], served.get(name, given[name]), mine, screen, out / name,
                                       require_every)
        except PolicyError as error:  # too few of a class, an item with both labels: the refit cannot be made
            entry, reasons = {"policy": name, "corrections": len(mine), "passed": False, "error": str(error)}, \
                [f"policy {name}: the refit cannot be made: {error}"]
        result.report.append(entry)
        result.reasons += reasons
        if not reasons and "error" not in entry:
            result.refitted[name] = out / name
    return result
