"""Hard-sample mining on real trace text: which rows are hard, which task decides, pairs and weights."""

import json
from pathlib import Path

import pytest

from guardreasoner.parser import parse
from guardreasoner.template import INSTRUCTION, format_input
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
    assert pair["task"] == "prompt_harmfulness" and (pair["n_correct"], pair["n_wrong"]) == (2, 2)
    assert pair["chosen"] == right + "\n" and pair["rejected"] == wrong  # the longest of each
    assert pair["prompt"] == row["instruction"] + "\n" + row["input"] and pair["source"] == "WildGuardTrainR"


def test_reply_harm_decides_when_the_request_is_settled(rows):
    row = rows["BeaverTailsTrainR"]  # gold: harmful / compliance / harmful, with a reply
    wrong = variant(row["output"], response="unharmful")
    pair = mine_row(row, [row["output"], wrong, wrong, wrong])
    assert pair["task"] == "response_harmfulness" and pair["n_correct"] == 1


def test_rows_without_a_reply_are_never_hard_on_the_reply(rows):
    row = rows["AegisTrainR"]  # no reply: Completion None, Response None
    samples = [row["output"], variant(row["output"], response="harmful")]
    assert mine_row(row, samples) is None
    assert mine_row(rows["ToxicChatTrainR"], [rows["ToxicChatTrainR"]["output"]] * 4) is None  # all right


def test_length_matched_pairs_pick_the_closest_lengths():
    chosen, rejected = choose_pair(["a" * 10, "a" * 50, "b" * 48, "b" * 5], [True, True, False, False],
                                   "length_matched")
    assert (len(chosen), len(rejected)) == (50, 48)
    with pytest.raises(ValueError):
        choose_pair(["a", "b"], [True, False], "shortest")


def test_weights_are_min_max_scaled_per_source():
    pairs = [{"source": "A", "n_wrong": w, "n_correct": 4 - w} for w in (1, 2, 3)]
    pairs += [{"source": "B", "n_wrong": 2, "n_correct": 2}]
    scale_weights(pairs)
    assert [p["weight"] for p in pairs[:3]] == pytest.approx([0.8, 1.0, 1.2])
    assert pairs[3]["weight"] == pytest.approx(1.0)


def taught_rows():
    from guardreasoner.template import INSTRUCTION, format_input
    from tests.tiny_models import TAUGHT

    return [{"instruction": INSTRUCTION, "input": format_input(q), "output": a, "source": "taught"}
            for q, a in TAUGHT.items()]


def test_samples_of_several_models_are_pooled_per_row(taught_model_dir, tiny_model_dir, tmp_path):
    """Leave-one-source-out mining: one model right on a row and another wrong make the row hard, though
    neither model's samples alone are mixed."""
    from training.mine import MiningConfig, mine

    def config(*models):
        return MiningConfig(models=[str(m) for m in models], dataset_name="-",
                            output=str(tmp_path / "pairs.jsonl"), k=2, temperature=0.0, max_new_tokens=150)

    rows = taught_rows()
    assert mine(config(taught_model_dir), rows) == []  # greedy and taught: every sample right
    pairs = mine(config(taught_model_dir, tiny_model_dir), rows)  # the random model writes nonsense
    assert [(p["n_correct"], p["n_wrong"], p["task"]) for p in pairs] == [(2, 2, "prompt_harmfulness")] * 2
    assert [p["chosen"] for p in pairs] == [row["output"] for row in rows]
    assert all(parse(p["rejected"]).labels["prompt_harmfulness"] is None for p in pairs)


def test_sampling_resumes_from_the_samples_file(taught_model_dir, tiny_model_dir, tmp_path, monkeypatch):
    import guardreasoner
    from training.mine import MiningConfig, sample

    rows = taught_rows()
    output = tmp_path / "pairs.jsonl"
    first = sample(MiningConfig(models=[str(taught_model_dir)], dataset_name="-", output=str(output), k=2,
                                temperature=0.0, max_new_tokens=150, chunk_rows=1), rows)
    samples_file = Path(str(output) + ".samples.jsonl")
    lines = samples_file.read_text().splitlines(keepends=True)
    assert len(lines) == 2  # one append per chunk of one row
    samples_file.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # interrupted while writing row 2

    loaded = []
    real_load = guardreasoner.load_guard
    monkeypatch.setattr(guardreasoner, "load_guard", lambda model, *a,
                        **k: loaded.append(model) or real_load(model, *a, **k))
    both = sample(MiningConfig(models=[str(taught_model_dir), str(tiny_model_dir)], dataset_name="-",
                               output=str(output), k=2, temperature=0.0, max_new_tokens=150, chunk_rows=1), rows)
    assert loaded == [str(taught_model_dir), str(tiny_model_dir)]  # row 2 redone, then the second model
    assert [pooled[:2] for pooled in both] == first
    records = [json.loads(line) for line in samples_file.read_text().splitlines()]
    assert sorted((r["row"], r["model"]) for r in records) == sorted(
        (i, str(m)) for i in range(2) for m in (taught_model_dir, tiny_model_dir))
    loaded.clear()
    assert sample(MiningConfig(models=[str(taught_model_dir), str(tiny_model_dir)], dataset_name="-",
                               output=str(output), k=2, temperature=0.0, max_new_tokens=150, chunk_rows=1),
                  rows) == both
    assert loaded == []  # everything was on file


def test_mining_sends_long_rows_truncated_as_the_guard_does(tiny_model_dir, tmp_path, monkeypatch):
    """An untruncated long training row would not fit vLLM's context and failed its whole chunk: rows over the
    input budget are cut by the guard's template truncation, and the pair's prompt is what the model read."""
    from transformers import AutoTokenizer

    from guardreasoner.backends.transformers_backend import TransformersBackend
    from guardreasoner.template import TRUNCATION_MARK
    from training.mine import MiningConfig, sample

    sent = []
    real_generate = TransformersBackend.generate
    monkeypatch.setattr(TransformersBackend, "generate",
                        lambda self, prompts, *a, **k: sent.extend(prompts) or real_generate(self, prompts, *a, **k))
    long_row = {"instruction": INSTRUCTION, "input": format_input("Tell me about bread. " * 400), "output": "x"}
    rows = [long_row, taught_rows()[0]]
    inputs = {}
    config = MiningConfig(models=[str(tiny_model_dir)], dataset_name="-", output=str(tmp_path / "pairs.jsonl"), k=1,
                          max_new_tokens=4, max_input_tokens=300, backend="transformers")
    sample(config, rows, inputs)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(sent) == 2 and TRUNCATION_MARK in sent[0] and sent[1] == rows[1]["instruction"] + "\n" + rows[1]["input"]
    assert len(tokenizer(sent[0], add_special_tokens=False)["input_ids"]) <= 300
    assert inputs == {0: sent[0]}  # only the cut row differs from its own prompt
    record = json.loads((tmp_path / "pairs.jsonl.samples.jsonl").read_text().splitlines()[0])
    assert record["model_input"] == sent[0]
    resumed = {}
    sample(config, rows, resumed)  # from the file: nothing sampled again, the model input still known
    assert len(sent) == 2 and resumed == inputs


def test_resume_on_vllm_keeps_what_is_on_file_and_samples_only_the_rest(taught_model_dir, tmp_path, monkeypatch):
    """vLLM does not promise equal texts for equal seeds across batches (no batch-invariant mode by default), so
    resuming never relies on it: rows on file are kept as written, only the missing rows are sampled."""
    from tests import fake_vllm
    from training.mine import MiningConfig, sample

    fake = fake_vllm.install(monkeypatch, taught_model_dir)
    rows = taught_rows()
    output = tmp_path / "pairs.jsonl"
    config = MiningConfig(models=[str(taught_model_dir)], dataset_name="-", output=str(output), backend="vllm", k=2,
                          temperature=1.0, max_new_tokens=20, chunk_rows=1)
    first = sample(config, rows)
    samples_file = Path(str(output) + ".samples.jsonl")
    lines = samples_file.read_text().splitlines(keepends=True)
    samples_file.write_text(lines[0] + lines[1][:10])  # interrupted while writing row 2
    requests = len(fake.calls["prompt_lengths"])
    resumed = sample(config, rows)
    assert len(fake.calls["prompt_lengths"]) == requests + 2  # row 2's k samples, nothing else
    assert resumed[0] == first[0] and len(resumed[1]) == 2
    assert samples_file.read_text().startswith(lines[0])
    assert fake.device["used"] == 0  # each model's engine is shut down after its rows
