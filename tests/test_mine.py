"""Hard-sample mining on real trace text: which rows are hard, which task decides, pairs and weights."""

import pytest

from training.data import load_rows
from training.mine import choose_pair, mine_row, scale_weights


@pytest.fixture(scope="module")
def rows(shared_dir):
    return {row["source"]: row for row in load_rows(str(shared_dir / "traces" / "guardreasonertrain_sample.json"))}


def variant(output, **answers):
    """The real trace with its Answers lines changed (a sample that disagrees with the gold label)."""
    head, block = output.rsplit("Answers:", 1)
    for key, value in answers.items():
        lines = [f"{key.capitalize()}: {value}" if line.startswith(key.capitalize() + ":") else line
                 for line in block.split("\n")]
        block = "\n".join(lines)
    return head + "Answers:" + block


def test_mixed_request_samples_make_a_hard_row(rows):
    row = rows["WildGuardTrainR"]  # gold: harmful / refusal / unharmful
    right, wrong = row["output"], variant(row["output"], request="unharmful")
    pair = mine_row(row, [right, wrong, right + "\n", wrong])
    assert pair["task"] == "request" and (pair["n_correct"], pair["n_wrong"]) == (2, 2)
    assert pair["chosen"] == right + "\n" and pair["rejected"] == wrong  # the longest of each
    assert pair["prompt"] == row["instruction"] + "\n" + row["input"] and pair["source"] == "WildGuardTrainR"


def test_reply_harm_decides_when_the_request_is_settled(rows):
    row = rows["BeaverTailsTrainR"]  # gold: harmful / compliance / harmful, with a reply
    wrong = variant(row["output"], response="unharmful")
    pair = mine_row(row, [row["output"], wrong, wrong, wrong])
    assert pair["task"] == "response" and pair["n_correct"] == 1


def test_rows_without_a_reply_are_never_hard_on_the_reply(rows):
    row = rows["AegisTrainR"]  # no reply: Completion None, Response None
    samples = [row["output"], variant(row["output"], response="harmful")]
    assert mine_row(row, samples) is None
    assert mine_row(rows["ToxicChatTrainR"], [rows["ToxicChatTrainR"]["output"]] * 4) is None  # all right


def test_length_matched_pairs_pick_the_closest_lengths():
    chosen, rejected = choose_pair(["a" * 10, "a" * 50, "b" * 48, "b" * 5], [True, True, False, False], "length_matched")
    assert (len(chosen), len(rejected)) == (50, 48)
    with pytest.raises(ValueError):
        choose_pair(["a", "b"], [True, False], "shortest")


def test_weights_are_min_max_scaled_per_source():
    pairs = [{"source": "A", "n_wrong": w, "n_correct": 4 - w} for w in (1, 2, 3)]
    pairs += [{"source": "B", "n_wrong": 2, "n_correct": 2}]
    scale_weights(pairs)
    assert [p["weight"] for p in pairs[:3]] == pytest.approx([0.8, 1.0, 1.2])
    assert pairs[3]["weight"] == pytest.approx(1.0)


def test_mine_samples_a_real_model_and_its_pairs_train_hs_dpo(taught_model_dir, tmp_path):
    import json

    from guardreasoner.parser import parse
    from guardreasoner.template import INSTRUCTION, format_input
    from tests.tiny_models import TAUGHT
    from training.hs_dpo import main as hs_dpo
    from training.mine import MiningConfig, mine

    rows = [{"instruction": INSTRUCTION, "input": format_input(q), "output": a, "source": "taught"}
            for q, a in TAUGHT.items()]
    output = tmp_path / "pairs.jsonl"
    # Sampling at temperature 1 from a model that knows the answers gives mixed samples (seeded: reproducible).
    pairs = mine(MiningConfig(model=str(taught_model_dir), dataset="-", output=str(output), k=4, temperature=1.0,
                              top_p=1.0, max_new_tokens=150, seed=0), rows)
    assert pairs and [json.loads(line) for line in output.read_text().splitlines()] == pairs
    golds = {row["instruction"] + "\n" + row["input"]: parse(row["output"]).labels for row in rows}
    for pair in pairs:
        gold = golds[pair["prompt"]][pair["task"]]
        assert parse(pair["chosen"]).labels[pair["task"]] == gold
        assert parse(pair["rejected"]).labels[pair["task"]] != gold
        assert 0.8 <= pair["weight"] <= 1.2 and pair["n_correct"] + pair["n_wrong"] == 4
    trainer = hs_dpo(["--model_name_or_path", str(taught_model_dir), "--dataset_path", str(output),
                      "--output_dir", str(tmp_path / "dpo"), "--per_device_train_batch_size", str(len(pairs)),
                      "--max_steps", "1", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "true",
                      "--gradient_checkpointing", "false", "--save_strategy", "no", "--max_length", "512"])
    logged = [entry["weight"] for entry in trainer.state.log_history if "weight" in entry]
    assert logged == [pytest.approx(sum(p["weight"] for p in pairs) / len(pairs))]
