"""``calibrate --holdout``: the thresholds are chosen on one seeded, stratified part of the rows, and the FPR and
recall they reach on the other part are reported (and printed) beside the target. The guard is a real cascade in
``off`` over a screen whose probabilities are fixed per prompt (or, for the reasoning model's probabilities, a
real guard in ``full`` over a backend reporting chosen verdict-token log-probabilities), so every figure can be
counted here directly."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from guardreasoner.backends.base import Backend, Generation, StreamChunk
from guardreasoner.cascade import Cascade
from guardreasoner.cli import main
from guardreasoner.guard import Guard
from guardreasoner.operating_point import (
    OPERATING_POINT_FILE,
    OperatingPointError,
    calibrate,
    choose_threshold,
    load_operating_point,
    read_labelled,
    split_holdout,
)
from guardreasoner.parser import split_upstream_prompt
from guardreasoner.recalibration import PlattMap, calibration_error, fit_platt
from guardreasoner.results import UNCALIBRATED
from guardreasoner.screen import Thresholds
from tests.test_calibrate import write_csv
from tests.test_screen import StubScreen
from tests.test_service import ScriptedBackend

KEY = "prompt_harmfulness"


@pytest.fixture()
def labelled(tmp_path):
    """60 harmful rows scored between 0.3 and 1, 60 unharmful between 0 and 0.7 (seeded): they overlap, so the
    threshold chosen on half the rows reaches a different FPR and recall on the other half."""
    rng = np.random.default_rng(7)
    rows = [{"prompt": f"harmful request {i}", KEY: "harmful", "p": rng.uniform(0.3, 1.0)} for i in range(60)]
    rows += [{"prompt": f"plain request {i}", KEY: "unharmful", "p": rng.uniform(0.0, 0.7)} for i in range(60)]
    scores = {row["prompt"]: row.pop("p") for row in rows}
    return write_csv(tmp_path / "rows.csv", rows), scores


def stub_guard(scores: dict[str, float]) -> Cascade:
    screen = StubScreen({prompt: {KEY: p} for prompt, p in scores.items()}, Thresholds(cut=0.5, low=0.2, high=0.8))
    return Cascade(Guard(ScriptedBackend()), screen, "off")


def test_the_split_is_seeded_stratified_and_whole(labelled):
    data, _ = labelled
    rows = read_labelled(data)
    fit, held = split_holdout(rows, 0.5, seed=0)
    assert not set(fit.gold) & set(held.gold)
    assert set(fit.gold) | set(held.gold) == set(rows.gold)
    for part in (fit, held):  # half of each class in each part
        assert sum(labels[KEY] for labels in part.gold.values()) == 30 and len(part.gold) == 60
    assert set(split_holdout(rows, 0.5, seed=0)[1].gold) == set(held.gold)
    assert set(split_holdout(rows, 0.5, seed=1)[1].gold) != set(held.gold)
    assert len(split_holdout(rows, 0.25, seed=0)[1].gold) == 30  # 15 of each class


def test_thresholds_come_from_the_fit_part_and_the_held_out_figures_are_counted_on_the_other(labelled, tmp_path):
    data, scores = labelled
    point = calibrate(stub_guard(scores), data, tmp_path / "point", target_fpr=0.1, holdout=0.5)
    fit, held = split_holdout(read_labelled(data), 0.5, seed=0)
    prompts = {row.line: row.prompt for row in read_labelled(data).rows}

    def arrays(part):
        lines = sorted(part.gold)
        return np.array([scores[prompts[line]] for line in lines]), np.array([part.gold[line][KEY] for line in lines])

    fit_p, fit_gold = arrays(fit)
    mapping = fit_platt(fit_p, fit_gold)[0]  # fitted on the fit part only, and the threshold chosen after it
    assert point["calibrations"] == {KEY: mapping.to_dict()}
    threshold = choose_threshold([mapping(p) for p in fit_p], fit_gold, target_fpr=0.1).threshold
    assert point["thresholds"] == {KEY: threshold}
    assert point["data"]["rows"] == 120 and point["data"]["fit_rows"] == 60
    assert point["verdicts"][KEY]["fpr"]["value"] <= 0.1  # met on the rows it was chosen on

    held_p, held_gold = arrays(held)
    flagged = np.array([mapping(p) for p in held_p]) >= threshold
    fpr, recall = flagged[~held_gold].mean(), flagged[held_gold].mean()
    figures = point["held_out"]["verdicts"][KEY]
    assert (figures["fpr"]["value"], figures["recall"]["value"]) == pytest.approx((fpr, recall))
    assert figures["rows"] == {"harmful": 30, "unharmful": 30}
    assert figures["target_met"] == (fpr <= 0.1)
    assert figures["ece"] == {"before": round(calibration_error(held_p, held_gold), 4),
                              "after": round(calibration_error([mapping(p) for p in held_p], held_gold), 4)}
    for name in ("fpr", "recall"):
        low, high = figures[name]["interval"]
        assert low <= figures[name]["value"] <= high
    assert (point["held_out"]["fraction"], point["held_out"]["seed"], point["held_out"]["rows"]) == (0.5, 0, 60)
    loaded = load_operating_point(tmp_path / "point")
    assert loaded.thresholds == {KEY: threshold} and loaded.calibrations[KEY] == replace(mapping, point="point")


def test_the_command_prints_both_and_refuses_too_small_a_part(labelled, tmp_path, monkeypatch, capsys):
    import guardreasoner.cli as cli

    data, scores = labelled
    loads = []
    monkeypatch.setattr(cli, "_load", lambda args: loads.append(args) or stub_guard(scores))
    out = tmp_path / "point"
    assert main(["calibrate", "--model", "scripted", "--data", str(data), "--target-fpr", "0.1", "--holdout", "0.5",
                 "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    point = json.loads((out / OPERATING_POINT_FILE).read_text())
    held = point["held_out"]["verdicts"][KEY]
    assert printed[0].startswith(f"{KEY}: threshold {point['thresholds'][KEY]:.4f}  FPR ")
    assert printed[0].endswith("on the rows it was chosen on")
    mapped = point["verdicts"][KEY]
    assert printed[1] == (f"  probability: Platt map sigmoid({mapped['calibration']['a']:.3f} * logit(p) "
                          f"{mapped['calibration']['b']:+.3f})  calibration error {mapped['ece']['before']:.3f} -> "
                          f"{mapped['ece']['after']:.3f}")
    verdict = "met" if held["target_met"] else "missed"
    assert printed[2] == (
        f"  held out (60 rows, 0.5 of the file, seed 3): FPR {held['fpr']['value']:.3f} "
        f"[{held['fpr']['interval'][0]:.3f}, {held['fpr']['interval'][1]:.3f}]  recall {held['recall']['value']:.3f} "
        f"[{held['recall']['interval'][0]:.3f}, {held['recall']['interval'][1]:.3f}]  "
        f"rows {{'harmful': 30, 'unharmful': 30}}  target FPR <= 0.1: {verdict}  calibration error "
        f"{held['ece']['before']:.3f} -> {held['ece']['after']:.3f}")
    assert point["held_out"]["seed"] == 3

    # 60 unharmful rows, 10% held out: 6 of them, under the 20 an FPR of 0.05 needs; 90%: the same on the fit part.
    for share, part in (("0.1", "in the held-out part"), ("0.9", "in the part the thresholds are chosen on")):
        assert main(["calibrate", "--model", "scripted", "--data", str(data), "--target-fpr", "0.05",
                     "--holdout", share, "--out", str(tmp_path / "small")]) == 2
        assert f"too few rows {part}: prompt_harmfulness has 6 unharmful rows" in capsys.readouterr().err
    assert not (tmp_path / "small").exists() and not (tmp_path / "small.partial").exists()
    loaded = len(loads)
    assert main(["calibrate", "--model", "scripted", "--data", str(data), "--target-fpr", "0.1", "--holdout", "1.5",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "it must be between 0 and 1, not 1.5" in capsys.readouterr().err and len(loads) == loaded


def test_a_holdout_share_outside_0_1_is_refused(labelled, tmp_path):
    data, scores = labelled
    with pytest.raises(OperatingPointError, match="must be between 0 and 1, not 0"):
        calibrate(stub_guard(scores), data, tmp_path / "point", target_fpr=0.1, holdout=0)


def test_a_benchmark_becomes_a_calibrate_file_without_repeats(shared_dir, tmp_path, capsys):
    from eval.labelled_csv import main as labelled_csv

    out = tmp_path / "moderation.csv"
    assert labelled_csv(["OpenAIModeration", "--data-dir", str(shared_dir / "benchmarks/guardreasoner"),
                         "--out", str(out)]) == 0
    assert "1670 rows (0 unlabelled and 10 repeats left out)" in capsys.readouterr().err
    rows = read_labelled(out)  # calibrate's own reader: no repeats, every label in the vocabulary
    assert len(rows.rows) == 1670
    assert sum(labels[KEY] for labels in rows.gold.values()) == 517


class VerdictTokenBackend(Backend):
    """A reasoning model that writes each request's verdict with a chosen probability at the verdict token
    (``top_logprobs``), as transformers, CTranslate2 and vLLM report it: harmful where p >= 0.5."""

    name = "verdict-tokens"

    def __init__(self, scores: dict[str, float]):
        super().__init__("verdict-tokens")
        self.scores = scores

    def generate(self, prompts, sampling, on_progress=None):
        out = []
        for prompt in prompts:
            p = self.scores[split_upstream_prompt(prompt)[0]]
            tokens = ["Answers: \nRequest: ", "harmful" if p >= 0.5 else "unharmful", "\nCompletion: None\n",
                      "Response: None\n"]
            alternatives = [{}, {"harmful": math.log(p), "unharmful": math.log(1 - p)}, {}, {}]
            out.append(Generation("".join(tokens), 10, 4, finish_reason="stop", tokens=tokens,
                                  top_logprobs=alternatives))
        return out

    def stream(self, prompt, sampling, stop=None):
        yield StreamChunk("", self.generate([prompt], sampling)[0])


def test_the_reasoning_models_verdict_probabilities_are_calibrated_like_the_screens(labelled, tmp_path):
    """In reasoning full the probabilities are the reasoning model's, read at its verdict token: calibrate fits a
    map on them and chooses the threshold on the mapped probability; a guard with the point then reports that
    probability, names the map, and overrides the label the model wrote where its p says otherwise."""
    data, scores = labelled
    guard = Guard(VerdictTokenBackend(scores))
    results = guard.classify(list(scores))
    assert [r.verdicts[KEY].p_positive for r in results] == pytest.approx(list(scores.values()))
    assert {r.verdicts[KEY].decided_by for r in results} == {"reasoning"}
    earlier = PlattMap(3.0, 1.0, 50, "earlier")  # a point the guard was loaded with: calibrate fits on raw p
    point = calibrate(guard.with_operating_point("earlier", {KEY: 0.5}, {KEY: earlier}), data,
                      tmp_path / "reasoned", target_fpr=0.1, holdout=0.5)
    assert point["reasoning"] == "full" and point["held_out"]["verdicts"][KEY]["rows"]["unharmful"] == 30
    fit, _ = split_holdout(read_labelled(data), 0.5)
    prompts = {row.line: row.prompt for row in read_labelled(data).rows}
    fit_p, fit_gold = [scores[prompts[line]] for line in fit.gold], [fit.gold[line][KEY] for line in fit.gold]
    mapping = replace(fit_platt(fit_p, fit_gold)[0], point="reasoned")
    threshold = choose_threshold([mapping(p) for p in fit_p], fit_gold, target_fpr=0.1).threshold
    assert point["thresholds"] == {KEY: threshold}
    written = [r.verdicts[KEY].label for r in results]
    loaded = load_operating_point(tmp_path / "reasoned")
    pointed = guard.with_operating_point(loaded.name, loaded.thresholds, loaded.calibrations).classify(list(scores))
    assert [r.verdicts[KEY].p_positive for r in pointed] == pytest.approx([mapping(p) for p in scores.values()])
    assert {r.verdicts[KEY].calibration for r in pointed} == {f"{mapping.describe()}; over {UNCALIBRATED}"}
    assert [r.verdicts[KEY].label for r in pointed] == ["harmful" if mapping(p) >= threshold else "unharmful"
                                                        for p in scores.values()]
    overridden = sum(a != b.verdicts[KEY].label for a, b in zip(written, pointed))
    raw_cut = min(p for p in scores.values() if mapping(p) >= threshold)  # the same cut on the raw probability
    assert overridden == sum(0.5 <= p < raw_cut for p in scores.values()) > 0  # the model said harmful
