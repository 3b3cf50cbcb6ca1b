"""Platt maps (guardreasoner/recalibration.py): fitted on labelled probabilities, kept in an operating point and
read back with it. The rows are drawn from a known model so that the right map is known."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from guardreasoner.operating_point import (
    FORMAT,
    OPERATING_POINT_FILE,
    LabelledRows,
    OperatingPointError,
    calibrate_verdicts,
    load_operating_point,
)
from guardreasoner.recalibration import PlattMap, calibration_error, fit_platt
from guardreasoner.rows import Row

KEY = "prompt_harmfulness"


def overconfident(rows: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes drawn with P(positive) = sigmoid(0.5 * z - 1), reported as sigmoid(z): the model is twice as sure
    as it should be and leans to positive, so the right map is a = 0.5, b = -1."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, rows)
    positive = rng.random(rows) < 1 / (1 + np.exp(-(0.5 * z - 1)))
    return 1 / (1 + np.exp(-z)), positive


def test_the_fit_finds_the_map_that_made_the_rows_and_it_removes_the_calibration_error():
    scores, positive = overconfident()
    mapping, why = fit_platt(scores, positive)
    assert why is None and (mapping.a, mapping.b) == pytest.approx((0.5, -1.0), abs=0.08)
    mapped = [mapping(p) for p in scores]
    assert calibration_error(scores, positive) > 0.1 > 0.03 > calibration_error(mapped, positive)
    assert np.array_equal(np.argsort(scores, kind="stable"), np.argsort(mapped, kind="stable"))  # order kept


def test_no_map_where_the_probabilities_do_not_rank_the_rows_or_a_class_is_too_small():
    scores, positive = overconfident()
    mapping, why = fit_platt(1 - scores, positive)  # reversed: a map would have to flip the rows
    assert mapping is None and "do not rank the rows" in why
    mapping, why = fit_platt(scores[:30], np.arange(30) < 4)
    assert mapping is None and why == "not fitted: 4 positive and 26 negative rows (at least 5 of each needed)"
    separated = np.r_[np.full(10, 0.9), np.full(10, 0.2)]  # a threshold splits them perfectly: still finite
    mapping, _ = fit_platt(separated, np.arange(20) < 10)
    assert 0 < mapping.a < 50 and mapping(0.9) > 0.9 and mapping(0.2) < 0.1


def test_the_threshold_is_chosen_on_the_mapped_probability_and_splits_the_rows_as_the_raw_one_would():
    scores, positive = overconfident(400, seed=1)
    rows = LabelledRows([Row(line, f"request {line}", None, {}) for line in range(len(scores))],
                        {line: {KEY: bool(gold)} for line, gold in enumerate(positive)})
    classified = [{"line": line, "verdicts": {KEY: {"p_positive": float(p)}}} for line, p in enumerate(scores)]
    mapped = calibrate_verdicts(rows, classified, target_fpr=0.1)[KEY]
    raw = calibrate_verdicts(rows, classified, target_fpr=0.1, recalibration="none")[KEY]
    assert mapped["calibration"]["method"] == "platt" and raw["calibration"] == {"method": "none",
                                                                                  "reason": "--recalibration none"}
    assert (mapped["fpr"]["value"], mapped["recall"]["value"]) == (raw["fpr"]["value"], raw["recall"]["value"])
    assert mapped["threshold"] != raw["threshold"]
    assert mapped["ece"]["after"] < mapped["ece"]["before"] == raw["ece"]["before"] == raw["ece"]["after"]


def write(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    point = {"format": FORMAT, "model": "m", "reasoning": "off", "thresholds": {KEY: 0.4}, **fields}
    (folder / OPERATING_POINT_FILE).write_text(json.dumps(point))
    return folder


def test_a_point_reads_its_maps_back_and_an_older_point_has_none(tmp_path):
    point = load_operating_point(write(tmp_path / "mapped", calibrations={
        KEY: {"method": "platt", "a": 0.5, "b": -1.0, "rows": 300}}))
    assert point.calibrations == {KEY: PlattMap(0.5, -1.0, 300, "mapped")}
    assert load_operating_point(write(tmp_path / "older")).calibrations == {}


@pytest.mark.parametrize(("calibrations", "message"), [
    ({KEY: {"method": "platt", "a": -0.5, "b": 0.0, "rows": 10}}, "finite numbers a > 0"),
    ({KEY: {"method": "isotonic"}}, "must be {'method': 'platt'"),
    ({"response_refusal": {"method": "platt", "a": 1.0, "b": 0.0, "rows": 10}}, "verdicts that have a threshold"),
])
def test_a_bad_map_is_refused_with_the_file_named(tmp_path, calibrations, message):
    folder = write(tmp_path / "bad", calibrations=calibrations)
    with pytest.raises(OperatingPointError, match=re.escape(message)) as raised:
        load_operating_point(folder)
    assert str(raised.value).startswith(str(folder / OPERATING_POINT_FILE))
