"""R-SFT on the real GuardReasonerTrain rows: the loss falls and the model then writes the right verdicts."""

import json

import pytest

from training.data import load_rows


def test_training_tokens_start_the_completion_where_inference_does(shared_dir, tokenizer_dir):
    from transformers import AutoTokenizer

    from guardreasoner.parser import split_upstream_prompt
    from guardreasoner.template import build_prompt
    from training.data import tokenize_example

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    row = load_rows(str(shared_dir / "traces" / "guardreasonertrain_sample.json"))[0]
    assert len(load_rows(str(shared_dir / "traces" / "guardreasonertrain_sample.json"))) == 4
    tokens = tokenize_example(row, tokenizer)
    request, reply = split_upstream_prompt(row["input"])
    inference_ids = tokenizer(build_prompt(request, reply).text)["input_ids"]  # what the backend sends
    prompt_length = tokens["completion_mask"].index(1)
    assert tokens["input_ids"][:prompt_length] == inference_ids
    assert tokens["input_ids"][-1] == tokenizer.eos_token_id
    # Tokenized as one text, the boundary merges differently: the reason for tokenizing apart.
    joint = tokenizer(build_prompt(request, reply).text + row["output"])["input_ids"]
    assert joint[: len(inference_ids)] != inference_ids


def test_bad_rows_are_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"instruction": "x", "input": "y",
                                "output": "z"}) + "\n" + json.dumps({"input": "y"}) + "\n")
    with pytest.raises(ValueError, match="row 2 lacks"):
        load_rows(str(path))


def test_rsft_overfits_real_traces_and_the_parser_reads_the_right_verdicts(shared_dir, tmp_path, tokenizer_dir):
    from guardreasoner import load_guard
    from guardreasoner.parser import parse_for, split_upstream_prompt
    from tests.tiny_models import random_llama
    from training.rsft import main

    # float32, not TRL's default bf16 autocast: on CPUs without native bf16 (AVX2 only) autocast is emulated and
    # 120 steps at 3e-3 took 13 s each (the 900 s timeout) against 3.5 s in float32. 80 steps at 4e-3 already
    # decoded all four verdicts right (loss 10.1 -> 0.12); 64 steps at 5e-3 got one of four; 90 for margin.
    model_dir = random_llama(tmp_path / "base", tokenizer_dir, hidden=64)
    data = str(shared_dir / "traces" / "guardreasonertrain_sample.json")
    out = tmp_path / "rsft"
    trainer = main(["--model_name_or_path", str(model_dir), "--dataset_name", data, "--output_dir", str(out),
                    "--per_device_train_batch_size", "4", "--max_steps", "90", "--learning_rate", "4e-3",
                    "--lr_scheduler_type", "constant", "--logging_steps", "10", "--report_to", "none",
                    "--use_cpu", "true", "--gradient_checkpointing", "false", "--save_strategy", "no",
                    "--max_length", "1024", "--bf16", "false"])
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses[-1] < 0.2 * losses[0]

    guard = load_guard(str(out), max_new_tokens=400, fail_closed=False)
    rows = load_rows(data)
    items = []
    for row in rows:
        request, reply = split_upstream_prompt(row["input"])
        items.append({"prompt": request, "response": reply})
    for row, item, result in zip(rows, items, guard.classify(items)):
        # The core's rule: a prompt-only item has no reply verdicts, even where the trace wrote some.
        assert result.labels == parse_for(row["output"], item["prompt"], item["response"]).labels
        assert result.status == "ok"


def test_rerunning_an_interrupted_run_resumes_from_its_last_checkpoint(shared_dir, tmp_path, tokenizer_dir):
    from tests.tiny_models import random_llama
    from training.rsft import main as rsft

    base = random_llama(tmp_path / "base", tokenizer_dir)
    out = tmp_path / "run"

    def run(steps):
        return rsft(["--model_name_or_path", str(base), "--dataset_name",
                     str(shared_dir / "traces" / "guardreasonertrain_sample.json"), "--output_dir", str(out),
                     "--max_steps", str(steps), "--per_device_train_batch_size", "1", "--save_steps", "2",
                     "--logging_steps", "1", "--use_cpu", "true", "--gradient_checkpointing", "false",
                     "--report_to", "none", "--max_length", "256"])

    run(2)  # "interrupted" after its checkpoint at step 2
    state_file = out / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"][0]["loss"] = 123.0  # a mark that only a resumed run carries forward
    state_file.write_text(json.dumps(state))
    trainer = run(3)  # the same command, asked to go on to step 3
    losses = {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}
    assert sorted(losses) == [1, 2, 3] and losses[1] == 123.0  # steps 1-2 came from the checkpoint
    assert trainer.state.global_step == 3


def test_training_goes_on_from_a_given_adapter_and_the_result_is_an_adapter_of_the_same_base(
        shared_dir, tmp_path, tokenizer_dir):
    from peft import PeftConfig
    from safetensors.torch import load_file

    from tests.tiny_models import random_llama
    from training.rsft import main as rsft

    base = random_llama(tmp_path / "base", tokenizer_dir)
    data = str(shared_dir / "traces" / "guardreasonertrain_sample.json")

    def run(out, learning_rate, *extra):
        rsft(["--model_name_or_path", str(base), "--dataset_name", data, "--output_dir", str(out), "--max_steps", "1",
              "--per_device_train_batch_size", "2", "--learning_rate", learning_rate, "--use_cpu", "true",
              "--gradient_checkpointing", "false", "--save_strategy", "no", "--report_to", "none", "--max_length",
              "256", *extra])
        return load_file(out / "adapter_model.safetensors")

    first = run(tmp_path / "first", "1e-2", "--use_peft", "true", "--lora_r", "8", "--lora_alpha", "16")
    unmoved = run(tmp_path / "unmoved", "0", "--adapter", str(tmp_path / "first"))
    moved = run(tmp_path / "moved", "1e-2", "--adapter", str(tmp_path / "first"))
    assert first.keys() == unmoved.keys() == moved.keys()
    # A step of size 0 leaves the given adapter as it was (a new one would start with B = 0): it is what trains.
    assert all((first[name] == unmoved[name]).all() for name in first)
    assert any((first[name] != moved[name]).any() for name in first)
    assert any(name.endswith("lora_B.weight") and first[name].abs().sum() > 0 for name in first)
    saved = PeftConfig.from_pretrained(tmp_path / "moved")
    assert (saved.r, saved.base_model_name_or_path) == (8, str(base))
