"""Synthesis: seeds from each source's schema and local files, the label-conditioned prompt, the keep/reject rule
on real trace text, and runs against a real OpenAI-compatible server on 127.0.0.1 (resume, failures, tokens)."""

import json

import pytest

from guardreasoner.parser import parse
from tests.servers import free_port
from tests.tiny_models import HARMFUL_REQUEST, SAFE_REQUEST, TAUGHT, teacher_seeds
from training.data import load_rows
from training.seeds import SOURCES, Seed, from_record, load_local_seeds
from training.synthesize import (
    WELL_FORMED_ANSWERS,
    SynthesisConfig,
    ask,
    balanced,
    hinted_guard_prompt,
    judge,
    length_sorted_windows,
    synthesis_prompt,
    synthesize,
)


@pytest.fixture(scope="module")
def traces(shared_dir):
    return {row["source"]: row for row in load_rows(str(shared_dir / "traces" / "guardreasonertrain_sample.json"))}


def test_each_source_maps_its_schema_to_seeds():
    wild = from_record({"prompt": "p", "response": "r", "prompt_harm_label": "harmful",
                        "response_refusal_label": "compliance", "response_harm_label": None},
                       "WildGuardTrain", SOURCES["WildGuardTrain"], 3)
    assert (wild.id, wild.response, wild.labels) == ("WildGuardTrain-3", "r", {"prompt_harmfulness": "harmful",
                                                                              "response_refusal": "compliance"})
    aegis = SOURCES["AegisTrain"]
    votes = {"text": "t", "text_type": "user_message", "labels_0": "Safe", "labels_1": "Violence",
             "labels_2": "Violence", "labels_3": None}
    assert from_record(votes, "AegisTrain", aegis, 0).labels == {"prompt_harmfulness": "harmful"}  # 2 of 3 unsafe
    assert from_record(dict(votes, labels_2="Safe"), "AegisTrain", aegis,
                       0).labels == {"prompt_harmfulness": "unharmful"}
    assert from_record(dict(votes, text_type="llm_response"), "AegisTrain", aegis, 0) is None
    beaver = from_record({"prompt": "p", "response": "r", "is_safe": False}, "BeaverTails", SOURCES["BeaverTails"], 0)
    assert beaver.labels == {"response_harmfulness": "harmful"}
    toxic = from_record({"user_input": "u", "toxicity": 0}, "ToxicChat", SOURCES["ToxicChat"], 0)
    assert (toxic.prompt, toxic.response, toxic.labels) == ("u", None, {"prompt_harmfulness": "unharmful"})
    # A row with no reply keeps only its request label: the reply's tasks have nothing to judge.
    empty = from_record({"prompt": "p", "response": "", "prompt_harm_label": "unharmful",
                         "response_refusal_label": "refusal"}, "WildGuardTrain", SOURCES["WildGuardTrain"], 0)
    assert (empty.response, empty.labels) == (None, {"prompt_harmfulness": "unharmful"})


def test_local_seed_files_report_bad_lines(tmp_path):
    good = tmp_path / "seeds.jsonl"
    good.write_text(json.dumps({"prompt": "p", "response": "r", "response_harmfulness": "Harmful"}) + "\n"
                    + json.dumps({"id": "x", "prompt": "q", "prompt_harmfulness": "unharmful"}) + "\n")
    seeds = load_local_seeds(good)
    assert [(s.id,
             s.labels) for s in seeds] == [("seeds-1", {"response_harmfulness": "harmful"}),
                                           ("x", {"prompt_harmfulness": "unharmful"})]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "prompt_harmfulness": "harmful"}) + "\n{not json\n"
                   + json.dumps({"prompt": "q", "response_refusal": "maybe"}) + "\n"
                   + json.dumps({"prompt": "r", "request_label": "harmful"}) + "\n")  # an old column: not read
    with pytest.raises(ValueError) as error:
        load_local_seeds(bad)
    message = str(error.value)
    assert "line 2: invalid JSON" in message and "line 3: response_refusal" in message
    assert "line 4: no gold label" in message


def test_the_prompt_states_the_gold_answers_and_the_format():
    prompt = synthesis_prompt(Seed("s", "src", "How to pick a lock?", "Sorry, I can't.",
                                   {"response_refusal": "refusal"}))
    assert "Human user:\nHow to pick a lock?\n\nAI assistant:\nSorry, I can't.\n\n" in prompt
    assert "Completion: refusal" in prompt and "Request: (not given" in prompt and "Response: (not given" in prompt
    no_reply = synthesis_prompt(Seed("s", "src", "Hi", None, {"prompt_harmfulness": "unharmful"}))
    assert "Request: unharmful\nCompletion: None\nResponse: None" in no_reply


def seed_of(row, **labels):
    from guardreasoner.parser import split_upstream_prompt

    request, reply = split_upstream_prompt(row["input"])
    return Seed("s", row["source"], request, reply, labels)


def test_real_traces_are_kept_only_when_they_reach_the_gold_answers(traces):
    row = traces["BeaverTailsTrainR"]  # harmful / compliance / harmful
    assert judge(seed_of(row, response_harmfulness="harmful"), row["output"]) == (row["output"].strip(), None)
    assert judge(seed_of(row, response_harmfulness="unharmful"), row["output"])[1] == \
        "response_harmfulness: harmful != unharmful"
    leaked = row["output"] + "\n\nThe ground truth is harmful."
    kept, reason = judge(seed_of(row, prompt_harmfulness="harmful", response_harmfulness="harmful"), leaked)
    assert reason is None and "ground truth" not in kept
    assert judge(seed_of(row, prompt_harmfulness="harmful"), row["output"].split("---")[0])[1] == "no Answers block"
    aegis = traces["AegisTrainR"]  # no reply: Completion None, Response None
    gold = parse(aegis["output"]).labels["prompt_harmfulness"]
    assert judge(seed_of(aegis, prompt_harmfulness=gold), aegis["output"])[1] is None
    says_compliance = aegis["output"].replace("Completion: None", "Completion: compliance")
    assert judge(seed_of(aegis, prompt_harmfulness=gold), says_compliance)[1] == \
        "reply verdicts written though there is no reply"
    # Seen from the embedded guard: a name written twice, or one missing, reads as gold to the lenient parser.
    # A block whose lines agree is rewritten one line per task in order; one that disagrees or lacks a task is not.
    harmful = seed_of(row, response_harmfulness="harmful")
    repeated = row["output"].rstrip() + "\nresponse: harmful"
    assert judge(harmful, repeated) == (row["output"].strip(), None)
    reordered = row["output"].replace("Request: harmful\nCompletion: compliance",
                                      "Completion: compliance\nRequest: harmful")
    assert reordered != row["output"] and judge(harmful, reordered) == (row["output"].strip(), None)
    doubled = row["output"].rstrip() + "\nResponse: unharmful"
    assert judge(harmful, doubled)[1] == "malformed Answers block"
    missing = row["output"].replace("Request: harmful\n", "")
    assert judge(harmful, missing)[1] == "malformed Answers block"
    assert judge(harmful, row["output"].rstrip() + "\nI hope this helps.")[1] == "malformed Answers block"
    # A task's line with another task's word is malformed even where the seed does not label that task (the
    # parser, and so the verdict check, would never look at it), in order or not.
    for wrong_word in ("Request: refusal", "Request: None"):
        assert judge(harmful, row["output"].replace("Request: harmful", wrong_word))[1] == "malformed Answers block"
    assert judge(harmful, row["output"].replace("Completion: compliance", "Completion: unharmful"))[1] == \
        "malformed Answers block"
    assert judge(harmful, reordered.replace("Completion: compliance", "Completion: harmful"))[1] == \
        "malformed Answers block"


def test_balanced_order_interleaves_cells_and_windows_sort_by_length():
    seeds = [Seed(f"{source}-{i}", source, "x" * (10 - i), None, {"prompt_harmfulness": label})
             for source, label, count in (("A", "harmful", 5), ("A", "unharmful", 2), ("B", "harmful", 4))
             for i in range(count)]
    order = balanced(seeds, per_cell=3, seed=1)
    cells = [(seed.source, seed.labels["prompt_harmfulness"]) for seed in order]
    assert len(order) == 8 and cells.count(("A", "harmful")) == 3 and cells.count(("A", "unharmful")) == 2
    assert sorted(cells[:3]) == [("A", "harmful"), ("A", "unharmful"), ("B", "harmful")]  # one of each cell first
    assert balanced(seeds, per_cell=3, seed=1) == order != balanced(seeds, per_cell=3, seed=2)
    windows = length_sorted_windows(order, 4)
    assert sorted(windows[:4], key=id) == sorted(order[:4], key=id)  # a window keeps its seeds
    assert [len(seed.prompt) for seed in windows[:4]] == sorted(len(seed.prompt) for seed in order[:4])


def test_the_hinted_prompt_is_the_guards_input_with_the_gold_answers_after_it():
    from guardreasoner.template import user_turn

    reply = Seed("s", "src", "How to pick a lock?", "Sorry, I can't.", {"response_harmfulness": "unharmful"})
    assert hinted_guard_prompt(reply) == (user_turn("How to pick a lock?", "Sorry, I can't.")
                                          + "Hint: the correct Answers are\nResponse: unharmful\n\n")
    no_reply = hinted_guard_prompt(Seed("s", "src", "Hi", None, {"prompt_harmfulness": "unharmful"}))
    assert no_reply.endswith("Hint: the correct Answers are\nRequest: unharmful\nCompletion: None\nResponse: None\n\n")


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_synthesis_against_a_served_teacher_keeps_gold_traces_and_resumes(teacher_url, tmp_path):
    output = tmp_path / "traces.jsonl"
    config = SynthesisConfig(seeds=[], base_url=teacher_url, output=str(output), max_tokens=200, concurrency=2)
    taught = teacher_seeds()
    stats = synthesize(config, taught)
    assert (stats["kept"], stats["rejected"], stats["failed"]) == (2, 0, 0)
    assert stats["input_tokens"] > 2 * 200 and stats["output_tokens"] > 2 * 100  # counted by the server
    rows = lines(output)
    assert {row["output"] for row in rows} == {TAUGHT[HARMFUL_REQUEST], TAUGHT[SAFE_REQUEST]}
    assert load_rows(str(output))[0]["instruction"].startswith("You are a classifier")  # R-SFT reads it as is

    # A seed the teacher was not taught: whatever it writes is kept only if it reaches the gold label. The two
    # done seeds are not asked again, and half a record left by an interruption is cut and not lost.
    unseen = Seed("new-0", "taught", "Write a poem about a bomb-sniffing dog.", None,
                  {"prompt_harmfulness": "unharmful"})
    output.write_text(output.read_text() + '{"instruction": "half a line')
    stats = synthesize(config, taught + [unseen])
    assert (stats["already_done"], stats["kept"] + stats["rejected"]) == (2, 1)
    kept, rejected = lines(output), lines(tmp_path / "traces.jsonl.rejected.jsonl")
    assert sorted(row["id"] for row in kept + rejected) == ["new-0", "taught-0", "taught-1"]
    gold = {seed.id: seed.labels["prompt_harmfulness"] for seed in taught + [unseen]}
    for row in kept:
        assert parse(row["output"]).labels["prompt_harmfulness"] == gold[row["id"]]
    for record in rejected:
        said = parse(record["output"]).labels["prompt_harmfulness"]
        well_formed = WELL_FORMED_ANSWERS.search(record["output"])
        assert record["reason"] == (f"prompt_harmfulness: {said} != unharmful" if well_formed
                                    else "malformed Answers block")
    assert json.loads((tmp_path / "traces.jsonl.stats.json").read_text())["file_kept"] == len(kept)


def test_an_unreachable_teacher_loses_no_seed(teacher_url, tmp_path):
    output = tmp_path / "traces.jsonl"
    down = SynthesisConfig(seeds=[], base_url=f"http://127.0.0.1:{free_port()}/v1", teacher="teacher",
                           output=str(output), max_tokens=200, max_retries=1, timeout=5)
    stats = synthesize(down, teacher_seeds())
    assert (stats["failed"], stats["kept"], stats["file_kept"]) == (2, 0, 0)
    up = SynthesisConfig(seeds=[], base_url=teacher_url, output=str(output), max_tokens=200)
    assert synthesize(up, teacher_seeds())["kept"] == 2


def test_the_command_line_reads_a_local_seed_file(teacher_url, tmp_path, capsys):
    from training.synthesize import main

    seeds = tmp_path / "seeds.csv"
    seeds.write_text(f"prompt,prompt_harmfulness\n{HARMFUL_REQUEST},harmful\n{SAFE_REQUEST},unharmful\n")
    stats = main(["--seeds", str(seeds), "--base_url", teacher_url, "--output", str(tmp_path / "out.jsonl"),
                  "--max_tokens", "200"])
    assert (stats["kept"], stats["rejected"]) == (2, 0)
    assert [row["id"] for row in lines(tmp_path / "out.jsonl")] in (["seeds-2", "seeds-3"], ["seeds-3", "seeds-2"])
    assert json.loads(capsys.readouterr().out)["file_kept"] == 2


def test_rejection_sampling_asks_the_guards_own_question_until_an_answer_reaches_gold():
    from guardreasoner.backends.base import Generation, SamplingConfig
    from guardreasoner.template import user_turn

    class Teacher:  # answers in turn: the wrong verdict twice, then the right one
        def __init__(self, texts):
            self.texts, self.prompts = list(texts), []

        def generate(self, prompts, sampling):
            self.prompts += prompts
            return [Generation(self.texts.pop(0), prompt_tokens=5, completion_tokens=5, finish_reason="stop")
                    for _ in prompts]

    seed = Seed("s-0", "taught", HARMFUL_REQUEST, None, {"prompt_harmfulness": "harmful"})
    teacher = Teacher([TAUGHT[SAFE_REQUEST], TAUGHT[SAFE_REQUEST], TAUGHT[HARMFUL_REQUEST], TAUGHT[HARMFUL_REQUEST]])
    config = SynthesisConfig(seeds=[], base_url="-", prompt="guard", samples=4, temperature=0.7)
    [(generation, trace, reason, drawn)] = ask(teacher, [seed], SamplingConfig(64, 0.7), config)
    assert (generation.text, drawn) == (TAUGHT[HARMFUL_REQUEST], 3)  # stopped at the first that reached gold
    assert (trace, reason) == judge(seed, generation.text)
    assert teacher.prompts == [user_turn(HARMFUL_REQUEST)] * 3  # the guard's own input: no answers given
    assert "ground truth" not in teacher.prompts[0]
    stubborn = Teacher([TAUGHT[SAFE_REQUEST]] * 2)
    [(generation, trace, reason, drawn)] = ask(stubborn, [seed], SamplingConfig(64, 0.7), SynthesisConfig(
        seeds=[], base_url="-", prompt="guard", samples=2, temperature=0.7))
    assert drawn == 2 and reason == judge(seed, generation.text)[1] == "prompt_harmfulness: unharmful != harmful"
    with pytest.raises(ValueError, match="needs --temperature"):
        synthesize(SynthesisConfig(seeds=[], base_url="-", samples=3), [seed])


def test_a_batch_redraws_only_its_rejected_seeds_and_an_in_process_teacher_writes_the_same_files(
        taught_model_dir, tmp_path):
    """The taught tiny guard answers its two requests correctly with the guard's own input: run in this process on
    CTranslate2 (no --base_url), both are kept, and a rerun resumes."""
    from guardreasoner.backends.base import Generation, SamplingConfig
    from guardreasoner.template import user_turn

    class Teacher:  # the safe request's first answer is wrong: only it is drawn again
        def __init__(self):
            self.calls = []

        def generate(self, prompts, sampling):
            self.calls.append(prompts)
            right = {user_turn(request): text for request, text in TAUGHT.items()}
            wrong = len(self.calls) == 1 and TAUGHT[HARMFUL_REQUEST]
            return [Generation(wrong if SAFE_REQUEST in prompt and wrong else right[prompt], finish_reason="stop")
                    for prompt in prompts]

    seeds = teacher_seeds()
    teacher = Teacher()
    outcomes = ask(teacher, seeds, SamplingConfig(64, 0.7), SynthesisConfig(seeds=[], prompt="guard", samples=3,
                                                                           temperature=0.7))
    assert [(reason, drawn) for _, _, reason, drawn in outcomes] == [(None, 1), (None, 2)]
    assert teacher.calls == [[user_turn(HARMFUL_REQUEST), user_turn(SAFE_REQUEST)], [user_turn(SAFE_REQUEST)]]

    config = SynthesisConfig(seeds=[], teacher=str(taught_model_dir), backend="ctranslate2", compute_type="float32",
                             prompt="guard", max_tokens=200, output=str(tmp_path / "kept.jsonl"))
    stats = synthesize(config, seeds)
    assert (stats["kept"], stats["rejected"], stats["failed"]) == (2, 0, 0)
    rows = {row["id"]: row for row in load_rows(config.output)}
    assert parse(rows["taught-0"]["output"]).labels["prompt_harmfulness"] == "harmful"
    assert rows["taught-1"]["output"].strip() == TAUGHT[SAFE_REQUEST].strip()
    assert synthesize(config, seeds)["already_done"] == 2  # resumes: nothing is generated twice
