"""Shipping the embedded guard: the better-scoring adapter, in float16, with the card filled from the run's files."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from training.ship import fill_section, main, winner

CARD = """# Card
<!-- begin winner -->
old
<!-- end winner -->
prose stays
<!-- begin comparison -->
<!-- end comparison -->
<!-- begin times -->
<!-- end times -->
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
    target = tmp_path / "shipped"
    target.mkdir()
    (target / "README.md").write_text(CARD)
    chosen = main(["--candidates", f"rsft={rsft}", f"hs-dpo={dpo}", "--reports", str(tmp_path / "rsft.json"),
                   str(tmp_path / "hs-dpo.json"), "--to", str(target), "--comparison", str(tmp_path / "comparison.md"),
                   "--times", str(tmp_path / "times.txt")])
    assert chosen == "rsft"
    weights = load_file(target / "adapter_model.safetensors")["base_model.lora_A.weight"]
    assert weights.dtype == torch.float16 and torch.all(weights == 0.25)
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    card = (target / "README.md").read_text()
    assert "- rsft: mean strict F1 70.00 over 1 cells (shipped)" in card and "- hs-dpo: mean strict F1 65.00" in card
    assert "| rsft | 70.00 |" in card and "- eval rsft: 50 s" in card and "prose stays" in card
