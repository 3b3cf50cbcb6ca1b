"""The annotation loop against a real argilla-server on 127.0.0.1 (its own virtualenv, Debian's Redis, the sql
search engine): push from the three sources, review as reviewers do, pull pairs, survive a stopped server; in
Chromium, the app's Flag button reaching Argilla and a reviewer answering in Argilla's own web UI. Items and the
pairing rule are also checked without a server, and so is how reviewers' policy labels come back as examples."""

import json
import os
import shutil
from pathlib import Path

import pytest

from annotate import items as sources
from annotate.pull import Review, close_with_answers, pull, review_pair, reviews_from_argilla
from annotate.push import pending, push
from annotate.workspace import Target, dataset, settings, submit_review, to_record
from guardreasoner.parser import parse, split_upstream_prompt
from guardreasoner.policy import flag_examples
from guardreasoner.results import ANSWER_NAMES
from guardreasoner.rows import write_jsonl
from tests.servers import free_port
from tests.tiny_models import HARMFUL_REQUEST
from training.data import load_rows

CI = bool(os.environ.get("CI"))


@pytest.fixture(scope="module")
def traces(shared_dir):
    return load_rows(str(shared_dir / "traces" / "guardreasonertrain_sample.json"))


def flip(output: str, key: str, value: str) -> str:
    head, block = output.rsplit("Answers:", 1)
    name = ANSWER_NAMES[key] + ":"
    return head + "Answers:" + "\n".join(f"{name} {value}" if line.startswith(name) else line
                                         for line in block.split("\n"))


OTHER = {"harmful": "unharmful", "unharmful": "harmful", "refusal": "compliance", "compliance": "refusal"}


def mined_pairs(traces) -> list[dict]:
    """Six hard pairs in training.mine's format: the real trace is right, a flipped copy is the wrong sample
    (on the request for every row; on the reply's two verdicts where there is a reply, as mining does)."""
    pairs = []
    for row in traces:
        gold = parse(row["output"]).labels
        has_reply = split_upstream_prompt(row["input"])[1] is not None
        keys = ["prompt_harmfulness"] + (["response_refusal", "response_harmfulness"] if has_reply else [])
        for key in keys:
            pairs.append({"prompt": row["instruction"] + "\n" + row["input"], "chosen": row["output"],
                          "rejected": flip(row["output"], key, OTHER[gold[key]]), "task": key, "weight": 1.0,
                          "source": row["source"]})
    return pairs


def flag_records(shared_dir, count: int) -> list[dict]:
    """Flags as the app writes them, on real outputs: the flagger says the request verdict is wrong."""
    from webapp.flags import make_flag

    path = shared_dir / "predictions/GuardReasoner-1B/XSTestResponseRefusal/generated_predictions.jsonl"
    flags = []
    for line in path.open().readlines()[:count]:
        record = json.loads(line)
        request, reply = split_upstream_prompt(record["prompt"])
        verdicts = parse(record["predict"]).labels
        result = {"prompt": request, "response": reply, "output": record["predict"], "labels": verdicts,
                  "model": "GuardReasoner-1B"}
        flag = make_flag(result, {"prompt_harmfulness": OTHER[verdicts["prompt_harmfulness"]]}, "looks wrong")
        flags.append(flag.to_dict())
    return flags


def test_flags_carry_the_flaggers_correction(shared_dir, tmp_path):
    queue = tmp_path / "queue.jsonl"
    queue.write_text("".join(json.dumps(flag) + "\n" for flag in flag_records(shared_dir, 3)))
    found = sources.from_flags(queue)
    assert [item["metadata"]["disagreement"] for item in found] == ["flag:prompt_harmfulness"] * 3
    assert all(item["note"].startswith("flagged as prompt_harmfulness: ") and "comment: looks wrong" in item["note"]
               for item in found)
    assert [item["id"] for item in sources.from_flags(queue)] == [item["id"] for item in found]  # stable


def test_a_result_flagged_twice_is_one_item_with_the_later_correction(shared_dir, tmp_path):
    first = flag_records(shared_dir, 1)[0]
    again = {**first, "comment": "second thoughts"}  # the app appends a newer record with the same id
    queue = tmp_path / "queue.jsonl"
    queue.write_text("".join(json.dumps(flag) + "\n" for flag in (first, again)))
    (item,) = sources.from_flags(queue)
    assert "comment: second thoughts" in item["note"]


def test_eval_errors_are_the_rows_whose_verdict_differs_from_gold(shared_dir):
    found = sources.from_eval_run(shared_dir / "predictions" / "GuardReasoner-1B")
    aegis = [json.loads(line) for line in
             (shared_dir / "predictions/GuardReasoner-1B/AegisSafetyTest/generated_predictions.jsonl").open()]
    requests = {item["prompt"] for item in found if item["metadata"]["benchmark"] == "AegisSafetyTest"}
    # Row 276 (gold harmful) is read as unharmful by the strict parser; row 282 as harmful (see README/eval).
    assert split_upstream_prompt(aegis[276]["prompt"])[0] in requests
    assert split_upstream_prompt(aegis[282]["prompt"])[0] not in requests
    for item in found:
        keys = item["metadata"]["disagreement"].removeprefix("gold:").split(",")
        assert keys and set(keys) <= {"prompt_harmfulness", "response_refusal", "response_harmfulness"}
        assert item["metadata"]["source"] == "eval_error" and item["metadata"]["model"] == "GuardReasoner-1B"
    assert len(found) > 50
    by_id = {}
    for item in found:  # the same request, reply and output in two benchmarks is one record
        content = (item["prompt"], item["response"], item["reasoning"])
        assert by_id.setdefault(item["id"], content) == content


def test_mined_items_show_the_wrong_sample_beside_the_right_one(traces, tmp_path):
    pairs_file = tmp_path / "pairs.jsonl"
    write_jsonl(mined_pairs(traces), pairs_file)
    found = sources.from_mined(pairs_file, model="rsft-1b")
    assert len(found) == 6
    for item, pair in zip(found, mined_pairs(traces)):
        assert (item["reasoning"], item["other_reasoning"]) == (pair["rejected"], pair["chosen"])
        assert item["suggestions"][pair["task"]] != parse(pair["chosen"]).labels[pair["task"]]
        assert item["metadata"]["disagreement"] == "samples:" + pair["task"]


def test_the_pairing_rule(traces):
    row = traces[0]
    request, reply = split_upstream_prompt(row["input"])
    gold = parse(row["output"]).labels
    wrong = flip(row["output"], "prompt_harmfulness", OTHER[gold["prompt_harmfulness"]])
    review = Review("r", request, reply, [wrong], {"u1": {"prompt_harmfulness": gold["prompt_harmfulness"]}})
    assert review_pair(review)[0] == "skipped"  # the only output is wrong and nothing corrected it
    review.by_user["u1"]["corrected_reasoning"] = row["output"].split("---")[0] + "\nAnswers: \nRequest: wrong"
    kind, pair = review_pair(review, weight=2.0)
    assert kind == "pair" and pair["weight"] == 2.0 and pair["rejected"] == wrong
    # the reviewer's block replaced theirs
    assert parse(pair["chosen"]).labels["prompt_harmfulness"] == gold["prompt_harmfulness"]
    assert pair["chosen"].count("Answers:") == 1 and pair["prompt"] == row["instruction"] + "\n" + row["input"]
    review.by_user["u2"] = {"prompt_harmfulness": OTHER[gold["prompt_harmfulness"]]}
    kind, conflict = review_pair(review)
    assert kind == "conflict" and conflict["reviews"] == {"u1": gold["prompt_harmfulness"],
                                                          "u2": OTHER[gold["prompt_harmfulness"]]}
    assert close_with_answers("# Task 1\nfine", {"prompt_harmfulness": "unharmful"}).endswith(
        "---\n\nAnswers: \nRequest: unharmful\nCompletion: None\nResponse: None")


POLICY = "self_treatment"


def policy_flags(shared_dir, labels: list[str | None]) -> list[dict]:
    """Flags as the app writes them, each naming the policy with the given label (None: a flag without one)."""
    flags = flag_records(shared_dir, len(labels))
    return [{**flag, "policy": POLICY, "policy_label": label} if label else flag for flag, label in zip(flags, labels)]


def test_a_flag_naming_a_policy_reaches_the_record_as_metadata_and_a_suggestion(shared_dir, tmp_path):
    queue = tmp_path / "queue.jsonl"
    flags = policy_flags(shared_dir, ["positive", None, "negative"])
    flags[2]["policy_label"] = "maybe"  # not a label: the name still reaches reviewers, no suggestion does
    write_jsonl(flags, queue)
    named, plain, unlabelled = sources.from_flags(queue)
    assert "for the policy self_treatment the item is positive" in named["note"]
    record = to_record(named)
    assert record.metadata["policy"] == POLICY
    assert (record.suggestions["policy_label"].value, record.suggestions["policy_label"].agent) == ("positive",
                                                                                                  "flagger")
    record = to_record(plain)  # as before policies, apart from the question left open
    assert "policy" not in record.metadata and "policy_label" not in record.suggestions.to_dict()
    assert record.suggestions["prompt_harmfulness"].value == plain["suggestions"]["prompt_harmfulness"]
    record = to_record(unlabelled)
    assert record.metadata["policy"] == POLICY and "policy_label" not in record.suggestions.to_dict()


def test_agreed_policy_labels_become_examples_and_disagreements_conflicts(traces, tmp_path):
    row = next(row for row in traces if split_upstream_prompt(row["input"])[1] is not None)  # all three verdicts
    request, reply = split_upstream_prompt(row["input"])
    verdicts = parse(row["output"]).labels

    def review(name, policy, by_user):
        return Review(name, f"{request} ({name})", reply, [row["output"]], by_user, "app_flag", policy)

    reviews = [
        review("agreed", POLICY, {"u1": {**verdicts, "policy_label": "negative", "comment": "not advice"},
                                  "u2": {**verdicts, "policy_label": "negative"}}),
        review("one-answered", POLICY, {"u1": {**verdicts}, "u2": {**verdicts, "policy_label": "positive"}}),
        review("split", POLICY, {"u1": {**verdicts, "policy_label": "positive"},
                                 "u2": {**verdicts, "policy_label": "negative"}}),
        review("unanswered", POLICY, {"u1": {**verdicts}}),
        review("no-policy", "", {"u1": {**verdicts, "policy_label": "positive"}}),  # names no policy: means nothing
    ]
    result = pull(reviews)
    assert [e["id"] for e in result.policy_examples] == ["agreed", "one-answered"]
    assert result.conflicts == [{"id": "split", "verdict": "policy_label", "policy": POLICY,
                                 "reviews": {"u1": "positive", "u2": "negative"}}]
    assert result.pairs == [] and len(result.skipped) == 5  # the verdicts agree with the output: no pairs
    agreed = result.policy_examples[0]
    assert (agreed["source"], agreed["policy"], agreed["policy_label"]) == ("argilla", POLICY, "negative")
    assert agreed["corrected"] == verdicts and agreed["comment"] == "not advice" and agreed["output"] == row["output"]
    # A verdict conflict does not hide an agreed policy label (and is reported once, as before).
    torn = review("torn", POLICY, {"u1": {**verdicts, "policy_label": "positive"},
                                   "u2": {**verdicts, "prompt_harmfulness": OTHER[verdicts["prompt_harmfulness"]],
                                          "policy_label": "positive"}})
    result = pull([torn])
    assert [c["verdict"] for c in result.conflicts] == ["prompt_harmfulness"]
    assert [(e["policy_label"], e["corrected"]) for e in result.policy_examples] == [("positive", {})]

    written = tmp_path / "review_policy_flags.jsonl"
    write_jsonl(pull(reviews).policy_examples, written)
    found = flag_examples(written, POLICY)  # exactly what `policy fit NAME --flags FILE` reads
    assert [(e.prompt, e.response, e.label) for e in found] == [(f"{request} (agreed)", reply, 0),
                                                               (f"{request} (one-answered)", reply, 1)]
    assert flag_examples(written, "another_policy") == []


@pytest.fixture(scope="module")
def argilla(tmp_path_factory):
    if not shutil.which("redis-server"):
        message = "Debian's redis-server is not installed (scripts/test.sh installs it)"
        pytest.fail(message) if CI else pytest.skip(message)
    from annotate.server import ServerConfig, add_user, start, stop

    config = ServerConfig(home=str(tmp_path_factory.mktemp("argilla")), port=free_port(), redis_port=free_port())
    start(config)
    add_user(config, "reviewer_a", "reviewer_a.key")
    add_user(config, "reviewer_b", "reviewer_b.key")
    saved = {name: os.environ.get(name) for name in ("ARGILLA_API_URL", "ARGILLA_API_KEY")}
    os.environ.update(ARGILLA_API_URL=config.url, ARGILLA_API_KEY=config.api_key)
    yield config
    stop(config)
    for name, value in saved.items():
        os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


def reviewer(config, key):
    import argilla as rg

    return rg.Argilla(api_url=config.url, api_key=key)


def records_of(target):
    return {record.id: record for record in dataset(target, create=False).records(with_suggestions=True)}


def test_push_review_pull_against_a_real_server(argilla, shared_dir, traces, taught_model_dir, tmp_path):
    from training.hs_dpo import main as hs_dpo

    target = Target(dataset="loop")
    outbox = tmp_path / "outbox.jsonl"
    queue = tmp_path / "queue.jsonl"
    queue.write_text("".join(json.dumps(flag) + "\n" for flag in flag_records(shared_dir, 6)))
    write_jsonl(mined_pairs(traces), tmp_path / "pairs.jsonl")
    pushed = (sources.from_flags(queue) + sources.from_eval_run(shared_dir / "predictions/GuardReasoner-8B")[:8]
              + sources.from_mined(tmp_path / "pairs.jsonl", model="rsft"))
    assert len(pushed) == 20
    report = push(pushed, target, outbox)
    assert (report.queued, report.delivered, report.pending, report.error) == (20, 20, 0, None)
    assert push(pushed, target, outbox).delivered == 0  # already delivered: nothing sent again
    assert push(pushed, target, tmp_path / "fresh-outbox.jsonl").delivered == 20  # another machine: upserted
    on_server = records_of(target)
    assert sorted(on_server) == sorted(item["id"] for item in pushed)
    first = on_server[pushed[0]["id"]]
    assert first.fields["reasoning"] == pushed[0]["reasoning"] and first.metadata["source"] == "app_flag"
    assert first.suggestions["prompt_harmfulness"].value == pushed[0]["suggestions"]["prompt_harmfulness"]
    assert first.suggestions["prompt_harmfulness"].agent == pushed[0]["metadata"]["model"]

    a, b = reviewer(argilla, "reviewer_a.key"), reviewer(argilla, "reviewer_b.key")
    expected = {}  # record id -> what pull must make of it
    by_kind = {kind: [i for i in pushed if i["metadata"]["source"] == kind]
               for kind in ("app_flag", "eval_error", "mined_hard_sample")}
    for number, item in enumerate(by_kind["mined_hard_sample"]):
        right = parse(item["other_reasoning"]).labels
        verdicts = right if number % 2 == 0 else parse(item["reasoning"]).labels  # odd: the reviewer sides
        submit_review(a, on_server[item["id"]], verdicts)                           # with the "wrong" sample
        expected[item["id"]] = ("pair", verdicts)
    for number, item in enumerate(by_kind["eval_error"][:4]):
        model = parse(item["reasoning"]).labels
        if number < 2:  # the reviewer agrees with the model: the benchmark's label was wrong
            submit_review(b, on_server[item["id"]], model)
            expected[item["id"]] = ("skipped", model)
        else:  # the reviewer disagrees and writes the reasoning the model should have given
            key = item["metadata"]["disagreement"].removeprefix("gold:").split(",")[0]
            verdicts = {**model, key: OTHER[model[key]] if model[key] else "harmful"}
            submit_review(b, on_server[item["id"]], verdicts, corrected_reasoning="# Task 1\nReconsidered.\n")
            expected[item["id"]] = ("pair", verdicts)
    conflict, agreed = by_kind["app_flag"][:2]
    model = parse(conflict["reasoning"]).labels
    submit_review(a, on_server[conflict["id"]], {"prompt_harmfulness": OTHER[model["prompt_harmfulness"]]})
    submit_review(b, on_server[conflict["id"]], {"prompt_harmfulness": model["prompt_harmfulness"]})
    expected[conflict["id"]] = ("conflict", None)
    flipped = {**parse(agreed["reasoning"]).labels}
    flipped["prompt_harmfulness"] = OTHER[flipped["prompt_harmfulness"]]
    for client in (a, b):  # two reviewers who agree make one pair
        submit_review(client, on_server[agreed["id"]], flipped, corrected_reasoning="# Task 1\nIt is fine.")
    expected[agreed["id"]] = ("pair", flipped)

    result = pull(reviews_from_argilla(target), weight=1.7)
    assert {c["id"] for c in result.conflicts} == {conflict["id"]}
    assert {s["id"] for s in result.skipped} == {i for i, (kind, _) in expected.items() if kind == "skipped"}
    assert {p["id"] for p in result.pairs} == {i for i, (kind, _) in expected.items() if kind == "pair"}
    replies = {item["id"]: item["response"] for item in pushed}
    for pair in result.pairs:
        verdicts = {k: v for k, v in expected[pair["id"]][1].items()  # without a reply only the request counts
                    if v and (k == "prompt_harmfulness" or replies[pair["id"]] is not None)}
        chosen, rejected = parse(pair["chosen"]).labels, parse(pair["rejected"]).labels
        assert all(chosen[k] == v for k, v in verdicts.items())
        assert any(rejected[k] != v for k, v in verdicts.items())
        assert pair["weight"] == 1.7
    assert len(result.sft_rows) == 3 and all("Reconsidered" in r["output"] or "It is fine" in r["output"]
                                             for r in result.sft_rows)
    from annotate.cli import main as annotate_cli

    assert annotate_cli(["--dataset", "loop", "pull", "--pairs", str(tmp_path / "review_pairs.jsonl"),
                         "--sft", str(tmp_path / "review_sft.jsonl"), "--weight", "1.7"]) == 0
    assert [json.loads(line) for line in (tmp_path / "review_pairs.jsonl").open()] == result.pairs
    assert load_rows(str(tmp_path / "review_sft.jsonl"))[0]["instruction"].startswith("You are a classifier")
    trainer = hs_dpo(["--model_name_or_path", str(taught_model_dir), "--dataset_name",
                      str(tmp_path / "review_pairs.jsonl"), "--output_dir", str(tmp_path / "dpo"),
                      "--per_device_train_batch_size", "2", "--max_steps", "1", "--logging_steps", "1",
                      "--report_to", "none", "--use_cpu", "true", "--gradient_checkpointing", "false",
                      "--save_strategy", "no", "--max_length", "512", "--bf16", "false"])
    assert [e["weight"] for e in trainer.state.log_history if "weight" in e] == [pytest.approx(1.7)]


def test_a_flag_made_while_the_server_is_down_is_delivered_once_it_is_back(argilla, tmp_path):
    from annotate.server import start, stop

    target = Target(dataset="outage")
    outbox = tmp_path / "outbox.jsonl"
    first = sources.make_item("first", None, "Answers: \nRequest: harmful", source="app_flag", model="m",
                              disagreement="flag")
    assert push([first], target, outbox).delivered == 1
    stop(argilla)
    flag = sources.make_item("while down", None, "Answers: \nRequest: harmful", source="app_flag", model="m",
                             disagreement="flag")
    report = push([flag], target, outbox)
    assert report.delivered == 0 and report.pending == 1 and report.error
    assert [item["id"] for item in pending(outbox)] == [flag["id"]]
    start(argilla)
    assert push([], target, outbox).delivered == 1
    assert push([], target, outbox).delivered == 0
    on_server = records_of(target)
    assert sorted(on_server) == sorted([first["id"], flag["id"]])  # the earlier record survived the restart


def test_a_reviewers_policy_label_comes_back_as_an_example(argilla, shared_dir, tmp_path, capsys):
    """A flag naming a policy is pushed with the flagger's label suggested; reviewers answer through the SDK;
    pull --policy-examples writes what they agree on, which policy fit's flag reader takes with their label."""
    from annotate.cli import main as annotate_cli

    target = Target(dataset="policy-review")
    queue = tmp_path / "queue.jsonl"
    write_jsonl(policy_flags(shared_dir, ["positive", "positive", "negative", None]), queue)
    pushed = sources.from_flags(queue)
    assert push(pushed, target, tmp_path / "outbox.jsonl").delivered == 4
    question = next(q for q in dataset(target).settings.questions if q.name == "policy_label")
    assert question.labels == ["positive", "negative"] and not question.required
    on_server = records_of(target)
    overruled, split, unanswered, plain = (on_server[item["id"]] for item in pushed)
    assert overruled.metadata["policy"] == POLICY and overruled.suggestions["policy_label"].value == "positive"
    assert overruled.suggestions["policy_label"].agent == "flagger"
    assert "policy" not in plain.metadata and "policy_label" not in plain.suggestions.to_dict()

    a, b = reviewer(argilla, "reviewer_a.key"), reviewer(argilla, "reviewer_b.key")
    model = {item["id"]: parse(item["reasoning"]).labels for item in pushed}
    for client in (a, b):  # both overrule the flagger: the item is not self-treatment advice
        submit_review(client, overruled, model[overruled.id], policy_label="negative", comment="a recipe")
    submit_review(a, split, model[split.id], policy_label="positive")
    submit_review(b, split, model[split.id], policy_label="negative")
    submit_review(a, unanswered, model[unanswered.id])
    submit_review(a, plain, model[plain.id], policy_label="positive")  # no policy named: nothing to learn

    examples_file = tmp_path / "review_policy_flags.jsonl"
    capsys.readouterr()
    assert annotate_cli(["--dataset", "policy-review", "pull", "--pairs", str(tmp_path / "pairs.jsonl"),
                         "--policy-examples", str(examples_file)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])["policy_examples"] == 1
    assert (f"conflict on record {split.id}: reviewers disagree on policy_label for the policy {POLICY}"
            in err)
    (line,) = [json.loads(text) for text in examples_file.open()]
    assert (line["id"], line["source"], line["policy"], line["policy_label"]) == (overruled.id, "argilla", POLICY,
                                                                                  "negative")
    assert line["comment"] == "a recipe; a recipe" and line["prompt"] == pushed[0]["prompt"]
    (example,) = flag_examples(examples_file, POLICY)
    assert (example.prompt, example.response, example.label) == (pushed[0]["prompt"], pushed[0]["response"], 0)


def test_a_dataset_made_before_policies_says_to_make_a_new_one(argilla, shared_dir, tmp_path, capsys, monkeypatch):
    import argilla as rg

    from annotate.cli import main as annotate_cli
    from annotate.workspace import connect
    from webapp.flags import deliver_to_argilla

    current = settings()  # the settings of the version before policies: no policy question or metadata
    old = rg.Settings(guidelines=current.guidelines, fields=list(current.fields),
                      questions=[q for q in current.questions if q.name != "policy_label"],
                      metadata=[m for m in current.metadata if m.name != "policy"], allow_extra_metadata=False)
    client = connect(Target())
    rg.Dataset(name="before-policies", workspace=client.workspaces[0].name, settings=old, client=client).create()
    queue = tmp_path / "queue.jsonl"
    write_jsonl(policy_flags(shared_dir, [None, "positive"]), queue)
    plain, named = sources.from_flags(queue)
    old_target = Target(dataset="before-policies")
    assert push([plain], old_target, tmp_path / "plain-outbox.jsonl").delivered == 1  # still takes the rest
    outbox = tmp_path / "outbox.jsonl"
    report = push([named], old_target, outbox)
    assert (report.delivered, report.pending) == (0, 1)
    assert report.error.startswith("OutdatedDataset: the Argilla dataset 'before-policies' was made by an earlier "
                                   "version and lacks the question 'policy_label' and the metadata property 'policy'")
    assert "make a new dataset (--dataset NAME or ANNOTATE_DATASET)" in report.error
    assert list(records_of(old_target)) == [plain["id"]]
    assert push([], Target(dataset="after-policies"), outbox).delivered == 1  # the flag waited, then went there
    capsys.readouterr()
    assert annotate_cli(["--dataset", "before-policies", "pull", "--pairs", str(tmp_path / "pairs.jsonl"),
                         "--policy-examples", str(tmp_path / "policy.jsonl")]) == 0
    assert "was made by an earlier version and lacks the question 'policy_label'" in capsys.readouterr().err
    # The app's Flag says so too, instead of calling the server unreachable.
    monkeypatch.setenv("ANNOTATE_DATASET", "before-policies")
    monkeypatch.setenv("ANNOTATE_OUTBOX", str(tmp_path / "app-outbox.jsonl"))
    said = deliver_to_argilla(queue)
    assert said.startswith("Not sent to Argilla: the Argilla dataset 'before-policies' was made by an earlier")
    assert "make a new dataset (--dataset NAME or ANNOTATE_DATASET)" in said


def test_the_apps_flag_button_reaches_argilla(argilla, taught_model_dir, tmp_path, monkeypatch):
    from tests.test_app import CHROMIUM, chromium_page, launched_app

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing") if CI else pytest.skip("Debian's chromium is not installed")
    monkeypatch.setenv("GUARDREASONER_FLAG_QUEUE", str(tmp_path / "queue.jsonl"))
    monkeypatch.setenv("ANNOTATE_OUTBOX", str(tmp_path / "outbox.jsonl"))
    monkeypatch.setenv("ANNOTATE_DATASET", "app-flags")
    with launched_app(taught_model_dir) as url, chromium_page(url, {"width": 1280, "height": 1400}) as page:
        page.locator("#request-box textarea").fill(HARMFUL_REQUEST)
        page.locator("#analyze-button").click()
        page.wait_for_function(
            "() => document.querySelector('#run-status')?.dataset.state === 'done'", timeout=60000)
        page.get_by_text("Flag this result as wrong").click()
        page.locator("#correct-request").get_by_text("unharmful").click()
        page.locator("#flag-comment textarea").fill("a pipe bomb is not harmless")
        page.locator("#flag-button").click()
        page.wait_for_function(
            "() => (document.querySelector('#flag-status')?.textContent || '').includes('Argilla')",
            timeout=120000)
        status = page.locator("#flag-status").text_content()
    assert "Sent to Argilla (1 record(s) delivered)" in status
    (record,) = records_of(Target(dataset="app-flags")).values()
    assert record.fields["prompt"] == HARMFUL_REQUEST and record.metadata["source"] == "app_flag"
    assert record.suggestions["prompt_harmfulness"].value == "harmful"
    assert "flagged as prompt_harmfulness: unharmful" in record.fields["note"]
    assert "a pipe bomb is not harmless" in record.fields["note"]


# Reaches the end of an element's text: the last line is inside the viewport.
END_IN_VIEW = """(element) => {
    const range = document.createRange();
    range.selectNodeContents(element);
    const rects = range.getClientRects();
    const last = rects[rects.length - 1];
    return last.top >= 0 && last.bottom <= window.innerHeight;
}"""


def test_a_reviewer_answers_in_argillas_own_web_ui(argilla, shared_dir, traces, tmp_path):
    """Sign in as an annotator in Argilla's web UI, read a mined item, overrule the model and submit; pull then
    makes the pair and the SFT row from what was clicked and typed."""
    import urllib.request

    from playwright.sync_api import expect, sync_playwright

    from annotate.cli import main as annotate_cli
    from annotate.server import add_user
    from tests.test_app import CHROMIUM, CHROMIUM_FLAGS

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is missing") if CI else pytest.skip("Debian's chromium is not installed")
    with urllib.request.urlopen(argilla.url + "/sign-in") as page_html:  # argilla-server ships its web UI
        assert "<title>Argilla</title>" in page_html.read().decode()
    # A request with a reply; the wrong sample is made long and quotes markup, which must reach the reviewer as is.
    pair = next(p for p in mined_pairs(traces)
                if p["task"] == "prompt_harmfulness" and split_upstream_prompt(p["prompt"])[1] is not None)
    markup = "The reply quotes <script>alert('x')</script> and <b>bold</b> markup."
    steps = "".join(f"## Reasoning Step {n}\nStill weighing the request, step {n}.\n\n" for n in range(4, 40))
    head, tail = pair["rejected"].split("# Task 2", 1)
    pair["rejected"] = f"{head}{markup}\n\n{steps}# Task 2{tail}"
    write_jsonl([pair], tmp_path / "pairs.jsonl")
    (item,) = sources.from_mined(tmp_path / "pairs.jsonl", model="rsft-1b")
    target, outbox = Target(dataset="web-review"), tmp_path / "outbox.jsonl"
    assert push([item], target, outbox).delivered == 1
    queue = tmp_path / "queue.jsonl"  # pushed later, so shown after the mined item
    queue.write_text("".join(json.dumps(flag) + "\n" for flag in flag_records(shared_dir, 2)))
    assert push(sources.from_flags(queue), target, outbox).delivered == 2
    add_user(argilla, "web_reviewer", "web_reviewer.key", password="reviewer-pass")
    suggested = item["suggestions"]
    assert all(suggested.values())
    clicked = {**suggested, "prompt_harmfulness": OTHER[suggested["prompt_harmfulness"]]}
    corrected = ("# Task 1\n\n## Reasoning Step 1\nThe human user asks for a person's home address, which invades "
                 "their privacy.\n")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(argilla.url + "/")
        expect(page).to_have_url(argilla.url + "/sign-in")
        page.get_by_label("Username").fill("web_reviewer")
        page.get_by_label("Password").fill("reviewer-pass")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("link", name="web-review").click()

        expect(page.get_by_label("Current Record")).to_have_text("1")
        expect(page.get_by_label("Total Records")).to_have_text("of 3")
        for title, text in (("Human request", item["prompt"]), ("AI reply", item["response"]),
                            ("Model reasoning under review", item["reasoning"]),
                            ("Another sample that disagrees", item["other_reasoning"])):
            expect(page.get_by_text(title, exact=True)).to_be_visible()
            expect(page.get_by_text(text, exact=True)).to_be_visible()  # every character, tags included
        expect(page.get_by_text(markup)).to_be_visible()
        reasoning = page.get_by_text(item["reasoning"], exact=True)
        assert not reasoning.evaluate(END_IN_VIEW)  # longer than the screen ...
        reasoning.hover()
        page.mouse.wheel(0, 20000)
        page.wait_for_function(END_IN_VIEW, arg=reasoning.element_handle())  # ... and scrolls to its last line

        # The model's verdicts are pre-selected, each marked as the model's suggestion (a tooltip naming it).
        for key, label in suggested.items():
            expect(page.get_by_label(f"Question: {key}").locator(f"input[name='{label}']")).to_be_checked()
        request_question = page.get_by_label("Question: prompt_harmfulness")
        model_label = request_question.get_by_role("button", name=suggested["prompt_harmfulness"], exact=True)
        tooltip = model_label.locator(".tooltip-content")  # no role or label; shown by opacity on hover
        expect(tooltip).to_contain_text("Suggestion")
        expect(tooltip).to_contain_text("rsft-1b")
        expect(tooltip).to_have_css("opacity", "0")
        model_label.hover()
        expect(tooltip).to_have_css("opacity", "1")
        reviewer_label = request_question.get_by_role("button", name=clicked["prompt_harmfulness"], exact=True)
        expect(reviewer_label).not_to_contain_text("Suggestion")

        reviewer_label.click()  # overrule the model on the request; keep its reply verdicts
        for key, label in clicked.items():
            for option in (label, OTHER[label]):
                box = page.get_by_label(f"Question: {key}").locator(f"input[name='{option}']")
                expect(box).to_be_checked(checked=option == label)
        page.get_by_label("Question: corrected_reasoning").locator("[contenteditable]").fill(corrected)
        with page.expect_response(lambda r: "/responses" in r.url and r.request.method in ("POST", "PUT")
                                  and (r.request.post_data_json or {}).get("status") == "submitted") as sent:
            page.get_by_role("button", name="Submit").click()
        assert sent.value.ok, sent.value.text()  # the server has stored the submitted response
        expect(page.get_by_label("Current Record")).to_have_text("2")  # on to the next record
        browser.close()

    pairs_file, sft_file = tmp_path / "review_pairs.jsonl", tmp_path / "review_sft.jsonl"
    assert annotate_cli(["--dataset", "web-review", "pull", "--pairs", str(pairs_file), "--sft", str(sft_file)]) == 0
    (made,) = [json.loads(line) for line in pairs_file.open()]
    assert made["id"] == item["id"] and made["rejected"] == item["reasoning"] and made["corrected"]
    assert parse(made["chosen"]).labels == clicked
    assert made["chosen"].startswith(corrected.rstrip())
    (row,) = load_rows(str(sft_file))
    assert row["output"] == made["chosen"] and parse(row["output"]).labels == clicked
