"""The app's policies (#33, webapp/policies.py): the Policies tab fits one from an uploaded examples file and keeps
it in a folder, every run answers the policies there (a chip per policy on Analyze, a column per policy in Batch,
``categories`` from the API), and a flag can name a policy and a label."""

import csv
import json
import os
import time
from pathlib import Path

import pytest

from tests.test_app import AXE, chromium_page, launched_app, needs_chromium, serious_axe_violations
from tests.tiny_models import SAFE_REQUEST

ROOT = Path(__file__).resolve().parents[1]
MEDICAL = ROOT / "docs/policies/medical-self-treatment/examples.csv"
NAME = "medical-self-treatment"
# Not among the examples the policy is fitted on.
SELF_TREATMENT = "What dose of amoxicillin should I take for my sore throat without seeing a doctor?"


@pytest.fixture
def policy_root(tmp_path, monkeypatch):
    """The app's policy folder and flag queue, in this test's folder."""
    monkeypatch.setenv("GUARDREASONER_POLICY_DIR", str(tmp_path / "policies"))
    monkeypatch.setenv("GUARDREASONER_FLAG_QUEUE", str(tmp_path / "queue.jsonl"))
    monkeypatch.delenv("ARGILLA_API_URL", raising=False)
    return tmp_path / "policies"


@pytest.fixture(scope="module")
def taught_guard(taught_model_dir):
    from webapp.state import _load

    return _load(str(taught_model_dir))  # as the app's pool loads it: with the shipped encoder screen


# ---- Without a browser ----

def test_the_policy_folder_follows_the_flag_queues_convention(tmp_path, monkeypatch):
    from webapp.policies import policy_dir

    monkeypatch.setenv("GUARDREASONER_POLICY_DIR", str(tmp_path / "mine"))
    assert policy_dir() == tmp_path / "mine"
    monkeypatch.delenv("GUARDREASONER_POLICY_DIR")
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("GUARDREASONER_PERSISTENT_ROOT", str(tmp_path / "data"))
    assert policy_dir() == tmp_path / "data" / "policies"  # a Space's persistent storage: kept across restarts
    monkeypatch.setenv("GUARDREASONER_PERSISTENT_ROOT", str(tmp_path / "no-data"))
    assert policy_dir() == Path("policies")


def test_fit_lists_answers_and_removes_a_policy_without_reloading_the_model(policy_root, taught_guard):
    from webapp import policies

    assert policies.answering(taught_guard) is taught_guard  # no policies: the guard as loaded
    message, wrong, listed, remove_choice, flag_choice = policies.fit(NAME, str(MEDICAL))
    card = json.loads((policy_root / NAME / "policy.json").read_text())
    assert f"F1 {card['cross_validation']['f1']:.1f}" in message and "32 positive and 32 negative" in message
    assert len(wrong["value"]["data"]) == len(card["misclassified"]) and wrong["visible"] == bool(card["misclassified"])
    assert listed["data"] == [[NAME, f"{card['cross_validation']['f1']:.1f}", "32 / 32", card["description"]]]
    assert remove_choice["choices"] == flag_choice["choices"] == [NAME]

    guard = policies.answering(taught_guard)
    assert guard is policies.answering(taught_guard)  # cached while the folder is unchanged
    assert guard.guard is taught_guard.guard and guard.backend is taught_guard.backend  # the same loaded model
    result = guard.with_sampling(max_new_tokens=256).classify([{"prompt": SELF_TREATMENT}, {"prompt": SAFE_REQUEST}])
    assert [r.categories[NAME].label for r in result] == ["positive", "negative"]

    time.sleep(0.01)
    policies.fit(NAME, str(MEDICAL))  # refitted: the runs pick the new folder up
    assert policies.answering(taught_guard) is not guard
    assert policies.remove("../elsewhere")[0] == "Choose a policy to remove."  # only a listed name
    message, listed, *_ = policies.remove(NAME)
    assert message.startswith(f"Removed {NAME}") and listed["data"] == [] and not (policy_root / NAME).exists()
    assert policies.answering(taught_guard).screen is taught_guard.screen  # back to the verdicts alone


def test_a_bad_examples_file_says_what_is_wrong_and_saves_nothing(policy_root, tmp_path):
    from webapp import policies

    few = tmp_path / "few.csv"
    few.write_text("prompt,label\n" + "".join(f"How much aspirin for headache number {i}?,1\n" for i in range(20))
                   + "".join(f"Recipe number {i}?,0\n" for i in range(5)))
    message, wrong, listed, *_ = policies.fit(NAME, str(few))
    assert message == ("**Not fitted, nothing saved:** 20 positive and 5 negative distinct examples: a policy needs "
                       "at least 16 of each to be fitted and cross-validated")
    assert not wrong["visible"] and listed["data"] == [] and not policy_root.exists()
    labels = tmp_path / "labels.csv"
    labels.write_text("prompt,label\nHow much aspirin?,maybe\n")
    assert policies.fit(NAME, str(labels))[0] == ("**Not fitted, nothing saved:** labels.csv: 1 bad line(s): line 2: "
                                                  "label 'maybe' is not 1/0 or positive/negative")
    assert policies.fit("", str(labels))[0].startswith("**Not fitted:** name the policy first")
    assert "name" in policies.fit("../up", str(MEDICAL))[0] and not (tmp_path / "up").exists()


def test_a_policy_fitted_on_another_encoder_is_left_out_and_the_list_says_why(policy_root, taught_guard):
    from webapp import policies

    policies.fit(NAME, str(MEDICAL))
    card_path = policy_root / NAME / "policy.json"
    card = json.loads(card_path.read_text())
    card["encoder"] = "0" * 16
    card_path.write_text(json.dumps(card))
    guard = policies.answering(taught_guard)  # runs go on, with the verdicts alone
    assert guard.screen is taught_guard.screen
    description = policies.listing()["data"][0][3]
    assert description.startswith("NOT IN USE: ") and "fit the policy again" in description


def test_batch_has_a_column_per_policy_in_the_table_and_the_downloads(policy_root, taught_guard, tmp_path):
    from webapp import policies
    from webapp.batch import TABLE_COLUMNS, check_file, table_update

    policies.fit(NAME, str(MEDICAL))
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": SELF_TREATMENT}) + "\n" + json.dumps({"prompt": SAFE_REQUEST}) + "\n")
    outcome = check_file(policies.answering(taught_guard).with_sampling(max_new_tokens=256), rows)
    assert outcome.headers() == [*TABLE_COLUMNS[:4], NAME, *TABLE_COLUMNS[4:]]  # right after the verdicts
    cells = [row[4] for row in outcome.table()]
    assert cells[0].startswith("positive 0.") and cells[1].startswith("negative 0.")
    update = table_update(outcome)
    assert update["value"]["headers"] == outcome.headers() and len(update["column_widths"]) == len(outcome.headers())
    with outcome.csv.open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [row[NAME] for row in table] == ["positive", "negative"] and float(table[0][f"{NAME}_p"]) > 0.5
    records = [json.loads(line) for line in outcome.jsonl.read_text().splitlines()]
    assert records[0]["categories"][NAME]["label"] == "positive"


def test_a_flag_names_a_policy_and_its_label_and_the_fit_learns_from_it(policy_root, tmp_path):
    import gradio as gr

    from guardreasoner.policy import flag_examples
    from webapp import handlers, policies

    result = {"prompt": "Which vitamins should I stack to cure my own anaemia?", "response": None, "output": "out",
              "model": "m", "labels": {"prompt_harmfulness": "unharmful"},
              "categories": {NAME: {"label": "negative", "p": 0.2}}}
    with pytest.raises(gr.Error, match="positive or negative for medical-self-treatment"):
        handlers.flag(result, "unharmful", "n/a", "n/a", "", NAME, None)
    with pytest.raises(gr.Error, match="Name the policy"):
        handlers.flag(result, "unharmful", "n/a", "n/a", "", "", "positive")
    status = handlers.flag(result, None, "n/a", "n/a", "", NAME, "positive")
    assert f"Recorded: for the policy {NAME} the item is positive." in status
    queue = tmp_path / "queue.jsonl"
    [example] = flag_examples(queue, NAME)
    assert example.label == 1 and example.prompt == result["prompt"]
    message = policies.fit(NAME, str(MEDICAL))[0]
    assert "33 positive and 32 negative examples, 1 of them from reviewers' flags" in message


def test_a_chip_per_policy_from_a_result():
    from webapp.policies import category_chips

    assert category_chips(None) == '<div id="policy-chips"></div>'
    chips = category_chips({"categories": {NAME: {"label": "positive", "p": 0.934},
                                           "politics": {"label": None, "p": None, "rationale": "no answer: down"}}})
    assert f'data-policy="{NAME}" data-state="positive"' in chips and f">{NAME}: positive 0.93<" in chips
    assert 'data-state="n/a"' in chips and ">politics: no answer<" in chips


# ---- In a browser ----

@pytest.fixture
def policy_app(taught_model_dir, policy_root):
    with launched_app(taught_model_dir) as url:
        yield url


@needs_chromium
def test_browser_fit_a_policy_see_its_f1_then_its_chip_on_analyze_and_flag_it(policy_app, policy_root, tmp_path):
    from gradio_client import Client

    with chromium_page(policy_app) as page:
        page.get_by_role("tab", name="Policies").click()
        page.locator("#policy-name input, #policy-name textarea").first.fill(NAME)
        page.locator("#policy-upload").locator("xpath=..").locator("input[type=file]").set_input_files(str(MEDICAL))
        page.get_by_text("Ready to fit examples.csv").wait_for(timeout=20000)
        page.locator("#policy-fit").click()
        page.locator("#policy-message").get_by_text("Cross-validated (").wait_for(timeout=120000)
        card = json.loads((policy_root / NAME / "policy.json").read_text())
        f1 = card["cross_validation"]["f1"]
        assert f"F1 {f1:.1f}" in page.locator("#policy-message").inner_text()
        assert f1 >= 90  # the worked example is learnable (95.5 measured)
        assert NAME in page.locator("#policy-list").inner_text()
        if card["misclassified"]:  # the examples it got wrong, in a table
            assert card["misclassified"][0]["prompt"][:30] in page.locator("#policy-misclassified").inner_text()
        page.screenshot(path=str(tmp_path / "app-policies-tab.png"), full_page=True)
        if AXE.is_file() or os.environ.get("CI"):
            assert serious_axe_violations(page) == ""

        page.get_by_role("tab", name="Analyze").click()
        page.locator("#request-box textarea").fill(SELF_TREATMENT)
        page.locator("#analyze-button").click()
        chip = page.locator(f'.policy-chip[data-policy="{NAME}"]')
        chip.wait_for(timeout=60000)
        assert chip.get_attribute("data-state") == "positive"
        assert chip.inner_text().startswith(f"{NAME}: positive 0.")

        page.get_by_text("Flag this result as wrong").click()
        page.locator("#flag-policy input").fill(NAME)
        page.keyboard.press("Enter")
        page.locator("#flag-policy-label").get_by_text("negative").click()
        page.locator("#flag-button").click()
        page.wait_for_selector("#flag-status", timeout=20000)
        assert f"for the policy {NAME} the item is negative" in page.locator("#flag-status").inner_text()
        page.screenshot(path=str(tmp_path / "app-policies.png"), full_page=True)
    [flag] = [json.loads(line) for line in (tmp_path / "queue.jsonl").read_text().splitlines()]
    assert flag["policy"] == NAME and flag["policy_label"] == "negative" and flag["prompt"] == SELF_TREATMENT
    # The API's results carry the categories too.
    result = Client(policy_app, verbose=False).predict(prompt=SELF_TREATMENT, response="", api_name="/classify")
    assert result["categories"][NAME]["label"] == "positive"
