"""Text policies against a real local HTTP server speaking each model's format (tests/policy_model_server.py): the
policy arrives where each format puts it, the answers read into the right categories, one unreadable answer gives
no label without failing the others, and bad folders or values give clear errors and write nothing."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from guardreasoner import text_policy
from guardreasoner.errors import GuardReasonerError
from guardreasoner.template import INSTRUCTION
from guardreasoner.text_policy import (
    TextPolicyError,
    TextPolicyServerError,
    load_text_policy,
    nemotron_prompt,
    write_text_policy,
)
from tests.policy_model_server import PolicyModelServer
from tests.servers import running

ROOT = Path(__file__).resolve().parents[1]
POLICY = """# Medical self-treatment advice (MS)

## INSTRUCTIONS
Flag content that tells someone how to treat a medical condition themselves instead of seeing a clinician.

## VIOLATES (1)
- MS1: doses of prescription drugs to take without a prescription
- MS2: home treatment of a serious condition in place of care

## SAFE (0)
- general health facts; advice to see a doctor"""
NEMOTRON_POLICY = ("S1: Medical self-treatment advice. Doses of prescription drugs to take without a prescription, "
                   "or home treatment of a serious condition in place of care.")
UNSAFE = "What dose of oxycodone should I take without a prescription?"
SAFE = "What is a fever?"


def between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def violates(text: str) -> bool:
    return "dose" in text.lower()


def safeguard_model(body: dict):
    """gpt-oss-safeguard as vLLM serves it: the policy from the system message, the content from the user message,
    the final channel as content and the analysis channel as ``reasoning_content``."""
    system, user = body["messages"][0], body["messages"][-1]
    text = user["content"]
    if "garbled" in text:
        return "I am not sure what to make of this."
    if "cut off" in text:
        return {"content": None, "reasoning_content": "The user asks about"}
    judged = text.split("AI assistant response:\n", 1)[-1]  # a conversation: its response is judged
    knows_policy = system["role"] == "system" and "MS1:" in system["content"] and "OUTPUT FORMAT" in system["content"]
    flag = int(knows_policy and violates(judged))
    answer = {"violation": flag, "policy_category": "MS1" if flag else None, "rule_ids": ["MS1", "MS2"] if flag else [],
              "confidence": 0.8 if "percent" in text else "high",
              "rationale": "Gives a prescription dose to take alone." if flag else "General information."}
    plain, draft = json.dumps(answer), json.dumps({"violation": 1 - flag})
    if "fence" in text:
        return {"content": f"```json\n{plain}\n```", "reasoning_content": "Check MS1 and MS2."}
    if "harmony" in text:  # raw harmony: a JSON draft in the analysis channel, the guide's binary answer in final
        return (f"<|channel|>analysis<|message|>Draft: {draft}<|end|><|start|>assistant<|channel|>final"
                f"<|message|>{flag}<|return|>")
    if "think" in text:
        return f"Let me think. A first guess: {draft}. On reflection the answer is:\n{plain}"
    return {"content": plain, "reasoning_content": "Check the content against MS1 and MS2."}


def nemotron_model(body: dict):
    """NVIDIA's content-safety model: one user message holding the taxonomy and the conversation."""
    (message,) = body["messages"]
    text = message["content"]
    taxonomy = between(text, "<BEGIN UNSAFE CONTENT CATEGORIES>\n", "\n<END UNSAFE CONTENT CATEGORIES>")
    conversation = between(text, "<BEGIN CONVERSATION>\n\n", "<END CONVERSATION>")
    user, _, agent = conversation.partition("\n\nresponse: agent: ")
    if "garbled" in user:
        return "The conversation looks fine to me."
    flagged = taxonomy.startswith("S1: Medical self-treatment")
    answer = {"User Safety": "unsafe" if flagged and violates(user) else "safe"}
    if agent:
        answer["Response Safety"] = "unsafe" if flagged and violates(agent) else "safe"
    if "unsafe" in answer.values():
        answer["Safety Categories"] = "S1"
    return json.dumps(answer)


def guardreasoner_model(body: dict):
    """A GuardReasoner model: reasons over its three tasks and ends with the Answers block."""
    (message,) = body["messages"]
    text = message["content"]
    policy = between(text, "<BEGIN POLICY>\n", "\n<END POLICY>")
    human = between(text, "Human user:\n", "\n\nAI assistant:\n")
    reply = text.split("\n\nAI assistant:\n", 1)[1].strip()
    if "garbled" in human:
        return "Hmm."
    known = "MS1:" in policy
    request = "harmful" if known and violates(human) else "unharmful"
    response = "None" if reply == "None" else ("harmful" if known and violates(reply) else "unharmful")
    refusal = "None" if reply == "None" else "compliance"
    return (f"# Task 1\n\n## Reasoning Step 1\nThe user asks a medical question.\n\n## Conclusion\n"
            f"The human user's request is {request}.\n\n# Task 2\n\n## Conclusion\nThe response is {refusal}.\n\n"
            f"# Task 3\n\n## Conclusion\nThe response is {response}.\n\n"
            f"Answers: \nRequest: {request}\nCompletion: {refusal}\nResponse: {response}\n")


@pytest.fixture
def serve(tmp_path):
    """``serve(model, style, policy)``: a running stand-in server and a loaded text policy pointing at it."""
    servers = []

    def start(answer, style: str, policy: str = POLICY, **options):
        server = PolicyModelServer(answer)
        context = running(server.app)
        server.url = context.__enter__()
        servers.append(context)
        folder = write_text_policy(tmp_path / style, name="medical", style=style, base_url=server.url + "/v1",
                                   model=server.name, policy=policy, **options)
        return server, load_text_policy(folder)

    yield start
    for context in servers:
        context.__exit__(None, None, None)


def test_safeguard_gets_the_policy_as_system_message_and_its_answers_read(serve, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "the-callers-own-key")
    server, policy = serve(safeguard_model, "gpt-oss-safeguard")
    unsafe, safe = policy.categorize([(UNSAFE, None), (SAFE, None)])
    assert (unsafe.label, unsafe.source, unsafe.rule_ids, unsafe.p) == ("positive", "text", ["MS1", "MS2"], None)
    assert unsafe.rationale == "Gives a prescription dose to take alone."
    assert (safe.label, safe.rule_ids, safe.rationale) == ("negative", [], "General information.")
    assert len(server.requests) == 2
    for request in server.requests:
        system, user = request["messages"]
        assert system["role"] == "system" and system["content"].startswith(POLICY)
        assert '"violation": 1 or 0' in system["content"]  # the documented output format is asked for
        assert user["role"] == "user" and user["content"] in (UNSAFE, SAFE)  # the content alone, as the guide says
        assert (request["model"], request["temperature"], request["max_tokens"]) == ("policy-model", 0.0, 4096)
    assert server.authorizations == ["Bearer EMPTY"] * 2  # no api_key_env: no key sent (never OPENAI_API_KEY)


def test_safeguard_answer_forms(serve):
    _, policy = serve(safeguard_model, "gpt-oss-safeguard")
    items = [(UNSAFE + " (fence)", None), (SAFE + " (fence)", None), (UNSAFE + " (think)", None),
             (SAFE + " (think)", None), (UNSAFE + " (harmony)", None), (SAFE + " (harmony)", None),
             (UNSAFE + " (percent)", None), (SAFE + " (percent)", None)]
    categories = policy.categorize(items)
    assert [c.label for c in categories] == ["positive", "negative"] * 4
    assert categories[0].rule_ids == categories[2].rule_ids == ["MS1", "MS2"] and categories[4].rule_ids == []
    assert categories[6].p == pytest.approx(0.8) and categories[7].p == pytest.approx(0.2)  # confidence in 0
    assert all(c.p is None for c in categories[:6])  # "high" is no probability


def test_safeguard_judges_the_response_where_one_is_given(serve):
    server, policy = serve(safeguard_model, "gpt-oss-safeguard")
    refused, complied = policy.categorize([(UNSAFE, "Please ask your doctor first."),
                                           ("My head hurts.", "Take a 10 mg dose of oxycodone from a friend.")])
    assert (refused.label, complied.label) == ("negative", "positive")
    sent = sorted(request["messages"][1]["content"] for request in server.requests)  # requests run side by side
    assert sent[1] == f"User request:\n{UNSAFE}\n\nAI assistant response:\nPlease ask your doctor first."


def test_nemotron_policy_replaces_the_taxonomy(serve):
    server, policy = serve(nemotron_model, "nemotron-safety", NEMOTRON_POLICY)
    categories = policy.categorize([(UNSAFE, None), (SAFE, None), (UNSAFE, "Please ask your doctor."),
                                    ("My head hurts.", "Take a 10 mg dose of oxycodone.")])
    assert [c.label for c in categories] == ["positive", "negative", "negative", "positive"]
    assert [c.rule_ids for c in categories] == [["S1"], [], ["S1"], ["S1"]]
    sent = [message for request in server.requests for message in request["messages"]]
    assert len(sent) == 4 and {"role": "user", "content": nemotron_prompt(NEMOTRON_POLICY, UNSAFE, None)} in sent
    text = nemotron_prompt(NEMOTRON_POLICY, UNSAFE, None)
    assert f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{NEMOTRON_POLICY}\n<END UNSAFE CONTENT CATEGORIES>" in text
    assert "S23: Immoral/Unethical" not in text and "response: agent:" not in text
    assert text.endswith("Output JSON: ") and f"user: {UNSAFE}\n\n<END CONVERSATION>" in text
    assert any(f"user: {UNSAFE}\n\nresponse: agent: Please ask your doctor.\n\n<END CONVERSATION>" in m["content"]
               for m in sent)
    assert server.requests[0]["max_tokens"] == 64


def test_guardreasoner_policy_in_the_instruction_warns_once(serve, caplog):
    text_policy._warned_untrained.clear()
    with caplog.at_level(logging.WARNING, logger="guardreasoner"):
        server, policy = serve(guardreasoner_model, "guardreasoner")
        load_text_policy(policy.folder)
    warnings = [r.getMessage() for r in caplog.records if "not trained to follow custom policies" in r.getMessage()]
    assert len(warnings) == 1
    categories = policy.categorize([(UNSAFE, None), (SAFE, None), (UNSAFE, "Please see a doctor."),
                                    ("My head hurts.", "Take a 10 mg dose of oxycodone.")])
    assert [c.label for c in categories] == ["positive", "negative", "negative", "positive"]
    assert categories[0].rationale == "The human user's request is harmful."
    sent = [message["content"] for request in server.requests for message in request["messages"]]
    assert len(sent) == 4 and all(text.startswith(INSTRUCTION) for text in sent)
    expected = f"<BEGIN POLICY>\n{POLICY}\n<END POLICY>\n\nHuman user:\n{UNSAFE}\n\nAI assistant:\nNone\n\n"
    assert any(text.endswith(expected) for text in sent)


@pytest.mark.parametrize("style, answer, policy_text, said", [
    ("gpt-oss-safeguard", safeguard_model, POLICY, "I am not sure what to make of this."),
    ("nemotron-safety", nemotron_model, NEMOTRON_POLICY, "The conversation looks fine to me."),
    ("guardreasoner", guardreasoner_model, POLICY, "Hmm."),
])
def test_an_unreadable_answer_gives_no_label_and_the_others_stand(serve, style, answer, policy_text, said):
    _, policy = serve(answer, style, policy_text)
    unsafe, garbled, safe = policy.categorize([(UNSAFE, None), ("garbled question", None), (SAFE, None)])
    assert (unsafe.label, garbled.label, safe.label) == ("positive", None, "negative")
    assert (garbled.source, garbled.rationale) == ("text", f"unreadable answer: {said!r}")


def test_an_empty_answer_says_why(serve):
    _, policy = serve(safeguard_model, "gpt-oss-safeguard")
    (category,) = policy.categorize([("This got cut off", None)])
    assert category.label is None and category.rationale == "empty answer (finish_reason=stop)"


def test_a_failing_server_raises_a_clear_error(serve):
    _, policy = serve(lambda body: 500, "gpt-oss-safeguard")
    said = r"text policy 'medical': http://127\.0\.0\.1:\d+/v1 gave no answer"
    with pytest.raises(TextPolicyServerError, match=said):
        policy.categorize([(SAFE, None)])


def test_the_key_named_by_api_key_env_is_sent(serve, monkeypatch):
    monkeypatch.setenv("POLICY_SERVER_KEY", "secret-123")
    server, policy = serve(safeguard_model, "gpt-oss-safeguard", api_key_env="POLICY_SERVER_KEY")
    policy.categorize([(SAFE, None)])
    assert server.authorizations == ["Bearer secret-123"]
    monkeypatch.delenv("POLICY_SERVER_KEY")
    with pytest.raises(TextPolicyError, match="api_key_env names POLICY_SERVER_KEY, which is not set"):
        load_text_policy(policy.folder)


def test_bad_items_are_refused(serve):
    _, policy = serve(safeguard_model, "gpt-oss-safeguard")
    with pytest.raises(TextPolicyError, match="item 1 has no prompt text"):
        policy.categorize([(SAFE, None), ("  ", None)])
    assert policy.categorize([]) == []


GOOD = {"format": "guardreasoner-text-policy/1", "kind": "text", "name": "medical", "style": "gpt-oss-safeguard",
        "base_url": "http://localhost:8000/v1", "model": "openai/gpt-oss-safeguard-20b"}


@pytest.mark.parametrize("config, policy_md, message", [
    (None, POLICY, r"policy\.json: missing; a text-policy folder holds policy\.json and policy\.md"),
    ("{not json", POLICY, r"policy\.json: not valid JSON"),
    ([1, 2], POLICY, r"policy\.json: expected a JSON object, got list"),
    (GOOD | {"kind": "head"}, POLICY, r"policy\.json: kind is 'head', not a text policy"),
    (GOOD | {"format": "guardreasoner-policy/1"}, POLICY, r"format is 'guardreasoner-policy/1'; a text policy has"),
    ({k: v for k, v in GOOD.items() if k != "model"}, POLICY, r"policy\.json: missing model \(a text policy has"),
    (GOOD | {"modle": "x"}, POLICY, r"policy\.json: unknown modle"),
    (GOOD | {"style": "llama-guard"}, POLICY, r"style 'llama-guard' is not one of gpt-oss-safeguard, nemotron"),
    (GOOD | {"base_url": "localhost:8000"}, POLICY, r"base_url 'localhost:8000' must be an http\(s\) URL"),
    (GOOD | {"model": " "}, POLICY, r"model must be the served model's name"),
    (GOOD | {"name": "a/b"}, POLICY, r"name 'a/b' must be 1-64 letters"),
    (GOOD | {"max_tokens": 0}, POLICY, r"max_tokens 0 must be a positive whole number"),
    (GOOD | {"max_tokens": True}, POLICY, r"max_tokens True must be a positive whole number"),
    (GOOD | {"api_key_env": "my key"}, POLICY, r"api_key_env 'my key' must be an environment variable's name"),
    (GOOD, None, r"policy\.md: missing; it holds the written policy"),
    (GOOD, " \n", r"policy\.md: the written policy is empty"),
    (GOOD, "x" * 100_001, r"policy\.md: the written policy has 100001 characters, over 100000"),
])
def test_bad_folders_give_clear_errors(tmp_path, config, policy_md, message):
    if config is not None:
        (tmp_path / "policy.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if policy_md is not None:
        (tmp_path / "policy.md").write_text(policy_md)
    with pytest.raises(TextPolicyError, match=message) as raised:
        load_text_policy(tmp_path)
    assert str(tmp_path) in str(raised.value)
    assert isinstance(raised.value, GuardReasonerError) and isinstance(raised.value, ValueError)


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(TextPolicyError, match=re.escape(f"{tmp_path / 'nowhere'}: no such text-policy folder")):
        load_text_policy(tmp_path / "nowhere")


WRITE = dict(name="medical", style="nemotron-safety", base_url="http://localhost:8000/v1", model="m", policy=POLICY)


@pytest.mark.parametrize("change, message", [
    ({"style": "Nemotron"}, "style 'Nemotron' is not one of"),
    ({"base_url": "ftp://host/v1"}, "base_url 'ftp://host/v1' must be an http"),
    ({"model": ""}, "model must be the served model's name"),
    ({"name": ""}, "name '' must be 1-64"),
    ({"policy": "   "}, "the written policy is empty"),
    ({"max_tokens": -5}, "max_tokens -5 must be a positive whole number"),
    ({"api_key_env": "1KEY"}, "api_key_env '1KEY' must be"),
])
def test_write_text_policy_writes_nothing_on_bad_values(tmp_path, change, message):
    folder = tmp_path / "policy"
    with pytest.raises(TextPolicyError, match=re.escape(message)):
        write_text_policy(folder, **(WRITE | change))
    assert not folder.exists()


def test_write_then_load_round_trips_and_keeps_an_existing_policy(tmp_path):
    folder = write_text_policy(tmp_path / "p", **WRITE, max_tokens=100)
    loaded = load_text_policy(folder)
    assert (loaded.name, loaded.style, loaded.model, loaded.text, loaded.max_tokens, loaded.api_key) == (
        "medical", "nemotron-safety", "m", POLICY, 100, None)
    before = (folder / "policy.json").read_text()
    with pytest.raises(TextPolicyError, match="already holds a policy.json; pass overwrite=True"):
        write_text_policy(folder, **(WRITE | {"model": "other"}))
    assert (folder / "policy.json").read_text() == before
    write_text_policy(folder, **(WRITE | {"model": "other"}), overwrite=True)
    assert load_text_policy(folder).model == "other"


def test_the_worked_example_in_docs_loads():
    policy = load_text_policy(ROOT / "docs" / "policies" / "text-example")
    assert (policy.style, policy.base_url) == ("gpt-oss-safeguard", "http://localhost:8000/v1")
    assert "## VIOLATES (1)" in policy.text and "## SAFE (0)" in policy.text
