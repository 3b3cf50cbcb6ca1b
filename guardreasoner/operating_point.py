"""Operating points: per-verdict thresholds chosen from the user's own labelled rows for a target false-positive
rate or recall, with the figures they achieve there (bootstrap 95% intervals), kept in a folder and applied
through the guard's ``thresholds`` (``load_guard(..., operating_point=DIR)``).

``python -m guardreasoner calibrate`` reads the rows (``rows.read_rows``: CSV or JSONL, gold labels under the
verdict names), classifies them resumably (``rows.classify_rows``, as ``classify --input --output`` does) into
``DIR.partial/classified.jsonl``, picks the thresholds and writes ``DIR/operating_point.json`` in one rename.

Each verdict's probability is first made to mean what it says on these rows: a Platt map (``recalibration``)
is fitted on them, the thresholds are chosen on the mapped probability, and a guard loading the point maps every
result's probability the same way before cutting it (``--recalibration none``: the probabilities as they are).
The point reports the expected calibration error before and after the map.

``--holdout F`` keeps a seeded share F of the rows apart (stratified by each row's labels): the thresholds are
chosen on the rest, and the point also reports the FPR and recall they reach on the held-out rows, beside the
target, so that a user sees what to expect on rows the thresholds were not chosen on.

The rule for "too few rows": the class the target is about (negatives for a false-positive rate X, positives
for a recall Y, whose miss rate is 1 - Y) needs at least ``max(MIN_ROWS, ceil(1 / rate))`` rows, so that one
error is no more than the rate asked for; the other class needs ``MIN_ROWS`` for its figure to mean anything.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import GuardReasonerError
from .recalibration import PlattMap, calibration_error, fit_platt
from .results import LABELS, NEGATIVE, POSITIVE, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL, VERDICT_KEYS
from .rows import Row, append_lines, classify_rows, done_lines, read_jsonl, split_rows

OPERATING_POINT_FILE = "operating_point.json"
FORMAT = "guardreasoner-operating-point/1"
CLASSIFIED_FILE = "classified.jsonl"  # in DIR.partial: the rows classified so far (a rerun resumes after them)
RUN_FILE = "run.json"  # in DIR.partial: what classified them (model, reasoning, screen, data), checked on resume
MIN_ROWS = 10
RESAMPLES = 1000
RECALIBRATIONS = ("platt", "none")
SEED = 0
SHOWN_ERRORS = 10  # a bad file's message names this many problems, then counts the rest
REPLY_KEYS = (RESPONSE_REFUSAL, RESPONSE_HARMFULNESS)


class OperatingPointError(GuardReasonerError, ValueError):
    """A calibration that cannot be made (bad rows, too few of a class, an unreachable target) or an operating
    point folder that cannot be read."""


# --- Choosing a threshold -----------------------------------------------------------------------------------------

@dataclass
class Choice:
    """One threshold and what it gives on the rows: positive where ``p >= threshold``."""

    threshold: float
    fpr: float
    recall: float


def candidates(scores: np.ndarray, positive: np.ndarray) -> list[Choice]:
    """Every distinct way a threshold splits the rows, from the strictest that flags something to flagging all.

    Each threshold is the midpoint between the lowest score it flags and the next lower score (the lowest score
    itself where it flags every row): the same split of these rows, with room on either side for new ones."""
    order = np.argsort(-scores, kind="stable")
    ranked, truth = scores[order], positive[order]
    true_positives, false_positives = np.cumsum(truth), np.cumsum(~truth)
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # each distinct score's last row
    distinct = ranked[last]
    negatives, positives = max(int((~positive).sum()), 1), max(int(positive.sum()), 1)
    out = []
    for index, row in enumerate(last):
        score = float(distinct[index])
        threshold = score
        if index + 1 < len(distinct):
            middle = float((distinct[index] + distinct[index + 1]) / 2)
            threshold = middle if middle > distinct[index + 1] else score  # adjacent floats: no room between
        out.append(Choice(threshold, int(false_positives[row]) / negatives, int(true_positives[row]) / positives))
    return out


def choose_threshold(scores, positive, *, target_fpr: float | None = None,
                     target_recall: float | None = None, key: str = "") -> Choice:
    """The threshold meeting the target: the highest recall at FPR <= ``target_fpr`` (of those, the lowest FPR),
    or the lowest FPR at recall >= ``target_recall`` (of those, the highest recall). A threshold that flags no
    positive row is no answer to an FPR target: where every other one exceeds it, the error names the closest."""
    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    options = candidates(scores, positive)
    if target_fpr is not None:
        meeting = [c for c in options if c.fpr <= target_fpr and c.recall > 0]
        if not meeting:
            flagging = [c for c in options if c.recall > 0]
            closest = min(flagging, key=lambda c: (c.fpr, -c.recall))
            raise OperatingPointError(
                f"{key}: no threshold gives a false-positive rate <= {target_fpr:g} while flagging any "
                f"{POSITIVE.get(key, 'positive')} row; the closest is {closest.fpr:.4g} (threshold "
                f"{closest.threshold:.4g}, recall {closest.recall:.4g})")
        return max(meeting, key=lambda c: (c.recall, -c.fpr))
    if target_recall is None:
        raise ValueError("give target_fpr or target_recall")
    meeting = [c for c in options if c.recall >= target_recall]  # flagging every row always meets it
    return min(meeting, key=lambda c: (c.fpr, -c.recall))


def interval(successes: int, rows: int, rng: np.random.Generator) -> list[float]:
    """The percentile bootstrap 95% interval of a rate ``successes / rows``: a resampled mean of 0/1 outcomes is
    a binomial draw, so the resamples are drawn as binomials (the same distribution, without the row arrays)."""
    draws = rng.binomial(rows, successes / rows, size=RESAMPLES) / rows
    low, high = np.percentile(draws, [2.5, 97.5])
    return [float(low), float(high)]


def rows_needed(rate: float) -> int:
    """Rows of the target's class needed for one error to be no more than ``rate`` (and never under MIN_ROWS)."""
    if rate <= 0:
        return MIN_ROWS
    return max(MIN_ROWS, math.ceil(1 / rate - 1e-9))


# --- Reading the labelled rows ------------------------------------------------------------------------------------

@dataclass
class LabelledRows:
    rows: list[Row]
    gold: dict[int, dict[str, bool]]  # line -> verdict key -> positive?


def _label_error(line: int, key: str, value) -> str | None:
    if not isinstance(value, str) or value.strip().lower() not in LABELS[key]:
        return f"line {line}: {key} is {value!r}, not one of {', '.join(LABELS[key])}"
    return None


def read_labelled(path: str | Path) -> LabelledRows:
    """The rows of a CSV or JSONL file and their gold labels; every bad row (unreadable, a label outside the
    vocabulary, a reply label without a reply, a repeated prompt and response) is named by line in one error."""
    rows, errors = split_rows(path)
    problems = [str(error) for error in errors]
    gold: dict[int, dict[str, bool]] = {}
    seen: dict[tuple[str, str | None], int] = {}
    for row in rows:
        labels = {}
        for key in VERDICT_KEYS:
            value = row.extra.get(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue  # this row does not label this verdict
            problem = _label_error(row.line, key, value)
            if problem is None and key in REPLY_KEYS and row.response is None:
                problem = f"line {row.line}: {key} is labelled but the row has no response"
            if problem:
                problems.append(problem)
                continue
            labels[key] = value.strip().lower() == POSITIVE[key]
        pair = (row.prompt, row.response)
        if pair in seen:
            problems.append(f"line {row.line}: repeats line {seen[pair]} (the same prompt and response)")
        seen.setdefault(pair, row.line)
        gold[row.line] = labels
    if problems:
        shown = "; ".join(problems[:SHOWN_ERRORS])
        more = f"; and {len(problems) - SHOWN_ERRORS} more" if len(problems) > SHOWN_ERRORS else ""
        raise OperatingPointError(f"{path}: {shown}{more}")
    if not any(gold.values()):
        raise OperatingPointError(f"{path}: no gold labels; label rows under {', '.join(VERDICT_KEYS)}")
    return LabelledRows(rows, gold)


def check_counts(labelled: LabelledRows, *, target_fpr: float | None, target_recall: float | None,
                 part: str = "") -> None:
    """Enough rows of each class, for each verdict the file labels (the rule in the module's docstring);
    ``part`` names which rows these are (with --holdout: those fitted on, or those held out)."""
    problems = []
    for key in VERDICT_KEYS:
        outcomes = [labels[key] for labels in labelled.gold.values() if key in labels]
        if not outcomes:
            continue
        counts = {True: sum(outcomes), False: len(outcomes) - sum(outcomes)}
        if target_fpr is not None:
            needs = {False: (rows_needed(target_fpr), f"a false-positive rate of {target_fpr:g}"),
                     True: (MIN_ROWS, "a recall")}
        else:
            needs = {True: (rows_needed(1 - target_recall), f"a recall of {target_recall:g}"),
                     False: (MIN_ROWS, "a false-positive rate")}
        for positive, (needed, what) in needs.items():
            if counts[positive] < needed:
                name = POSITIVE[key] if positive else NEGATIVE[key]
                problems.append(f"{key} has {counts[positive]} {name} rows; estimating {what} needs at least "
                                f"{needed}")
    if problems:
        raise OperatingPointError(f"too few rows{part}: " + "; ".join(problems))


def check_holdout(fraction: float | None) -> None:
    if fraction is not None and not 0 < fraction < 1:
        raise OperatingPointError(f"--holdout is the share of rows held out; it must be between 0 and 1, not "
                                  f"{fraction:g}")


def split_holdout(labelled: LabelledRows, fraction: float, seed: int = SEED) -> tuple[LabelledRows, LabelledRows]:
    """The rows to fit on and the rows held out: a seeded ``fraction`` of each group of rows with the same labels
    (so each verdict's classes keep their shares in both parts), in file order."""
    check_holdout(fraction)
    groups: dict[tuple, list[int]] = {}
    for line, labels in labelled.gold.items():
        groups.setdefault(tuple(sorted(labels.items())), []).append(line)
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for signature in sorted(groups):  # a fixed order: the same seed holds out the same rows
        lines = groups[signature]
        held.update(lines[i] for i in rng.permutation(len(lines))[:round(fraction * len(lines))])

    def part(keep) -> LabelledRows:
        rows = [row for row in labelled.rows if keep(row.line in held)]
        return LabelledRows(rows, {row.line: labelled.gold[row.line] for row in rows})

    return part(lambda is_held: not is_held), part(lambda is_held: is_held)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- Calibrating --------------------------------------------------------------------------------------------------

def calibrate_verdicts(labelled: LabelledRows, classified: list[dict], *, target_fpr: float | None = None,
                       target_recall: float | None = None, seed: int = SEED,
                       recalibration: str = "platt") -> dict[str, dict]:
    """Per labelled verdict: the Platt map (``recalibration="platt"``; its fit, or why there is none), the chosen
    threshold on the mapped probability and the figures it achieves on the rows, with intervals. Rows whose
    verdict has no probability (the guard gave none) cannot be thresholded and are counted apart."""
    by_line = {int(record["line"]): record for record in classified}
    rng = np.random.default_rng(seed)
    out = {}
    for key in VERDICT_KEYS:
        scores, positive, unscored = _scored(labelled, by_line, key)
        if not len(scores) and not unscored:
            continue
        mapping, why = fit_platt(scores, positive) if recalibration == "platt" and len(scores) else (None, None)
        mapped = _mapped(scores, mapping)
        choice = choose_threshold(mapped, positive, target_fpr=target_fpr, target_recall=target_recall, key=key)
        out[key] = {"threshold": choice.threshold, **_figures(mapped, positive, choice.threshold, key, unscored, rng),
                    "calibration": mapping.to_dict() if mapping else {"method": "none", "reason": why or
                                                                      "--recalibration none"},
                    "ece": _ece(scores, mapped, positive)}
    return out


def _mapped(scores: np.ndarray, mapping: PlattMap | None) -> np.ndarray:
    return np.array([mapping(p) for p in scores]) if mapping else scores


def _ece(scores: np.ndarray, mapped: np.ndarray, positive: np.ndarray) -> dict:
    if not len(scores):
        return {}
    return {"before": round(calibration_error(scores, positive), 4),
            "after": round(calibration_error(mapped, positive), 4)}


def point_calibrations(verdicts: dict[str, dict], point: str = "") -> dict[str, PlattMap]:
    """The Platt maps a point's verdicts hold (a verdict left unmapped has none)."""
    return {key: PlattMap.from_dict(figures["calibration"], point) for key, figures in verdicts.items()
            if figures.get("calibration", {}).get("method") == "platt"}


def held_out_verdicts(held: LabelledRows, classified: list[dict], thresholds: dict[str, float], *,
                      target: dict[str, float], seed: int = SEED,
                      calibrations: dict[str, PlattMap] | None = None) -> dict[str, dict]:
    """Per verdict with a threshold: the FPR and recall it reaches on the held-out rows (with intervals), whether
    that meets the target (a recall target: at least it; an FPR target: at most it), and the calibration error
    there before and after the verdict's map."""
    by_line = {int(record["line"]): record for record in classified}
    rng = np.random.default_rng(seed + 1)  # not the fit's draws
    (name, goal), = target.items()
    out = {}
    for key, threshold in thresholds.items():
        scores, positive, unscored = _scored(held, by_line, key)
        mapped = _mapped(scores, (calibrations or {}).get(key))
        figures = _figures(mapped, positive, threshold, key, unscored, rng)
        reached = figures[name]["value"]
        out[key] = {**figures, "target_met": bool(reached <= goal if name == "fpr" else reached >= goal),
                    "ece": _ece(scores, mapped, positive)}
    return out


def _scored(labelled: LabelledRows, by_line: dict[int, dict], key: str) -> tuple[np.ndarray, np.ndarray, int]:
    """The probabilities and gold classes of the rows labelling ``key``, and how many had no probability."""
    scores, positive, unscored = [], [], 0
    for line, labels in labelled.gold.items():
        if key not in labels:
            continue
        p = by_line[line]["verdicts"][key].get("p_positive")
        if p is None:
            unscored += 1
            continue
        scores.append(float(p))
        positive.append(labels[key])
    return np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool), unscored


def _figures(scores: np.ndarray, positive: np.ndarray, threshold: float, key: str, unscored: int,
             rng: np.random.Generator) -> dict:
    """The FPR and recall of ``threshold`` on these rows, each with its bootstrap interval."""
    positive_rows, negative_rows = int(positive.sum()), int((~positive).sum())
    if not positive_rows or not negative_rows:
        raise OperatingPointError(f"{key}: {unscored} labelled rows got no probability from the guard, leaving "
                                  f"{positive_rows} {POSITIVE[key]} and {negative_rows} {NEGATIVE[key]}")
    flagged = scores >= threshold
    false_positives, true_positives = int((flagged & ~positive).sum()), int((flagged & positive).sum())
    return {
        "fpr": {"value": false_positives / negative_rows, "interval": interval(false_positives, negative_rows, rng)},
        "recall": {"value": true_positives / positive_rows, "interval": interval(true_positives, positive_rows, rng)},
        "rows": {POSITIVE[key]: positive_rows, NEGATIVE[key]: negative_rows},
        "unscored_rows": unscored,
    }


def _run_identity(guard, data_sha256: str, screen: str | None) -> dict:
    return {"model": guard.model_name, "reasoning": guard.reasoning, "screen": screen, "data_sha256": data_sha256}


def _classified(guard, labelled: LabelledRows, staging: Path, identity: dict, batch_size: int) -> list[dict]:
    """Every row's result, classifying only those not already in ``staging`` from an interrupted run of the
    same model, mode, screen and data (another run's rows are discarded)."""
    from tqdm.auto import tqdm

    run_file, output = staging / RUN_FILE, staging / CLASSIFIED_FILE
    if run_file.exists() and json.loads(run_file.read_text(encoding="utf-8")) != identity:
        print(f"note: {staging} holds rows classified by another run; starting again", file=sys.stderr)
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(identity), encoding="utf-8")
    done = done_lines(output)
    todo = [row for row in labelled.rows if row.line not in done]
    if done:
        print(f"resuming: {len(done)} rows already in {output}, {len(todo)} to go", file=sys.stderr)
    with tqdm(total=len(todo), desc="classify", unit="row", disable=not todo) as bar:
        for records in classify_rows(guard, todo, batch_size):
            append_lines(output, [json.dumps(record, ensure_ascii=False) for record in records])
            bar.update(len(records))
    return read_jsonl(output)


def calibrate(guard, data: str | Path, out: str | Path, *, target_fpr: float | None = None,
              target_recall: float | None = None, screen: str | None = None, batch_size: int = 16,
              seed: int = SEED, holdout: float | None = None, recalibration: str = "platt") -> dict:
    """Classify ``data`` with ``guard`` and write the operating point meeting the target to ``out``; returns
    what ``operating_point.json`` holds. The file is checked before anything is classified or written.
    ``holdout``: the share of rows (seeded by ``seed``) kept apart: the thresholds are chosen on the others, and
    the point reports what they reach on these (``held_out``). ``recalibration``: ``platt`` (a map per verdict,
    fitted on the rows the thresholds are chosen on) or ``none``."""
    if recalibration not in RECALIBRATIONS:
        raise OperatingPointError(f"--recalibration is one of {', '.join(RECALIBRATIONS)}, not {recalibration!r}")
    if (target_fpr is None) == (target_recall is None):
        raise OperatingPointError("give one target: --target-fpr or --target-recall")
    target = {"fpr": target_fpr} if target_fpr is not None else {"recall": target_recall}
    if not 0 < next(iter(target.values())) <= 1:
        raise OperatingPointError(f"the target {next(iter(target))} must be in (0, 1]")
    out = Path(out)
    if out.exists() and not (out / OPERATING_POINT_FILE).is_file() and any(out.iterdir()):
        raise OperatingPointError(f"{out} exists and is not an operating point folder; choose another --out")
    labelled = read_labelled(data)
    fit, held = labelled, None
    if holdout is not None:
        fit, held = split_holdout(labelled, holdout, seed)
        check_counts(held, target_fpr=target_fpr, target_recall=target_recall, part=" in the held-out part")
    check_counts(fit, target_fpr=target_fpr, target_recall=target_recall,
                 part=" in the part the thresholds are chosen on" if held else "")
    data_sha256 = file_sha256(data)
    staging = out.with_name(out.name + ".partial")
    # the probabilities as the model gives them: a point loaded with the guard would map them, and the new point's
    # maps, which a guard applies in place of any other point's, would then be fitted to the wrong numbers
    guard = guard.with_operating_point(None, {})
    identity = _run_identity(guard, data_sha256, screen)
    classified = _classified(guard, labelled, staging, identity, batch_size)
    verdicts = calibrate_verdicts(fit, classified, target_fpr=target_fpr, target_recall=target_recall, seed=seed,
                                  recalibration=recalibration)
    thresholds = {key: figures["threshold"] for key, figures in verdicts.items()}
    calibrations = point_calibrations(verdicts)
    point = {
        "format": FORMAT,
        "model": guard.model_name,
        "reasoning": guard.reasoning,
        "screen": screen,
        "target": target,
        "thresholds": thresholds,  # on the probability after the verdict's map, where it has one
        "calibrations": {key: mapping.to_dict() for key, mapping in calibrations.items()},
        "verdicts": verdicts,
        "data": {"file": Path(data).name, "sha256": data_sha256, "rows": len(labelled.rows),
                 "fit_rows": len(fit.rows)},
        "bootstrap": {"resamples": RESAMPLES, "seed": seed, "level": 0.95},
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if held is not None:
        point["held_out"] = {"fraction": holdout, "seed": seed, "rows": len(held.rows),
                             "verdicts": held_out_verdicts(held, classified, thresholds, target=target, seed=seed,
                                                           calibrations=calibrations)}
    _publish(staging, out, point)
    return point


def _rate(figures: dict) -> str:
    low, high = figures["interval"]
    return f"{figures['value']:.3f} [{low:.3f}, {high:.3f}]"


def summary_lines(point: dict) -> list[str]:
    """What ``calibrate`` prints: per verdict the threshold and its FPR and recall on the rows it was chosen on,
    and with a held-out part what it reaches there against the target."""
    (name, goal), = point["target"].items()
    wanted = f"FPR <= {goal:g}" if name == "fpr" else f"recall >= {goal:g}"
    held = point.get("held_out")
    lines = []
    for key, figures in point["verdicts"].items():
        fitted = "on the rows it was chosen on" if held else ""
        lines.append(f"{key}: threshold {figures['threshold']:.4f}  FPR {_rate(figures['fpr'])}  recall "
                     f"{_rate(figures['recall'])}  rows {figures['rows']} {fitted}".rstrip())
        lines.append(f"  probability: {_calibration_text(figures)}")
        if held:
            there = held["verdicts"][key]
            verdict = "met" if there["target_met"] else "missed"
            lines.append(f"  held out ({held['rows']} rows, {held['fraction']:g} of the file, seed {held['seed']}): "
                         f"FPR {_rate(there['fpr'])}  recall {_rate(there['recall'])}  rows {there['rows']}  "
                         f"target {wanted}: {verdict}{_ece_text(there.get('ece'))}")
    return lines


def _ece_text(ece: dict | None) -> str:
    return f"  calibration error {ece['before']:.3f} -> {ece['after']:.3f}" if ece else ""


def _calibration_text(figures: dict) -> str:
    """How a verdict's probability is mapped, and its calibration error on the rows it was chosen on."""
    calibration = figures.get("calibration") or {"method": "none", "reason": "made before maps were fitted"}
    if calibration["method"] == "platt":
        said = f"Platt map sigmoid({calibration['a']:.3f} * logit(p) {calibration['b']:+.3f})"
    else:
        said = f"no map ({calibration['reason']})"
    return said + _ece_text(figures.get("ece"))


def _publish(staging: Path, out: Path, point: dict) -> None:
    """Write the point into the staging folder and rename it to ``out`` (replacing an earlier operating point
    there), so ``out`` is either the old folder or the whole new one, never half of one."""
    temporary = staging / (OPERATING_POINT_FILE + ".tmp")
    temporary.write_text(json.dumps(point, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, staging / OPERATING_POINT_FILE)
    (staging / RUN_FILE).unlink()
    if out.exists():
        retired = out.with_name(out.name + ".old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(out, retired)
        os.replace(staging, out)
        shutil.rmtree(retired)
    else:
        os.replace(staging, out)


# --- Loading ------------------------------------------------------------------------------------------------------

@dataclass
class OperatingPoint:
    name: str  # the folder's name: what each result applied with it names
    thresholds: dict[str, float]
    model: str
    reasoning: str
    folder: str
    target: dict[str, float] | None = None  # {"fpr": X} or {"recall": Y}: what the thresholds were chosen for
    # per verdict, the map its probability goes through before the threshold cuts it (none: as the guard gave it)
    calibrations: dict[str, PlattMap] = field(default_factory=dict)


def load_operating_point(folder: str | Path) -> OperatingPoint:
    folder = Path(folder)
    path = folder / OPERATING_POINT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OperatingPointError(f"{folder} is not an operating point folder (no {OPERATING_POINT_FILE}); "
                                  "make one with python -m guardreasoner calibrate") from None
    except json.JSONDecodeError as error:
        raise OperatingPointError(f"{path}: not valid JSON ({error.msg})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise OperatingPointError(f"{path}: not a {FORMAT} file")
    thresholds = data.get("thresholds")
    if (not isinstance(thresholds, dict) or set(thresholds) - set(VERDICT_KEYS)
            or not all(isinstance(t, (int, float)) and 0 <= t <= 1 for t in thresholds.values())):
        raise OperatingPointError(f"{path}: 'thresholds' must map verdict names to numbers between 0 and 1")
    target = data.get("target") if isinstance(data.get("target"), dict) else None
    name = folder.resolve().name
    maps = data.get("calibrations", {})  # a point written before maps were fitted has none
    if not isinstance(maps, dict) or set(maps) - set(thresholds):
        raise OperatingPointError(f"{path}: 'calibrations' must map verdicts that have a threshold to their maps")
    try:
        calibrations = {key: PlattMap.from_dict(value, name) for key, value in maps.items()}
    except ValueError as error:
        raise OperatingPointError(f"{path}: {error}") from None
    return OperatingPoint(name, dict(thresholds), str(data.get("model")), str(data.get("reasoning")), str(folder),
                          target, calibrations)


def same_model(calibrated: str, loaded: str) -> bool:
    """A model named the same way, or the same local folder reached by another path."""
    if calibrated == loaded:
        return True
    first, second = Path(calibrated).expanduser(), Path(loaded).expanduser()
    return first.is_dir() and second.is_dir() and first.resolve() == second.resolve()


def check_model(point: OperatingPoint, model: str) -> None:
    """An operating point's thresholds mean something only for the model whose probabilities they cut."""
    if not same_model(point.model, model):
        raise OperatingPointError(f"the operating point {point.folder} was calibrated for {point.model}, "
                                  f"not {model}; calibrate one for this model")


def check_fits(point: OperatingPoint, model: str, reasoning: str) -> None:
    """An operating point's thresholds mean something only for the model and mode whose probabilities they cut."""
    check_model(point, model)
    if point.reasoning != reasoning:
        raise OperatingPointError(f"the operating point {point.folder} was calibrated with reasoning "
                                  f"{point.reasoning}; load the guard with that mode (--reasoning "
                                  f"{point.reasoning}), not {reasoning}")
