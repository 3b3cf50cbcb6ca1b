"""The whole training recipe on CPU in minutes: synthesize traces from a teacher served on 127.0.0.1, R-SFT a
random tiny Llama on them, mine hard samples with that model, and train weighted HS-DPO on the mined pairs."""

import json

from guardreasoner.parser import parse
from tests.tiny_models import random_llama, teacher_seeds
from training.hs_dpo import main as hs_dpo
from training.mine import MiningConfig, mine
from training.rsft import main as rsft
from training.synthesize import SynthesisConfig, synthesize

# float32: TRL's default bf16 autocast is emulated on CPUs without native bf16 (3.6x slower measured on AVX2).
CPU = ["--use_cpu", "true", "--gradient_checkpointing", "false", "--report_to", "none", "--save_strategy", "no",
       "--logging_steps", "1", "--max_length", "512", "--bf16", "false"]


def test_synthesis_rsft_mining_and_weighted_dpo_chain(teacher_url, tokenizer_dir, tmp_path):
    traces = tmp_path / "traces.jsonl"
    stats = synthesize(SynthesisConfig(seeds=[], base_url=teacher_url, output=str(traces), max_tokens=200),
                       teacher_seeds())
    assert stats["kept"] == 2

    base = random_llama(tmp_path / "base", tokenizer_dir, hidden=64)
    sft = rsft(["--model_name_or_path", str(base), "--dataset_name", str(traces), "--output_dir",
                str(tmp_path / "rsft"), "--max_steps", "80", "--per_device_train_batch_size", "2",
                "--learning_rate", "5e-3", "--lr_scheduler_type", "constant", *CPU])
    losses = [entry["loss"] for entry in sft.state.log_history if "loss" in entry]
    assert losses[0] > 9 and losses[-1] < 0.5  # from chance over 49k tokens to knowing the traces

    pairs_file = tmp_path / "pairs.jsonl"
    # Sampling at temperature 1 from a model part-way through learning gives rows with mixed samples.
    pairs = mine(MiningConfig(models=[str(tmp_path / "rsft")], dataset_name=str(traces), output=str(pairs_file), k=8,
                              temperature=1.0, top_p=1.0, max_new_tokens=160, seed=0))
    assert pairs and [json.loads(line) for line in pairs_file.read_text().splitlines()] == pairs
    gold = {row["id"]: row for row in map(json.loads, traces.read_text().splitlines())}
    gold = {row["instruction"] + "\n" + row["input"]: parse(row["output"]).labels for row in gold.values()}
    for pair in pairs:
        assert parse(pair["chosen"]).labels[pair["task"]] == gold[pair["prompt"]][pair["task"]]
        assert parse(pair["rejected"]).labels[pair["task"]] != gold[pair["prompt"]][pair["task"]]
        assert 0.8 <= pair["weight"] <= 1.2 and pair["n_correct"] + pair["n_wrong"] == 8

    dpo = hs_dpo(["--model_name_or_path", str(tmp_path / "rsft"), "--dataset_name", str(pairs_file),
                  "--output_dir", str(tmp_path / "dpo"), "--per_device_train_batch_size", str(len(pairs)),
                  "--max_steps", "2", *CPU])
    logged = [entry for entry in dpo.state.log_history if "weight" in entry]
    assert [entry["weight"] for entry in logged] == [sum(p["weight"] for p in pairs) / len(pairs)] * 2
    assert all(entry["loss"] > 0 for entry in logged)
