"""``eval score``'s calibration and ranking figures on small synthetic run folders whose answers are worked out by
hand: ECE, Brier, ROC AUC, recall at 1% and 5% FPR, the reliability bins and ROC points in the report, the
markdown table, and the reliability/ROC page written beside the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.cli import main as eval_main
from eval.score import score_run
from stagekit.curves import curves_figure

# ToxicChat (prompt_harmfulness): four harmful rows and twenty unharmful ones, with these probabilities.
HARMFUL_P = [0.95, 0.85, 0.75, 0.35]
UNHARMFUL_P = [0.65] + [0.05] * 19


def answers(label: str) -> str:
    return f"Answers: \nRequest: {label}\nCompletion: None\nResponse: None\n"


def write_run(folder: Path, benchmark: str, rows: list[tuple[str, float | None]]) -> None:
    """A run folder as ``eval run`` writes it: each row's gold label, an Answers block, and its probability."""
    (folder / benchmark).mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (gold, p) in enumerate(rows):
        record = {"index": index, "prompt": f"request {index}", "response": None,
                  "labels": {"prompt_harmfulness": gold}, "predict": answers(gold)}
        if p is not False:
            record["p_positive"] = {"prompt_harmfulness": p, "response_refusal": None, "response_harmfulness": None}
        lines.append(json.dumps(record))
    (folder / benchmark / "generated_predictions.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture()
def run(tmp_path) -> Path:
    folder = tmp_path / "run"
    rows = [("harmful", p) for p in HARMFUL_P] + [("unharmful", p) for p in UNHARMFUL_P]
    write_run(folder, "ToxicChat", rows + [("harmful", None)])  # one row the guard gave no probability
    # A cell whose rows carry no probability at all gets no figures.
    write_run(folder, "SimpleSafetyTests", [("harmful", False), ("unharmful", False)])
    return folder


def test_the_figures_are_those_worked_out_by_hand(run):
    cells = {c["benchmark"]: c for c in score_run(run, "strict")["cells"]}
    toxic = cells["ToxicChat"]
    assert (toxic["scored_rows"], toxic["unscored_rows"]) == (24, 1)
    # Brier: positives (0.05² + 0.15² + 0.25² + 0.65²) = 0.51, negatives 0.65² + 19 × 0.05² = 0.47; over 24 rows.
    assert toxic["brier"] == pytest.approx(0.98 / 24)
    # ECE: bins 0 (19 rows at 0.05, none positive), 3 (0.35, positive), 6 (0.65, negative), 7, 8, 9 (positive):
    # gaps 0.05 × 19, 0.65, 0.65, 0.25, 0.15, 0.05, each weighted by its share of the 24 rows.
    assert toxic["ece"] == pytest.approx((0.05 * 19 + 0.65 + 0.65 + 0.25 + 0.15 + 0.05) / 24)
    # AUC: of the 4 × 20 pairs only (0.35 positive, 0.65 negative) is ranked wrong.
    assert toxic["roc_auc"] == pytest.approx(79 / 80)
    # 1% of 20 negatives is none: the threshold stays above 0.65 and catches three positives; 5% lets the one
    # negative at 0.65 through, and then the positive at 0.35 is caught too.
    assert toxic["recall_at_1pct_fpr"] == pytest.approx(0.75)
    assert toxic["recall_at_5pct_fpr"] == pytest.approx(1.0)
    bins = toxic["reliability"]
    assert [b["mean_p"] for b in bins] == pytest.approx([0.05, 0.35, 0.65, 0.75, 0.85, 0.95])
    assert [(b["positive_share"], b["rows"]) for b in bins] == [(0, 19), (1, 1), (0, 1), (1, 1), (1, 1), (1, 1)]
    # AP: ranked, the positives sit at ranks 1, 2, 3 (precision 1) and 5 (precision 4/5, the 0.65 negative above it).
    assert toxic["average_precision"] == pytest.approx((1 + 1 + 1 + 0.8) / 4)
    pr = list(zip(toxic["pr"]["recall"], toxic["pr"]["precision"]))
    assert pr[0] == (0.0, 1.0) and (0.75, 1.0) in pr and (1.0, 0.8) in pr
    roc = list(zip(toxic["roc"]["fpr"], toxic["roc"]["tpr"]))
    assert roc[-1] == (1.0, 1.0) and (0.0, 0.75) in roc and (0.05, 1.0) in roc
    assert "ece" not in cells["SimpleSafetyTests"] and "scored_rows" not in cells["SimpleSafetyTests"]
    paper = {c["benchmark"]: c for c in score_run(run, "paper")["cells"]}  # the figures do not depend on scoring
    assert paper["ToxicChat"]["roc_auc"] == toxic["roc_auc"] and paper["ToxicChat"]["ece"] == toxic["ece"]


def test_one_class_gives_calibration_but_no_ranking(tmp_path):
    write_run(tmp_path / "run", "ToxicChat", [("unharmful", 0.1), ("unharmful", 0.3)])
    (toxic,) = score_run(tmp_path / "run", "strict")["cells"]
    assert toxic["brier"] == pytest.approx((0.01 + 0.09) / 2) and toxic["ece"] == pytest.approx(0.2)
    assert toxic["roc_auc"] is None and toxic["recall_at_5pct_fpr"] is None and "roc" not in toxic
    assert toxic["average_precision"] is None and "pr" not in toxic


def test_score_writes_the_table_and_the_curves_page_beside_the_report(run, tmp_path, capsys):
    out = tmp_path / "reports" / "strict.json"
    out.parent.mkdir()
    assert eval_main(["score", str(run), "--scoring", "strict", "--json", str(out), "--name", "synthetic"]) == 0
    captured = capsys.readouterr()
    table = captured.out
    assert "| cell | scored rows | ECE | Brier | ROC AUC | recall at 1% FPR | recall at 5% FPR | average precision |" \
        in table
    (row,) = [line for line in table.splitlines() if line.startswith("| ToxicChat (prompt_harmfulness) | 24")]
    cells = row.strip("| ").split(" | ")
    assert cells[1] == "24 (+1 without p)" and cells[5:] == ["75.0", "100.0", "0.950"]
    # as worked out above, to the table's three decimals
    assert [float(x) for x in cells[2:5]] == pytest.approx([2.7 / 24, 0.98 / 24, 79 / 80], abs=0.0006)
    assert "SimpleSafetyTests (prompt_harmfulness) | 2" not in table.split("Verdict probabilities")[1]
    page = out.parent / "strict-curves.html"
    assert f"wrote {page}" in captured.err
    html = page.read_text()
    assert "Reliability" in html and f"ToxicChat (prompt_harmfulness): AUC {cells[4]}" in html

    # The page is drawn from the report alone: the JSON keeps each cell's bins and ROC points.
    figure = curves_figure(json.loads(out.read_text()), "synthetic")
    reliability, roc, pr = (trace for trace in figure.data if trace.name and trace.name.startswith("ToxicChat"))
    assert list(reliability.x) == pytest.approx([0.05, 0.35, 0.65, 0.75, 0.85, 0.95])
    assert list(reliability.y) == [0, 1, 0, 1, 1, 1]
    assert (0.05, 1.0) in zip(roc.x, roc.y)
    assert pr.name == "ToxicChat (prompt_harmfulness): AP 0.950" and (1.0, 0.8) in zip(pr.x, pr.y)

    # --curves chooses the place; a run without probabilities writes no page and says why.
    plain = tmp_path / "plain"
    write_run(plain, "ToxicChat", [("harmful", False), ("unharmful", False)])
    assert eval_main(["score", str(plain), "--scoring", "strict", "--curves", str(tmp_path / "c.html")]) == 0
    assert "no cell's rows carry verdict probabilities" in capsys.readouterr().err
    assert not (tmp_path / "c.html").exists()
