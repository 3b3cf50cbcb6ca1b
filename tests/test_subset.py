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
