import json
import random

import pytest

from guardreasoner.parser import parse, split_upstream_prompt
from guardreasoner.stream_parser import StreamParser
from tests.parser_cases import parser_cases, vendored_row


def real_row(shared_dir, benchmark="HarmBenchResponse", index=0, model="GuardReasoner-8B"):
    path = shared_dir / "predictions" / model / benchmark / "generated_predictions.jsonl"
    return json.loads(path.read_text().split("\n")[index])


def feed_in_chunks(text, user_texts, has_response, seed=0):
    """Feed text in random 1-12 character chunks; return (events with the text fed so far, final parse)."""
    rng = random.Random(seed)
    parser = StreamParser(user_texts, has_response)
    seen, position = [], 0
    while position < len(text):
        step = rng.randint(1, 12)
        chunk = text[position : position + step]
        position += len(chunk)
        seen += [(event, position) for event in parser.feed(chunk)]
    events, parsed = parser.finish()
    seen += [(event, position) for event in events]
    return seen, parsed


def assert_streams_like_a_whole_parse(row, seed):
    """Fed in random chunks, the stream parser ends with the whole parse's labels, steps and last verdicts."""
    request, reply = split_upstream_prompt(row["prompt"])
    user = (request, reply or "")
    events, parsed = feed_in_chunks(row["predict"], user, reply is not None, seed=seed)
    whole = parse(row["predict"], user_texts=user, has_response=reply is not None)
    assert parsed.labels == whole.labels
    for key, task in whole.reasoning.items():
        streamed_steps = [e.text for e, _ in events if e.kind == "step" and e.task == key]
        assert streamed_steps == task.steps
    final_verdicts = {}
    for event, _ in events:
        if event.kind == "verdict":
            final_verdicts[event.task] = event.label
    assert final_verdicts == {k: v for k, v in whole.labels.items() if v is not None}


def test_streamed_parse_equals_whole_parse_on_real_outputs(shared_dir):
    for model in ("GuardReasoner-1B", "GuardReasoner-8B"):
        for index in range(0, 60, 7):
            assert_streams_like_a_whole_parse(real_row(shared_dir, "HarmBenchResponse", index, model), seed=index)


@pytest.mark.parametrize("name", list(parser_cases()))
def test_streamed_parse_equals_whole_parse_on_every_vendored_case(name):
    assert_streams_like_a_whole_parse(parser_cases()[name]["row"], seed=len(name))


def test_request_verdict_is_reported_at_its_conclusion_long_before_the_end():
    row = vendored_row("GuardReasoner-8B", "HarmBenchResponse", 0)
    text = row["predict"]
    request, reply = split_upstream_prompt(row["prompt"])
    events, _ = feed_in_chunks(text, (request, reply), True)
    first = next((event, fed) for event, fed in events
                 if event.kind == "verdict" and event.task == "prompt_harmfulness")
    event, fed = first
    assert event.label == "harmful" and event.source == "conclusion"
    conclusion = "The human user's request is harmful.\n"
    conclusion_end = text.index(conclusion) + len(conclusion)
    assert conclusion_end <= fed < text.index("# Task 3")
    # The Answers block then confirms it with the authoritative source.
    confirm = [e for e, _ in events if e.kind == "verdict" and e.task == "prompt_harmfulness"]
    assert confirm[-1].source == "answers" and confirm[-1].label == "harmful"


def test_a_half_written_verdict_word_is_not_reported():
    parser = StreamParser()
    events = parser.feed("Answers: \nRequest: harm")
    assert not [e for e in events if e.kind == "verdict"]
    events = parser.feed("less\nCompletion: None\n")  # "harmless" is no label: still nothing
    assert not [e for e in events if e.kind == "verdict"]
    parser = StreamParser()
    parser.feed("Answers: \nRequest: ")
    events = parser.feed("unharmful\n")
    assert [(e.task, e.label) for e in events if e.kind == "verdict"] == [("prompt_harmfulness", "unharmful")]


def test_steps_are_reported_only_once_closed():
    parser = StreamParser()
    assert parser.feed("# Task 1\n\n## Reasoning Step 1\nThe user asks") == []
    assert parser.feed(" about bread.\n") == []  # the step may still grow
    events = parser.feed("\n## Reasoning Step 2\n")
    assert [(e.kind, e.text) for e in events] == [("step", "The user asks about bread.")]


def verdicts(events):
    return [(e.task, e.label, e.source, e.provisional) for e in events if e.kind == "verdict"]


def test_a_verdict_is_provisional_once_its_task_ends_without_a_conclusion_then_confirmed_by_the_answers():
    parser = StreamParser(("How do I make a pipe bomb?", ""), has_response=False)
    events = parser.feed("# Task 1\n\n## Reasoning Step 1\nThe request is harmful: it asks for a bomb.\n\n")
    assert verdicts(events) == []  # the step may still go on and say otherwise
    events = parser.feed("# Task 2\n\n## Reasoning Step 1\nThere is no response.\n")
    assert verdicts(events) == [("prompt_harmfulness", "harmful", "conclusion", True)]
    events = parser.feed("\nAnswers: \nRequest: harmful\nCompletion: None\nResponse: None\n")
    assert verdicts(events) == [("prompt_harmfulness", "harmful", "answers", False)]
    events, parsed = parser.finish()
    assert verdicts(events) == [] and parsed.labels["prompt_harmfulness"] == "harmful"


def test_the_answers_block_beginning_ends_the_last_task_and_a_changed_answer_replaces_the_provisional_one():
    parser = StreamParser(("Write a phishing email.", "I can't help with that."), has_response=True)
    text = ("# Task 1\n## Reasoning Step 1\nThe request is harmful.\n"
            "# Task 2\n## Reasoning Step 1\nThe response is a refusal.\n"
            "# Task 3\n## Reasoning Step 1\nThe response is unharmful.\n")
    events = parser.feed(text)
    assert verdicts(events) == [("prompt_harmfulness", "harmful", "conclusion", True),
                                ("response_refusal", "refusal", "conclusion", True)]
    events = parser.feed("---\nAnswers: \n")
    assert verdicts(events) == [("response_harmfulness", "unharmful", "conclusion", True)]
    events = parser.feed("Request: harmful\nCompletion: refusal\nResponse: harmful\n")
    assert verdicts(events) == [("prompt_harmfulness", "harmful", "answers", False),
                                ("response_refusal", "refusal", "answers", False),
                                ("response_harmfulness", "harmful", "answers", False)]
