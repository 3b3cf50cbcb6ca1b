import json

import pytest

from guardreasoner.template import INSTRUCTION, TRUNCATION_MARK, build_prompt, format_input, render, user_turn


def test_instruction_matches_every_benchmark_and_training_file(shared_dir):
    files = sorted((shared_dir / "benchmarks" / "guardreasoner").glob("*.json"))
    assert len(files) == 11
    for path in files:
        instructions = {row["instruction"] for row in json.loads(path.read_text())}
        assert instructions == {INSTRUCTION}, path.name
    traces = json.loads((shared_dir / "traces" / "guardreasonertrain_sample.json").read_text())
    assert {row["instruction"] for rows in traces.values() for row in rows} == {INSTRUCTION}


def test_input_block_matches_benchmark_inputs(shared_dir):
    rows = json.loads((shared_dir / "benchmarks" / "guardreasoner" / "0_0_SimpleSafetyTests.json").read_text())
    prompt = rows[0]["input"].split("Human user:\n", 1)[1].split("\n\nAI assistant:\n", 1)[0]
    assert format_input(prompt) == rows[0]["input"]  # no reply -> the literal None
    assert format_input("hi", "") == "Human user:\nhi\n\nAI assistant:\nNone\n\n"
    assert format_input("hi", "hello") == "Human user:\nhi\n\nAI assistant:\nhello\n\n"


def test_raw_prompt_is_what_the_released_models_were_evaluated_on(shared_dir):
    """Every upstream model input is instruction + newline + input block, byte for byte."""
    from guardreasoner.parser import split_upstream_prompt

    checked = 0
    for path in (shared_dir / "predictions" / "GuardReasoner-8B").glob("*/generated_predictions.jsonl"):
        for line in path.open():
            upstream = json.loads(line)["prompt"]
            request, reply = split_upstream_prompt(upstream)
            assert render(build_prompt(request, reply).text, "raw") == upstream
            checked += 1
    assert checked > 2000


def test_chat_mode_wraps_the_same_text_as_one_user_turn(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    text = user_turn("Is this safe?", "Yes.")
    chat = render(text, "chat", tokenizer)
    assert chat.count(text) == 1 and chat != text
    assert chat == tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
    with pytest.raises(ValueError, match="chat template"):
        render(text, "chat", None)


def test_long_input_is_cut_in_the_middle_of_the_users_text_only(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    request = "START " + "filler words " * 3000 + " END"
    built = build_prompt(request, None, tokenizer=tokenizer, max_input_tokens=600)
    assert built.truncated
    assert len(tokenizer(built.text, add_special_tokens=False)["input_ids"]) <= 600
    assert built.text.startswith(INSTRUCTION + "\nHuman user:\nSTART")
    assert built.text.endswith("END\n\nAI assistant:\nNone\n\n")
    assert TRUNCATION_MARK in built.prompt


def test_a_short_request_beside_a_long_reply_stays_whole(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    reply = "Sure. " + "step " * 5000 + "done."
    built = build_prompt("How do I do it?", reply, tokenizer=tokenizer, max_input_tokens=800)
    assert built.truncated and built.prompt == "How do I do it?"
    assert built.response.startswith("Sure.") and built.response.endswith("done.")
    assert len(tokenizer(built.text, add_special_tokens=False)["input_ids"]) <= 800


def test_input_within_the_limit_is_untouched():
    built = build_prompt("hello", "hi there", max_input_tokens=4096)
    assert not built.truncated and built.text == user_turn("hello", "hi there")


def test_empty_request_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        build_prompt("   ")
