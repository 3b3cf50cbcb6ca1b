"""Shipping the embedded guard: the better-scoring adapter, in float16, with the card filled from the run's files."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from stagekit.metrics import all_positive_f1, balanced_accuracy
from training.ship import fill_section, hs_dpo_report, main, winner

CARD = """# Card
<!-- begin winner -->
old
<!-- end winner -->
prose stays
<!-- begin comparison -->
<!-- end comparison -->
<!-- begin times -->
<!-- end times -->
<!-- begin hs-dpo -->
<!-- end hs-dpo -->
"""


def report(*f1s):
    return {"cells": [{"benchmark": f"B{i}", "task": "prompt", "f1": f1} for i, f1 in enumerate(f1s)]}


def adapter(folder, value):
    folder.mkdir()
    save_file({"base_model.lora_A.weight": torch.full((2, 3), value, dtype=torch.float32)},
              str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "HuggingFaceTB/x"}))
    (folder / "optimizer.pt").write_bytes(b"not shipped")
    return folder


def test_the_winner_has_the_best_mean_f1_and_every_candidate_needs_a_report():
    reports = {"rsft": report(60.0, 40.0), "hs-dpo": report(55.0, 50.0, None)}
    assert winner({"rsft": "a", "hs-dpo": "b"}, reports) == "hs-dpo"
    with pytest.raises(ValueError, match="no report for \\['minilm'\\]"):
        winner({"rsft": "a", "minilm": "c"}, reports)


def test_sections_are_replaced_and_a_missing_one_is_an_error():
    filled = fill_section(CARD, "winner", "new\n")
    assert "new\n<!-- end winner -->" in filled and "old" not in filled and "prose stays" in filled
    with pytest.raises(ValueError, match="begin table"):
        fill_section(CARD, "table", "x")


def test_main_ships_the_winner_in_float16_and_fills_the_card(tmp_path):
    rsft, dpo = adapter(tmp_path / "rsft", 0.25), adapter(tmp_path / "hs-dpo", 0.5)
    for name, scores in {"rsft": (70.0,), "hs-dpo": (65.0,)}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(report(*scores)))
    (tmp_path / "comparison.md").write_text("| system | F1 |\n|---|---|\n| rsft | 70.00 |\n")
    (tmp_path / "times.txt").write_text("rsft: 100 s\neval rsft: 50 s\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"chosen": "cc", "rejected": "r", "task": "prompt_harmfulness", "weight": 1.0}) + "\n")
    target = tmp_path / "shipped"
    target.mkdir()
    (target / "README.md").write_text(CARD)
    chosen = main(["--candidates", f"rsft={rsft}", f"hs-dpo={dpo}", "--reports", str(tmp_path / "rsft.json"),
                   str(tmp_path / "hs-dpo.json"), "--to", str(target), "--comparison", str(tmp_path / "comparison.md"),
                   "--times", str(tmp_path / "times.txt"), "--pairs", str(pairs)])
    assert chosen == "rsft"
    weights = load_file(target / "adapter_model.safetensors")["base_model.lora_A.weight"]
    assert weights.dtype == torch.float16 and torch.all(weights == 0.25)
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    card = (target / "README.md").read_text()
    assert "- rsft: mean strict F1 70.00 over 1 cells (shipped)" in card and "- hs-dpo: mean strict F1 65.00" in card
    assert "| rsft | 70.00 |" in card and "- eval rsft: 50 s" in card and "prose stays" in card
    assert "<!-- begin hs-dpo -->\n- 1 pairs (deciding task: prompt_harmfulness 1)\n" in card
    # The shipped adapter as a candidate against a retrained one: when it stays the best, it stays as it was.
    (tmp_path / "shipped.json").write_text(json.dumps(report(75.0)))
    assert main(["--candidates", f"shipped={target}", f"rsft={rsft}", "--reports", str(tmp_path / "shipped.json"),
                 str(tmp_path / "rsft.json"), "--to", str(target)]) == "shipped"
    assert torch.all(load_file(target / "adapter_model.safetensors")["base_model.lora_A.weight"] == 0.25)
    assert "- shipped: mean strict F1 75.00 over 1 cells (shipped)" in (target / "README.md").read_text()


def test_the_hs_dpo_section_shows_pairs_losses_and_margins(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    # Model outputs may hold U+2028 unescaped: a line separator to str.splitlines, not to JSONL.
    pairs.write_text("".join(json.dumps({"chosen": "c" * (chosen - 1) + "\u2028", "rejected": "r" * 10, "task": task,
                                         "weight": weight}, ensure_ascii=False) + "\n"
                             for chosen, task, weight in [(30, "prompt_harmfulness", 0.8),
                                                          (50, "response_harmfulness", 1.2),
                                                          (40, "prompt_harmfulness", 1.0)]), encoding="utf-8")
    # Rows 0-4 were sampled (row 2 twice, as a resumed run may leave it); three of them gave a pair.
    (tmp_path / "pairs.jsonl.samples.jsonl").write_text("".join(json.dumps({"row": row}) + "\n"
                                                                for row in [0, 1, 2, 2, 3, 4]))
    run = tmp_path / "hs-dpo"
    run.mkdir()
    (run / "trainer_state.json").write_text(json.dumps({"log_history": [
        {"step": 1, "loss": 1.5, "loss/preference": 0.6931, "loss/sft": 0.4, "rewards/margins": 0.0012},
        {"step": 2, "loss": 1.25, "loss/preference": 0.69, "loss/sft": 0.3, "rewards/margins": 0.0101},
        {"step": 2, "train_loss": 1.375, "train_runtime": 12.0},
    ]}))
    report = hs_dpo_report(pairs, run)
    lines = report.splitlines()
    assert lines[0] == ("- 3 pairs from 5 mined training rows "
                        "(deciding task: prompt_harmfulness 2, response_harmfulness 1)")
    assert lines[1] == "- weights 0.80 to 1.20; mean length 40 characters chosen, 10 rejected"
    assert "| step | loss | preference loss | SFT loss | reward margin |" in lines
    assert "| 2 | 1.25 | 0.69 | 0.3 | 0.0101 |" in lines
    assert not any(line.startswith("| 2 | 1.375") for line in lines)  # the run summary is not a step
    # Without the training log (HS-DPO not run yet) the pair counts still show.
    assert hs_dpo_report(pairs, tmp_path / "missing").splitlines() == lines[:2]


def strict_report(*cells):
    """A strict report: each cell (f1, tp, fp, fn, tn)."""
    return {"cells": [{"benchmark": f"B{i}", "task": "prompt", "f1": f1,
                       "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}}
                      for i, (f1, tp, fp, fn, tn) in enumerate(cells)]}


def test_a_candidate_that_gains_f1_by_calling_more_rows_harmful_does_not_ship():
    # 10 harmful and 30 unharmful rows, then a second cell the same for all. The shipped guard finds 3 of the
    # harmful and clears 27 of the rest (F1 37.5, balanced accuracy 60); calling every row harmful scores F1 40
    # with balanced accuracy 50: a higher mean F1, and no better at telling rows apart.
    same = (40.0, 2, 2, 4, 32)
    shipped = strict_report((37.5, 3, 3, 7, 27), same)
    everything_harmful = strict_report((40.0, 10, 30, 0, 0), same)
    better = strict_report((66.67, 7, 4, 3, 26), same)
    names = {"shipped": "a", "candidate": "b"}
    assert winner(names, {"shipped": shipped, "candidate": everything_harmful}) == "shipped"
    assert winner(names, {"shipped": shipped, "candidate": better}) == "candidate"
    assert balanced_accuracy(shipped["cells"][0]) == 60.0 and balanced_accuracy(everything_harmful["cells"][0]) == 50.0
    assert all_positive_f1(shipped["cells"][0]) == 40.0  # 2 x 10 / (2 x 10 + 30)
