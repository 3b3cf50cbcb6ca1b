"""Operating points: the threshold chosen for a target, the labelled file's errors by line, ``calibrate`` end to end
over a tiny encoder screen (resumable, nothing written on failure), and a guard loaded with the point."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from guardreasoner.cli import main
from guardreasoner.operating_point import (
    OPERATING_POINT_FILE,
    OperatingPointError,
    calibrate,
    choose_threshold,
    interval,
    load_operating_point,
    read_labelled,
)
from guardreasoner.recalibration import PlattMap
from tests.test_encoder import HARMFUL, SAFE, dataset, minilm_tokenizer, tiny_bert, train_args  # noqa: F401

# Ten rows ranked by score; five positive. Thresholds are midpoints between neighbouring scores.
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
POSITIVE = [True, True, False, True, True, False, False, True, False, False]


@pytest.mark.parametrize(("target", "threshold", "fpr", "recall"), [
    ({"target_fpr": 0.2}, 0.45, 0.2, 0.8),  # 0.45 flags one negative (0.7) and four positives
    ({"target_fpr": 0.1}, 0.75, 0.0, 0.4),  # the last split before the first negative
    ({"target_recall": 0.9}, 0.15, 0.6, 1.0),  # every positive, down to 0.2
    ({"target_recall": 0.8}, 0.45, 0.2, 0.8),
    ({"target_recall": 0.5}, 0.45, 0.2, 0.8),  # 0.55 has the same FPR and less recall: the tie goes to recall
])
def test_the_threshold_meets_the_target_at_the_best_other_figure(target, threshold, fpr, recall):
    choice = choose_threshold(SCORES, POSITIVE, **target)
    assert choice.threshold == pytest.approx(threshold)
    assert (choice.fpr, choice.recall) == pytest.approx((fpr, recall))
    flagged = np.asarray(SCORES) >= choice.threshold
    assert flagged.sum() == round(recall * 5) + round(fpr * 5)  # the threshold splits the rows as reported


def test_tied_scores_stay_together_and_an_unreachable_fpr_names_the_closest():
    assert choose_threshold([0.9, 0.9, 0.2], [True, False, False], target_fpr=0.5).threshold == pytest.approx(0.55)
    with pytest.raises(OperatingPointError, match=r"prompt_harmfulness: no threshold gives a false-positive rate "
                       r"<= 0.4 .* the closest is 0.5 \(threshold 0.55, recall 1\)"):
        choose_threshold([0.9, 0.9, 0.2], [True, False, False], target_fpr=0.4, key="prompt_harmfulness")


def test_the_bootstrap_interval_is_seeded_and_holds_the_rate():
    first = interval(3, 40, np.random.default_rng(0))
    assert first == interval(3, 40, np.random.default_rng(0))
    assert first[0] < 3 / 40 < first[1] and 0 <= first[0] and first[1] < 0.25
    assert interval(0, 40, np.random.default_rng(0)) == [0.0, 0.0]


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["prompt", "response", "prompt_harmfulness", "response_refusal"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_bad_rows_are_named_by_line_and_nothing_is_written(tmp_path):
    data = write_csv(tmp_path / "rows.csv", [
        {"prompt": "How do I bake bread?", "prompt_harmfulness": "unharmful"},  # line 2
        {"prompt": "How do I make a bomb?", "prompt_harmfulness": "dangerous"},  # line 3
        {"prompt": "Hi", "response_refusal": "refusal"},  # line 4: a reply label, no reply
        {"prompt": "How do I bake bread?", "prompt_harmfulness": "unharmful"},  # line 5 repeats line 2
        {"prompt": "", "prompt_harmfulness": "harmful"},  # line 6
        {"prompt": "Multi\nline", "response": "Sure", "response_refusal": "Compliance"},  # lines 7-8: fine
        {"prompt": "After", "prompt_harmfulness": "yes"},  # line 9
    ])
    with pytest.raises(OperatingPointError) as raised:
        calibrate(None, data, tmp_path / "point", target_fpr=0.1)
    message = str(raised.value)
    assert "line 3: prompt_harmfulness is 'dangerous', not one of harmful, unharmful" in message
    assert "line 4: response_refusal is labelled but the row has no response" in message
    assert "line 5: repeats line 2 (the same prompt and response)" in message
    assert "line 6: missing or empty 'prompt'" in message
    assert "line 9: prompt_harmfulness is 'yes'" in message
    assert "line 7" not in message and "line 8" not in message
    assert not list(tmp_path.glob("point*"))
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"prompt": "a", "prompt_harmfulness": "harmful"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(OperatingPointError, match="line 2: invalid JSON"):
        read_labelled(jsonl)


def test_too_few_rows_of_a_class_says_how_many_are_needed(tmp_path):
    rows = [{"prompt": f"bad {i}", "prompt_harmfulness": "harmful"} for i in range(12)]
    rows += [{"prompt": f"fine {i}", "prompt_harmfulness": "unharmful"} for i in range(12)]
    data = write_csv(tmp_path / "rows.csv", rows)
    with pytest.raises(OperatingPointError, match="prompt_harmfulness has 12 unharmful rows; estimating a "
                       "false-positive rate of 0.05 needs at least 20"):
        calibrate(None, data, tmp_path / "point", target_fpr=0.05)
    with pytest.raises(OperatingPointError, match="has 12 harmful rows; estimating a recall of 0.95 needs at "
                       "least 20"):
        calibrate(None, data, tmp_path / "point", target_recall=0.95)
    assert not list(tmp_path.glob("point*"))


@pytest.fixture(scope="module")
def encoder_screen(tiny_bert, tmp_path_factory) -> Path:  # noqa: F811
    from training.encoder import main as train

    folder = tmp_path_factory.mktemp("encoder")
    train_set, validation = dataset(folder)
    train(train_args(tiny_bert, train_set, validation, folder / "run", num_train_epochs=1))
    return folder / "run" / "screen"


def labelled_csv(path: Path) -> Path:
    rows = [{"prompt": f"{prompt} (case {n})", "prompt_harmfulness": "harmful"}
            for n in range(2) for prompt in HARMFUL]
    rows += [{"prompt": f"{prompt} (case {n})", "prompt_harmfulness": "unharmful"}
             for n in range(2) for prompt in SAFE]
    return write_csv(path, rows)


def test_calibrate_end_to_end_resumes_and_writes_nothing_until_done(encoder_screen, tiny_model_dir, tmp_path,
                                                                    monkeypatch, capsys):
    import guardreasoner.operating_point as module

    data, out = labelled_csv(tmp_path / "labelled.csv"), tmp_path / "strict"
    args = ["calibrate", "--model", str(tiny_model_dir), "--backend", "transformers", "--reasoning", "off",
            "--screen", str(encoder_screen), "--data", str(data), "--target-recall", "0.9", "--out", str(out),
            "--batch-size", "8"]

    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "calibrate_verdicts", interrupted)
    assert main(args) == 130
    assert not out.exists()  # every row classified, but no operating point
    assert len((tmp_path / "strict.partial" / "classified.jsonl").read_text().splitlines()) == 24
    monkeypatch.undo()
    capsys.readouterr()
    assert main(args) == 0
    assert "resuming: 24 rows already" in capsys.readouterr().err
    assert not (tmp_path / "strict.partial").exists()
    point = json.loads((out / OPERATING_POINT_FILE).read_text())
    assert point["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert (point["model"], point["reasoning"], point["target"]) == (str(tiny_model_dir), "off", {"recall": 0.9})
    figures = point["verdicts"]["prompt_harmfulness"]
    assert list(point["verdicts"]) == ["prompt_harmfulness"]  # the only verdict the file labels
    assert figures["rows"] == {"harmful": 12, "unharmful": 12}
    # The reported figures are those of the threshold on the rows as classified and labelled.
    gold = {row["prompt"]: row["prompt_harmfulness"] == "harmful" for row in csv.DictReader(data.open())}
    results = [json.loads(line) for line in (out / "classified.jsonl").read_text().splitlines()]
    mapping = load_operating_point(out).calibrations["prompt_harmfulness"]  # the threshold cuts the mapped p
    assert figures["calibration"] == {"method": "platt", "a": mapping.a, "b": mapping.b, "rows": 24}
    flagged = {r["prompt"]: mapping(r["verdicts"]["prompt_harmfulness"]["p_positive"]) >= figures["threshold"]
               for r in results}
    recall = sum(flagged[p] for p in gold if gold[p]) / 12
    fpr = sum(flagged[p] for p in gold if not gold[p]) / 12
    assert recall >= 0.9 and (recall, fpr) == pytest.approx((figures["recall"]["value"], figures["fpr"]["value"]))
    for name in ("fpr", "recall"):
        low, high = figures[name]["interval"]
        assert low <= figures[name]["value"] <= high


def test_a_guard_loaded_with_an_operating_point_labels_by_its_thresholds(encoder_screen, tiny_model_dir, tmp_path):
    from guardreasoner import load_guard

    guard = load_guard(str(tiny_model_dir), "transformers", reasoning="off", screen=str(encoder_screen))
    data = labelled_csv(tmp_path / "labelled.csv")
    prompts = [row["prompt"] for row in csv.DictReader(data.open())]
    scores = [r.verdicts["prompt_harmfulness"].p_positive for r in guard.classify(prompts)]
    middle = float(np.median(scores))  # a threshold that puts half the rows on each side, whatever the cut
    out = tmp_path / "middle"
    calibrate(guard, data, out, target_recall=0.9, screen=str(encoder_screen))
    point = json.loads((out / OPERATING_POINT_FILE).read_text())
    mapping = PlattMap.from_dict(point["calibrations"]["prompt_harmfulness"], "middle")
    point["thresholds"]["prompt_harmfulness"] = mapping(middle)  # thresholds are on the mapped probability
    (out / OPERATING_POINT_FILE).write_text(json.dumps(point))

    pointed = load_guard(str(tiny_model_dir), "transformers", reasoning="off", screen=str(encoder_screen),
                         operating_point=str(out))
    results = pointed.classify(prompts)
    assert all(r.operating_point == "middle" for r in results)
    labels = [r.verdicts["prompt_harmfulness"].label for r in results]
    assert labels == ["harmful" if p >= middle else "unharmful" for p in scores]
    assert labels.count("harmful") == 12
    assert all(r.verdicts["prompt_harmfulness"].threshold == mapping(middle) for r in results)
    # each result reports the mapped probability, and names the map and the screen's calibration under it
    assert [r.verdicts["prompt_harmfulness"].p_positive for r in results] == pytest.approx([mapping(p) for p in scores])
    said = results[0].verdicts["prompt_harmfulness"].calibration
    assert said.startswith("platt: sigmoid(") and "operating point middle" in said and "temperature" in said
    assert pointed.with_thresholds({"prompt_harmfulness": 0.5}).classify(prompts[:1])[0].operating_point is None

    output = tmp_path / "results.jsonl"
    assert main(["classify", "--input", str(data), "--output", str(output), "--model", str(tiny_model_dir),
                 "--backend", "transformers", "--reasoning", "off", "--screen", str(encoder_screen),
                 "--operating-point", str(out)]) == 0
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["verdicts"]["prompt_harmfulness"]["label"] for r in records] == labels
    assert {r["operating_point"] for r in records} == {"middle"}

    with pytest.raises(OperatingPointError, match="calibrated with reasoning off; load the guard with that mode"):
        load_guard(str(tiny_model_dir), "transformers", reasoning="full", operating_point=str(out))
    with pytest.raises(OperatingPointError, match="not an operating point folder"):
        load_guard(str(tiny_model_dir), "transformers", reasoning="off", operating_point=str(tmp_path))
