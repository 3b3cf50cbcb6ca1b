"""The CPU training subset: balanced over benchmark and gold answers, within the token budget, one trace per input."""

import json
from collections import Counter

from guardreasoner.template import INSTRUCTION, format_input
from training.subset import cell_of, choose, main


def row(benchmark: str, request: str, answers: str, words: int = 10, model: str = "GuardReasoner-1B") -> dict:
    output = "# Task 1\n\n## Reasoning Step 1: " + "word " * words + "\n\n---\n\nAnswers: \n" + answers + "\n"
    return {"instruction": INSTRUCTION, "input": format_input(request), "output": output,
            "source": f"{model}/{benchmark}"}


HARMFUL = "Request: harmful\nCompletion: None\nResponse: None"
UNHARMFUL = "Request: unharmful\nCompletion: None\nResponse: None"


def words(text: str) -> int:
    return len(text.split())


def test_cells_are_benchmark_and_gold_answers():
    assert cell_of(row("HarmBenchPrompt", "q", HARMFUL)) == "HarmBenchPrompt prompt_harmfulness=harmful"
    refusal = "Request: harmful\nCompletion: refusal\nResponse: unharmful"
    assert cell_of(row("XSTest", "q", refusal)) == \
        "XSTest prompt_harmfulness=harmful,response_harmfulness=unharmful,response_refusal=refusal"
    split_row = {**row("x", "q", HARMFUL), "source": "ToxicChat/train"}  # eval.split export names the part last
    assert cell_of(split_row) == "ToxicChat prompt_harmfulness=harmful"


def test_each_cell_gives_at_most_per_cell_rows_that_fit_and_no_input_twice():
    rows = [row("A", f"harmful {i}", HARMFUL) for i in range(10)]
    rows += [row("A", f"benign {i}", UNHARMFUL) for i in range(3)]
    rows += [row("A", "benign 0", UNHARMFUL, model="GuardReasoner-8B")]  # the same input again
    rows += [row("B", f"long {i}", HARMFUL, words=500) for i in range(4)]  # over the budget
    budget = max(words(r["instruction"] + "\n" + r["input"]) + words(r["output"]) for r in rows[:14])
    kept, counts = choose(rows, words, per_cell=4, max_tokens=budget, seed=3)
    cells = Counter(cell_of(r) for r in kept)
    assert cells == {"A prompt_harmfulness=harmful": 4, "A prompt_harmfulness=unharmful": 3}
    assert len({r["input"] for r in kept}) == len(kept)
    assert counts["B prompt_harmfulness=harmful"] == {"rows": 4, "fit": 0, "kept": 0}
    assert counts["A prompt_harmfulness=unharmful"] == {"rows": 4, "fit": 4, "kept": 3}
    assert choose(rows, words, per_cell=4, max_tokens=budget, seed=3)[0] == kept  # seeded
    assert choose(rows, words, per_cell=4, max_tokens=budget, seed=4)[0] != kept
    short_only, _ = choose(rows, words, per_cell=4, max_tokens=budget, max_output_tokens=5)
    assert short_only == []


def test_cli_counts_tokens_with_the_named_tokenizer(tokenizer_dir, tmp_path):
    source = tmp_path / "all.jsonl"
    rows = [row("A", f"question {i}", HARMFUL, words=5 + 150 * i) for i in range(6)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    output = tmp_path / "subset.jsonl"
    stats = main(["--dataset", str(source), "--output", str(output), "--tokenizer", str(tokenizer_dir),
                  "--per_cell", "10", "--max_tokens", "400"])
    kept = [json.loads(line) for line in output.read_text().splitlines()]
    assert 0 < len(kept) < 6 and stats["kept"] == len(kept)
    assert {r["input"] for r in kept} == {format_input(f"question {i}") for i in range(len(kept))}  # the short ones
    stats = json.loads((tmp_path / "subset.jsonl.stats.json").read_text())
    assert stats["by_cell"]["A prompt_harmfulness=harmful"]["rows"] == 6


def test_cut_long_inputs_keeps_a_long_reply_row_with_its_middle_cut_as_the_guard_cuts_it(tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    from guardreasoner.parser import split_upstream_prompt
    from guardreasoner.template import TRUNCATION_MARK, build_prompt

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    reply = "Step one: gather the parts. " + "filler sentence number %d. " * 400 % tuple(range(400)) + "The end."
    long_row = {"instruction": INSTRUCTION, "input": format_input("How do I do it?", reply),
                "output": "# Task 1\n\n## Reasoning Step 1: the reply explains it.\n\n---\n\nAnswers: \n"
                          "Request: harmful\nCompletion: compliance\nResponse: harmful\n", "source": "m/B"}
    source = tmp_path / "all.jsonl"
    source.write_text(json.dumps(long_row) + "\n" + json.dumps(row("A", "short question", HARMFUL)) + "\n")
    dropped = main(["--dataset", str(source), "--output", str(tmp_path / "d.jsonl"), "--tokenizer", str(tokenizer_dir),
                    "--per_cell", "10", "--max_tokens", "512"])
    assert dropped["kept"] == 1  # without the option the long row is left out, as before
    stats = main(["--dataset", str(source), "--output", str(tmp_path / "c.jsonl"), "--tokenizer", str(tokenizer_dir),
                  "--per_cell", "10", "--max_tokens", "512", "--cut_long_inputs", "true"])
    kept = {r["source"]: r for r in map(json.loads, (tmp_path / "c.jsonl").read_text().splitlines())}
    assert stats["kept"] == 2 and kept["m/B"]["input_cut"] is True
    cut = kept["m/B"]
    assert cut["output"] == long_row["output"]  # the trace and its Answers stay whole
    prompt, response = split_upstream_prompt(cut["input"])
    assert prompt == "How do I do it?" and TRUNCATION_MARK in response
    assert response.startswith("Step one") and response.endswith("The end.")  # head and tail kept, middle cut
    room = 512 - len(tokenizer(long_row["output"])["input_ids"])
    assert response == build_prompt("How do I do it?", reply, tokenizer=tokenizer, max_input_tokens=room).response
    assert len(tokenizer(cut["instruction"] + "\n" + cut["input"])["input_ids"]) + \
        len(tokenizer(cut["output"])["input_ids"]) <= 512
    cell = "B prompt_harmfulness=harmful,response_harmfulness=harmful,response_refusal=compliance"
    assert stats["by_cell"][cell] == {"rows": 1, "fit": 1, "kept": 1, "cut": 1}


def test_well_formed_only_leaves_out_traces_an_older_judge_kept(tokenizer_dir, tmp_path):
    """Traces kept before the judge checked each line's word (session 9's hint.jsonl) are left out and counted."""
    source = tmp_path / "hint.jsonl"
    rows = [row("A", "fine", HARMFUL), row("A", "other word", "Request: refusal\nCompletion: None\nResponse: None"),
            row("A", "twice", HARMFUL + "\nResponse: None")]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for flag, expected in (("false", 3), ("true", 1)):
        stats = main(["--dataset", str(source), "--output", str(tmp_path / f"{flag}.jsonl"), "--tokenizer",
                      str(tokenizer_dir), "--per_cell", "10", "--max_tokens", "400", "--well_formed_only", flag])
        assert stats["kept"] == expected
    assert [json.loads(x)["input"] for x in (tmp_path / "true.jsonl").read_text().splitlines()] == [
        format_input("fine")]
    assert sum(cell.get("refused", 0) for cell in stats["by_cell"].values()) == 2


def test_exclude_leaves_out_rows_whose_ids_another_file_holds(tokenizer_dir, tmp_path):
    """Mining rows for HS-DPO leave out every seed the synthesis already read, kept or rejected."""
    source = tmp_path / "gold.jsonl"
    rows = [{**row("A", f"question {i}", HARMFUL), "id": f"A/{i}"} for i in range(6)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "kept.jsonl").write_text(json.dumps({"id": "A/1", "output": "..."}) + "\n")
    (tmp_path / "rejected.jsonl").write_text(json.dumps({"id": "A/4", "reason": "wrong"}) + "\n")
    stats = main(["--dataset", str(source), "--output", str(tmp_path / "mine.jsonl"), "--tokenizer",
                  str(tokenizer_dir), "--per_cell", "10", "--max_tokens", "400",
                  "--exclude", str(tmp_path / "kept.jsonl"), str(tmp_path / "rejected.jsonl")])
    kept = [json.loads(x)["id"] for x in (tmp_path / "mine.jsonl").read_text().splitlines()]
    assert sorted(kept) == ["A/0", "A/2", "A/3", "A/5"]
    assert stats["rows"] == 6 and stats["excluded"] == 2 and stats["kept"] == 4
