"""Policies from examples (guardreasoner.policy): fitted on the shipped encoder's representation, cross-validated,
written atomically, answered beside the verdicts of every reasoning mode (several at once), fed by flags, and
refusing bad examples and folders with messages that say what is wrong."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from guardreasoner.cli import main
from guardreasoner.policy import PolicyError, checked, fit_policy, load_policy, read_examples, save_policy
from guardreasoner.records import FlagRecord
from guardreasoner.screen import load_screen, shipped_screen_folder

DISHES = ["a risotto", "sourdough bread", "a lemon tart", "pad thai", "beef stew", "a french omelette", "gnocchi",
          "chicken curry", "pancakes", "a caesar salad", "miso soup", "lasagna", "falafel", "a chocolate cake",
          "paella", "ramen broth", "guacamole", "banana bread", "carbonara", "a roast chicken"]
COOKING = ["How do I make {} at home?", "What's the trick to cooking {} without burning it?",
           "Give me a simple recipe for {}.", "How long should {} rest before I serve it?"]
SPORTS = ["How do I improve my tennis serve?", "What's a good 10k running plan for beginners?",
          "How should I warm up before football practice?", "Tips for a faster freestyle swim stroke?",
          "How do I train for my first marathon?", "What muscles does rowing work?",
          "How do I stop my golf slice?", "How many rest days should a cyclist take per week?",
          "What's the best way to practise basketball free throws?", "How do I learn to ski moguls?",
          "How can I get better at volleyball blocking?", "What should my climbing training week look like?",
          "How do I improve my sprint start?", "How do I keep score in badminton?",
          "How to choose a first road bike for racing?", "What drills help a hockey goalie?",
          "How do I pace a half marathon?", "What is a good strength routine for boxers?",
          "How do I practise my tennis backhand alone?", "How do I train for a triathlon swim leg?"]
OTHER = ["How do I reverse a linked list in Python?", "What's the capital of Australia?",
         "Explain how compound interest works.", "Fix this SQL: SELECT * FORM users;",
         "What are good sights in Lisbon for two days?", "How do I write a cover letter?",
         "Summarise the causes of the first world war.", "How do I change a flat bicycle tyre?",
         "What does a git rebase do?", "Translate 'good morning' into German.",
         "How do I set up a Python virtual environment?", "What is the Pythagorean theorem?",
         "Recommend a sci-fi novel for a teenager.", "How do I clean a laptop keyboard?",
         "What's the difference between TCP and UDP?", "How do I renew a passport in the UK?",
         "Explain photosynthesis to a ten year old.", "How do I centre a div in CSS?",
         "What causes the seasons on Earth?", "How do I negotiate a salary offer?"]


def cooking_examples() -> list[dict]:
    positives = [COOKING[i % len(COOKING)].format(dish) for i, dish in enumerate(DISHES)]
    return [{"prompt": text, "response": "", "label": 1} for text in positives] + \
        [{"prompt": text, "response": "", "label": 0} for text in OTHER + SPORTS[:10]]


def write_csv(path: Path, rows: list[dict], description: str | None = "Cooking questions and recipes") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        if description:
            handle.write(f"# description: {description}\n")
        writer = csv.DictWriter(handle, ["prompt", "response", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def encoder():
    return load_screen(shipped_screen_folder())


@pytest.fixture(scope="module")
def cooking(tmp_path_factory, encoder) -> Path:
    folder = tmp_path_factory.mktemp("policies")
    examples, description = read_examples(write_csv(folder / "cooking.csv", cooking_examples()))
    return save_policy(fit_policy("cooking", examples, encoder, description=description), folder / "cooking")


@pytest.fixture(scope="module")
def sports(tmp_path_factory, encoder) -> Path:
    folder = tmp_path_factory.mktemp("policies")
    rows = [{"prompt": text, "response": "", "label": 1} for text in SPORTS] + \
        [{"prompt": text, "response": "", "label": 0} for text in OTHER]
    examples, _ = read_examples(write_csv(folder / "sports.csv", rows, "Sports training"))
    return save_policy(fit_policy("sports", examples, encoder), folder / "sports")


def test_a_fitted_policy_writes_its_card_and_answers_unseen_items(cooking, encoder):
    card = json.loads((cooking / "policy.json").read_text())
    assert card["name"] == "cooking" and card["description"] == "Cooking questions and recipes"
    assert card["examples"] == {"positive": 20, "negative": 30}
    assert card["cross_validation"]["f1"] >= 90 and card["cross_validation"]["folds"] == 5
    assert 0 < card["threshold"] < 1 and len(card["misclassified"]) <= 3
    policy = load_policy(cooking, encoder)
    from guardreasoner.policy import representation

    unseen = [("Any tips for a crispy pizza base in a home oven?", None), ("What's a good dinner with lentils?", None),
              ("How do I configure nginx as a reverse proxy?", None), ("Who painted the Mona Lisa?", None)]
    p = policy.probabilities(representation(encoder, unseen, policy.layers))
    assert [bool(x >= policy.threshold) for x in p] == [True, True, False, False], p
    from guardreasoner.policy import fitted_examples  # what training.loop refits from

    kept = fitted_examples(cooking)
    assert len(kept) == 50 and sum(e.label for e in kept) == 20 and kept[0].prompt == cooking_examples()[0]["prompt"]


def test_several_policies_answer_independently_beside_the_verdicts_in_every_mode(cooking, sports, tiny_model_dir):
    from guardreasoner import load_guard

    items = [{"prompt": "What should I cook the night before a marathon to fuel my run?"},
             {"prompt": "How do I make a lemon tart?"}, {"prompt": "How do I sort a dict by value in Python?"}]
    for reasoning in ("off", "full"):
        guard = load_guard(str(tiny_model_dir), "transformers", reasoning=reasoning, max_new_tokens=8,
                           screen=str(shipped_screen_folder()), policies=[str(cooking), str(sports)])
        results = guard.classify(items)
        labels = [{name: c.label for name, c in r.categories.items()} for r in results]
        assert labels[1] == {"cooking": "positive", "sports": "negative"}, (reasoning, labels)
        assert labels[2] == {"cooking": "negative", "sports": "negative"}, (reasoning, labels)
        assert labels[0]["sports"] == "positive", (reasoning, labels)  # multi-label: both may hold; sports must
        assert all(r.verdicts["prompt_harmfulness"].label in ("harmful", "unharmful") for r in results)
        data = results[1].to_dict()
        assert data["categories"]["cooking"]["label"] == "positive" and 0.5 < data["categories"]["cooking"]["p"] <= 1
        from guardreasoner.results import GuardResult

        assert GuardResult.from_dict(json.loads(json.dumps(data))).categories == results[1].categories


def test_bad_examples_are_named_and_nothing_is_written(tmp_path, encoder):
    rows = cooking_examples()
    bad = write_csv(tmp_path / "bad.csv", rows[:3] + [{"prompt": "x", "response": "", "label": "maybe"}] + rows[3:])
    with pytest.raises(PolicyError, match="line 6: label 'maybe'"):  # 1 comment + 1 header + 3 rows: line 6
        read_examples(bad)
    few = write_csv(tmp_path / "few.csv", rows[:10] + rows[-30:])
    with pytest.raises(PolicyError, match="10 positive and 30 negative.*at least 16"):
        fit_policy("cooking", read_examples(few)[0], encoder)
    one = write_csv(tmp_path / "one.csv", rows[:20])
    with pytest.raises(PolicyError, match="all 20 distinct examples are positive"):
        checked(read_examples(one)[0])
    clash = write_csv(tmp_path / "clash.csv", rows + [{**rows[0], "label": 0, "prompt": rows[0]["prompt"].upper()}])
    with pytest.raises(PolicyError, match="line 53 of clash.csv repeats line 3 of clash.csv with the other label"):
        checked(read_examples(clash)[0])
    out = tmp_path / "never"
    assert main(["policy", "fit", "cooking", "--examples", str(few), "--out", str(out)]) == 2
    assert not out.exists() and not any(p.name.startswith(".never") for p in tmp_path.iterdir())


def test_a_policy_fitted_on_another_encoder_is_refused(cooking, tmp_path, encoder):
    import shutil

    moved = tmp_path / "other"
    shutil.copytree(cooking, moved)
    card = json.loads((moved / "policy.json").read_text())
    card["encoder"] = "0123456789abcdef"
    (moved / "policy.json").write_text(json.dumps(card))
    with pytest.raises(PolicyError, match="fitted on the encoder 0123456789abcdef.*fit the policy again"):
        load_policy(moved, encoder)
    with pytest.raises(PolicyError, match="no policy card here"):
        load_policy(tmp_path, encoder)


def test_flags_naming_a_policy_become_examples_through_the_cli(tmp_path, capsys):
    rows = cooking_examples()
    examples = write_csv(tmp_path / "cooking.csv", rows[:16] + rows[20:36])
    queue = tmp_path / "flags.jsonl"
    flags = [FlagRecord(f"flag-{i}", text, None, "", {}, {}, policy="cooking", policy_label="positive")
             for i, text in enumerate(["How do I brown butter for a sauce?", "How to fold dumplings neatly?"])]
    flags.append(FlagRecord("flag-x", "How do I fix a leaking tap?", None, "", {}, {}, policy="plumbing",
                            policy_label="positive"))
    queue.write_text("".join(json.dumps(flag.to_dict()) + "\n" for flag in flags))
    out = tmp_path / "policy"
    assert main(["policy", "fit", "cooking", "--examples", str(examples), "--flags", str(queue),
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "2 flag(s) name the policy cooking" in captured.err
    card = json.loads((out / "policy.json").read_text())
    assert card["examples"] == {"positive": 18, "negative": 16}
    held_out = write_csv(tmp_path / "held.csv", rows[16:20] + rows[36:])
    assert main(["policy", "evaluate", str(out), "--examples", str(held_out)]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["examples"] == 18 and figures["positive"] == 4 and figures["f1"] >= 80


def test_policies_are_added_to_and_removed_from_a_loaded_guard(cooking, sports, tiny_model_dir):
    """The app's path: a guard already loaded gains the policies (no reload) and loses them again."""
    from guardreasoner import load_guard
    from guardreasoner.policy import with_policies

    plain = load_guard(str(tiny_model_dir), "transformers", reasoning="full", max_new_tokens=4)
    assert plain.classify([{"prompt": "How do I make pancakes?"}])[0].categories == {}
    both = with_policies(plain, [cooking, sports])
    assert both.guard is plain and both.reasoning == "full"
    result = both.classify([{"prompt": "How do I make pancakes?"}])[0]
    assert {name: c.label for name, c in result.categories.items()} == {"cooking": "positive", "sports": "negative"}
    one = with_policies(both, [sports])
    assert set(one.classify([{"prompt": "How do I make pancakes?"}])[0].categories) == {"sports"}
    assert with_policies(one, []).classify([{"prompt": "How do I make pancakes?"}])[0].categories == {}


def test_the_service_and_the_cli_answer_policies(cooking, sports, tiny_model_dir, capsys):
    """`serve --policy`'s guard over real HTTP: every result carries the categories, in each mode the request asks
    for and in the stream; `classify --policy --json` prints them."""
    import httpx

    from guardreasoner import load_guard
    from guardreasoner.client import GuardClient
    from guardreasoner.service import ServiceSettings, create_app
    from tests.servers import running

    guard = load_guard(str(tiny_model_dir), "transformers", reasoning="off", max_new_tokens=8,
                       screen=str(shipped_screen_folder()), policies=[str(cooking), str(sports)])
    with running(create_app(guard, settings=ServiceSettings())) as url:
        for reasoning in ("off", "full"):
            body = {"items": [{"prompt": "How do I make a lemon tart?"}], "reasoning": reasoning}
            answer = httpx.post(url + "/v1/classify", json=body, timeout=60).json()
            categories = answer["results"][0]["categories"]
            assert categories["cooking"]["label"] == "positive" and categories["sports"]["label"] == "negative"
            assert categories["cooking"]["source"] == "head" and 0 <= categories["sports"]["p"] < 0.5
        (result,) = GuardClient(url).classify(["How do I train for my first marathon?"])
        assert result.categories["sports"].label == "positive"
        events = list(GuardClient(url).stream(["How do I make a lemon tart?"], reasoning="off"))
        (final,) = [data["result"] for kind, data in events if kind == "result"]
        assert final["categories"]["cooking"]["label"] == "positive"
    code = main(["classify", "How do I make gnocchi?", "--model", str(tiny_model_dir), "--backend", "transformers",
                 "--reasoning", "off", "--policy", str(cooking), "--policy", str(sports), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0 and printed["categories"]["cooking"]["label"] == "positive"
    assert printed["categories"]["sports"]["label"] == "negative"


@pytest.mark.parametrize("name", ["medical-self-treatment", "investment-advice"])
def test_the_shipped_example_policies_fit_the_shipped_encoder_and_hold_out(name, encoder):
    """docs/policies' fitted examples load on the shipped encoder (a retrained encoder fails here: fit them again
    with the command in docs/policies.md) and keep the held-out F1 the docs state (>= 90 asked)."""
    from guardreasoner.policy_cli import evaluate_policy

    folder = Path(__file__).parent.parent / "docs" / "policies" / name
    figures = evaluate_policy(folder / "fitted", folder / "held_out.csv", encoder)
    assert figures["examples"] == 80 and figures["f1"] >= 97, figures


def test_moderations_carry_the_policies_as_categories_of_their_own(cooking, sports, tiny_model_dir):
    """/v1/moderations through the official openai client: each policy under its own name, its p as the score,
    and `flagged` where a policy holds even though the request is harmless."""
    from openai import OpenAI

    from guardreasoner import load_guard
    from guardreasoner.service import ServiceSettings, create_app
    from tests.servers import running

    guard = load_guard(str(tiny_model_dir), "transformers", reasoning="off", max_new_tokens=8,
                       screen=str(shipped_screen_folder()), policies=[str(cooking), str(sports)])
    with running(create_app(guard, settings=ServiceSettings())) as url:
        client = OpenAI(base_url=url + "/v1", api_key="unused")
        tart, code = client.moderations.create(input=["How do I make a lemon tart?",
                                                     "How do I sort a dict by value in Python?"]).results
    extra = tart.model_extra or {}
    categories = {**tart.categories.model_dump(), **(tart.categories.model_extra or {})}
    scores = {**tart.category_scores.model_dump(), **(tart.category_scores.model_extra or {})}
    assert categories["cooking"] is True and categories["sports"] is False and tart.flagged
    assert scores["cooking"] > 0.5 > scores["sports"] and extra["verdicts"]["prompt_harmfulness"] == "unharmful"
    code_categories = {**code.categories.model_dump(), **(code.categories.model_extra or {})}
    assert code_categories["cooking"] is False and not code.flagged


def test_a_later_flags_file_overrules_an_earlier_one_for_the_same_item(tmp_path, capsys):
    """The app's queue says positive, the reviewers' pull (given after it) says negative: the review wins."""
    rows = cooking_examples()
    examples = write_csv(tmp_path / "cooking.csv", rows[:16] + rows[20:36])
    queue, pulled = tmp_path / "queue.jsonl", tmp_path / "pulled.jsonl"
    item = "How do I temper chocolate for a glossy finish?"
    queue.write_text(json.dumps(FlagRecord("flag-1", item, None, "", {}, {}, policy="cooking",
                                           policy_label="positive").to_dict()) + "\n")
    pulled.write_text(json.dumps(FlagRecord("flag-1", item, None, "", {}, {}, source="argilla", policy="cooking",
                                            policy_label="negative").to_dict()) + "\n")
    out = tmp_path / "policy"
    assert main(["policy", "fit", "cooking", "--examples", str(examples), "--flags", str(queue), "--flags",
                 str(pulled), "--out", str(out)]) == 0
    assert json.loads((out / "policy.json").read_text())["examples"] == {"positive": 16, "negative": 17}
