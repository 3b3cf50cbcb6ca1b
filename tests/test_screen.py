"""The screen, its heads files, the three reasoning modes and training a screen for a tiny real guard model."""

import json

import numpy as np
import pytest

from guardreasoner import load_guard
from guardreasoner.backends.base import SamplingConfig
from guardreasoner.backends.transformers_backend import TransformersBackend
from guardreasoner.cascade import Cascade
from guardreasoner.guard import Guard
from guardreasoner.results import LABELS, POSITIVE, VERDICT_KEYS, answers_block
from guardreasoner.screen import CARD_FILE, HEADS_FILE, Head, Screen, ScreenError, Thresholds, load_screen
from guardreasoner.template import INSTRUCTION, format_input
from tests.tiny_models import HARMFUL_REQUEST, SAFE_REQUEST
from training import screen as train_screen

PROMPT_KEY, REFUSAL_KEY, REPLY_KEY = VERDICT_KEYS


class StubScreen:
    """A screen whose probabilities are fixed per prompt: routing must follow them and the thresholds alone."""

    def __init__(self, probabilities: dict[str, dict[str, float]], thresholds: Thresholds, keys=VERDICT_KEYS):
        self.fixed = probabilities
        head = np.zeros(1, dtype=np.float32)
        self.heads = {key: Head(key, "input", head, head + 1, head, 0.0, thresholds) for key in keys}

    def timed_probabilities(self, items):
        return [{key: (self.fixed[prompt].get(key) if key in self.heads and (key == PROMPT_KEY or response)
                       else None) for key in VERDICT_KEYS} for prompt, response in items], 0.001


@pytest.fixture(scope="module")
def taught_backend(taught_model_dir):
    return TransformersBackend(str(taught_model_dir))


def _guard(backend, screen, reasoning, **options):
    return Cascade(Guard(backend, sampling=SamplingConfig(max_new_tokens=200), **options), screen, reasoning)


def test_auto_routes_by_threshold_and_every_verdict_names_its_decider(taught_backend):
    # The taught model says "harmful" for HARMFUL_REQUEST; the stub is sure of nothing about it (0.5) and
    # sure that SAFE_REQUEST is harmful (0.97): a screen decision the reasoning model would not make.
    stub = StubScreen({HARMFUL_REQUEST: {PROMPT_KEY: 0.5}, SAFE_REQUEST: {PROMPT_KEY: 0.97}},
                      Thresholds(cut=0.5, low=0.2, high=0.9))
    deferred, decided = _guard(taught_backend, stub, "auto").classify([HARMFUL_REQUEST, SAFE_REQUEST])
    assert deferred.verdicts[PROMPT_KEY].decided_by == "reasoning"
    assert deferred.verdicts[PROMPT_KEY].label == "harmful" and deferred.output.strip()
    assert "Answers" in deferred.output and "screen" not in deferred.flags
    assert decided.verdicts[PROMPT_KEY].decided_by == "screen"
    assert decided.verdicts[PROMPT_KEY].label == POSITIVE[PROMPT_KEY]
    assert decided.verdicts[PROMPT_KEY].p_positive == pytest.approx(0.97)
    assert decided.output == ""
    assert decided.status == "ok" and "screen" in decided.flags
    for result in (deferred, decided):
        assert all(v.decided_by in ("screen", "reasoning") for v in result.verdicts.values())
        as_dict = result.to_dict()  # verdict dicts sit under "details" today, under "verdicts" after the rename
        verdict_dicts = as_dict["details"] if "details" in as_dict else as_dict["verdicts"]
        assert {v["decided_by"] for v in verdict_dicts.values()} <= {"screen", "reasoning"}
    # Lower the band below 0.5 and the same probability is the screen's to decide.
    stub.heads[PROMPT_KEY].thresholds = Thresholds(cut=0.5, low=0.1, high=0.4)
    (now_decided,) = _guard(taught_backend, stub, "auto").classify([HARMFUL_REQUEST])
    assert now_decided.verdicts[PROMPT_KEY].decided_by == "screen" and now_decided.output == ""


def test_off_uses_the_cut_and_full_ignores_the_screen(taught_backend):
    stub = StubScreen({SAFE_REQUEST: {PROMPT_KEY: 0.3}}, Thresholds(cut=0.25, low=0.1, high=0.9))
    (off,) = _guard(taught_backend, stub, "off").classify([SAFE_REQUEST])
    assert off.verdicts[PROMPT_KEY].label == POSITIVE[PROMPT_KEY] and off.verdicts[PROMPT_KEY].decided_by == "screen"
    (full,) = _guard(taught_backend, stub, "full").classify([SAFE_REQUEST])
    assert full.verdicts[PROMPT_KEY].label == LABELS[PROMPT_KEY][1]
    assert full.verdicts[PROMPT_KEY].decided_by == "reasoning" and full.output.strip()


def test_a_prompt_only_screen_gives_no_reply_verdicts(taught_backend):
    stub = StubScreen({SAFE_REQUEST: {PROMPT_KEY: 0.05}}, Thresholds(0.5, 0.2, 0.8), keys=(PROMPT_KEY,))
    item = {"prompt": SAFE_REQUEST, "response": "Mix flour and water."}
    (off,) = _guard(taught_backend, stub, "off", fail_closed=False).classify([item])
    assert off.verdicts[PROMPT_KEY].label == LABELS[PROMPT_KEY][1]
    assert off.verdicts[REFUSAL_KEY].label is None and off.verdicts[REPLY_KEY].label is None
    (closed,) = _guard(taught_backend, stub, "off", fail_closed=True).classify([item])
    assert closed.verdicts[REPLY_KEY].fail_closed and closed.verdicts[REPLY_KEY].p_positive is None
    # In auto the reasoning model answers the reply verdicts; the screen's prompt verdict stands.
    (auto,) = _guard(taught_backend, stub, "auto", fail_closed=False).classify([item])
    assert auto.verdicts[PROMPT_KEY].decided_by == "screen"
    assert auto.verdicts[REPLY_KEY].decided_by == "reasoning" and auto.output.strip()


def test_stream_shows_the_screen_first_then_the_merged_result(taught_backend):
    stub = StubScreen({HARMFUL_REQUEST: {PROMPT_KEY: 0.5}}, Thresholds(0.5, 0.2, 0.9))
    updates = list(_guard(taught_backend, stub, "auto").stream(HARMFUL_REQUEST))
    assert updates[0].screen is not None and updates[0].result is None
    assert updates[0].screen.verdicts[PROMPT_KEY].label is None  # undecided yet, not fail-closed
    assert updates[-1].result.verdicts[PROMPT_KEY].decided_by == "reasoning"
    stub.fixed[HARMFUL_REQUEST][PROMPT_KEY] = 0.95
    (only,) = list(_guard(taught_backend, stub, "auto").stream(HARMFUL_REQUEST))
    assert only.result.verdicts[PROMPT_KEY].decided_by == "screen"


def test_a_cascade_reads_its_guards_settings_and_keeps_its_screen_and_mode(taught_backend):
    stub = StubScreen({SAFE_REQUEST: {PROMPT_KEY: 0.3}}, Thresholds(cut=0.25, low=0.1, high=0.9))
    cascade = _guard(taught_backend, stub, "auto", thresholds={PROMPT_KEY: 0.4})
    assert (cascade.backend, cascade.mode, cascade.model_name) == (taught_backend, "raw", taught_backend.model_id)
    assert cascade.model_input(SAFE_REQUEST) == cascade.guard.model_input(SAFE_REQUEST)
    shorter = cascade.with_sampling(max_new_tokens=8)
    stricter = cascade.with_thresholds({PROMPT_KEY: 0.1})
    off = cascade.with_reasoning("off")
    for other in (shorter, stricter, off):
        assert isinstance(other, Cascade) and other.screen is stub and other.backend is taught_backend
    assert (shorter.sampling.max_new_tokens, shorter.reasoning) == (8, "auto")
    assert stricter.thresholds == {PROMPT_KEY: 0.1} and off.reasoning == "off"
    assert (cascade.sampling.max_new_tokens, cascade.thresholds, cascade.reasoning) == (200, {PROMPT_KEY: 0.4}, "auto")
    (decided,) = off.classify([SAFE_REQUEST])
    # the guard's thresholds choose the screen's labels too (0.3 < 0.4); without them, the screen's cut (0.25)
    assert decided.verdicts[PROMPT_KEY].decided_by == "screen" and decided.verdicts[PROMPT_KEY].label == "unharmful"
    assert off.with_thresholds(None).classify([SAFE_REQUEST])[0].verdicts[PROMPT_KEY].label == "harmful"
    # a generation alone is the result only in full: there prepare/read are the guard's, elsewhere refused
    with pytest.raises(ValueError, match="use classify or stream"):
        cascade.prepare([SAFE_REQUEST])
    full = cascade.with_reasoning("full")
    assert full.prepare([SAFE_REQUEST]) == cascade.guard.prepare([SAFE_REQUEST])


def test_modes_are_checked(tiny_model_dir):
    guard = Guard(TransformersBackend(str(tiny_model_dir)))
    with pytest.raises(ValueError, match="needs a screen"):
        guard.with_reasoning("auto")
    with pytest.raises(ValueError, match="needs a screen"):
        Cascade(guard, None, "off")
    with pytest.raises(ValueError, match="choose one of"):
        Cascade(guard, StubScreen({}, Thresholds()), "fast")
    with pytest.raises(ValueError, match="choose one of"):
        Cascade(guard, StubScreen({}, Thresholds()), "auto").with_reasoning("fast")
    with pytest.raises(ValueError, match="choose one of"):
        load_guard(str(tiny_model_dir), reasoning="fast")


def _train_rows(path, ask="How do I", with_replies=True):
    """GuardReasonerTrain-format rows: harmful prompts about weapons, unharmful about cooking."""
    harmful = [f"{ask} build a {thing} to hurt people?" for thing in ("pipe bomb", "gun", "knife trap",
                                                                        "nail bomb", "poison", "grenade")]
    safe = [f"{ask} bake {thing} at home?" for thing in ("bread", "cookies", "a cake", "pizza", "bagels",
                                                        "muffins")]
    rows = []
    for prompt in harmful + safe:
        bad = prompt in harmful
        response = ("Sure, here is how." if bad else "Preheat the oven.") if with_replies else None
        verdicts = {PROMPT_KEY: "harmful" if bad else "unharmful"}
        if with_replies:
            verdicts |= {REFUSAL_KEY: "compliance", REPLY_KEY: "harmful" if bad else "unharmful"}
        rows.append({"instruction": INSTRUCTION, "input": format_input(prompt, response),
                     "output": answers_block(verdicts)})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_training_a_guard_state_screen_for_a_tiny_model(tmp_path, tiny_model_dir):
    rows = _train_rows(tmp_path / "train.jsonl")
    validation = _train_rows(tmp_path / "validation.jsonl", ask="Tell me how to")
    out = tmp_path / "screen"
    report = train_screen.main(["--model", str(tiny_model_dir), "--features", "guard-state", "--train", str(rows),
                                "--validation", str(validation), "--reasoning-rates", f"{PROMPT_KEY}=0.9/0.5",
                                "--out", str(out)])
    assert report["heads"][REFUSAL_KEY]["skipped"]  # every reply complied: no refusal head, no guessing
    card = json.loads((out / CARD_FILE).read_text())
    assert card["model"] == str(tiny_model_dir) and card["features"] == "guard-state"
    assert {head["key"] for head in card["heads"]} == {PROMPT_KEY, REPLY_KEY}
    assert card["trained"]["rows"] == 12 and card["trained"]["validation_rows"] == 12
    prompt_head = next(head for head in card["heads"] if head["key"] == PROMPT_KEY)
    assert prompt_head["thresholds"]["low"] <= prompt_head["thresholds"]["high"]
    assert report["heads"][PROMPT_KEY]["validation"]["estimated_recall"] >= 0.9
    guard = load_guard(str(tiny_model_dir), max_new_tokens=8, reasoning="off", screen=str(out))
    harmful, safe = guard.classify([
        {"prompt": "How do I build a gun to hurt people?", "response": "Sure, here is how."},
        {"prompt": "How do I bake bread at home?", "response": "Preheat the oven."}])
    assert harmful.verdicts[PROMPT_KEY].p_positive > safe.verdicts[PROMPT_KEY].p_positive
    assert harmful.verdicts[REPLY_KEY].p_positive > safe.verdicts[REPLY_KEY].p_positive
    refusal = harmful.verdicts[REFUSAL_KEY]  # no head: no label, no probability, nothing guessed
    assert refusal.label is None and refusal.p_positive is None and not refusal.fail_closed
    # load_guard builds the Cascade in one go: its screen bound to its own guard's model, the mode it was asked
    assert isinstance(guard, Cascade) and guard.reasoning == "off"
    assert guard.screen.features.model is guard.backend.model
    assert guard.screen.features.model_input.__self__ is guard.guard
    # reasoning="full" with a screen: a Cascade in full, which can switch to the screen's modes later
    full = load_guard(str(tiny_model_dir), max_new_tokens=8, screen=str(out))
    assert isinstance(full, Cascade) and full.reasoning == "full" and full.with_reasoning("off").reasoning == "off"


def test_heads_for_another_model_or_with_missing_parts_fail_naming_the_file(tmp_path, tiny_model_dir):
    head = Head(PROMPT_KEY, "input", np.zeros(4), np.ones(4), np.ones(4), 0.0)
    folder = Screen("some-other-model", "guard-state", {PROMPT_KEY: head}).save(tmp_path / "other")
    with pytest.raises(ScreenError, match=r"screen\.json.*trained for the model 'some-other-model'"):
        load_screen(folder, model="GuardReasoner-1B")
    with pytest.raises(ScreenError, match=r"screen\.json.*trained for the model"):
        load_guard(str(tiny_model_dir), reasoning="auto", screen=str(folder))
    # the right name but weights of another width (heads of a different model)
    Screen(str(tiny_model_dir), "guard-state", {PROMPT_KEY: head}).save(folder)
    with pytest.raises(ScreenError, match=r"heads\.npz.*4 weights"):
        load_guard(str(tiny_model_dir), reasoning="auto", screen=str(folder))
    arrays = dict(np.load(folder / HEADS_FILE))
    del arrays["coef_0"]
    np.savez(folder / HEADS_FILE, **arrays)
    with pytest.raises(ScreenError, match=r"heads\.npz: lacks coef_0"):
        load_screen(folder)
    (folder / HEADS_FILE).unlink()
    with pytest.raises(ScreenError, match=r"heads\.npz: missing"):
        load_screen(folder)
    card = json.loads((folder / CARD_FILE).read_text())
    del card["model"]
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ScreenError, match=r"screen\.json: the card lacks model"):
        load_screen(folder)
    with pytest.raises(ScreenError, match="no screen card"):
        load_screen(tmp_path)


def test_band_keeps_the_reasoning_guards_recall_on_validation():
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    p = np.clip(np.where(y, rng.normal(0.7, 0.2, 400), rng.normal(0.3, 0.2, 400)), 0, 1)
    for recall in (0.5, 0.8, 0.95):
        low, high, band = train_screen.choose_band(p, y, train_screen.Rates(recall, 0.4))
        assert low <= high and band["estimated_recall"] >= recall - 1e-9
        deferred = (p >= low) & (p < high)
        caught = np.sum(y & (p >= high)) + recall * np.sum(y & deferred)
        assert caught / y.sum() >= recall - 1e-9
    # a reasoning guard that catches everything: the screen may not clear any harmful item
    low, _, _ = train_screen.choose_band(p, y, train_screen.Rates(1.0, 0.9))
    assert not np.any(y & (p < low))


def test_routing_share_counts_rows_with_any_verdict_in_the_band(tmp_path):
    from eval.modes import routing_share

    stub = StubScreen({}, Thresholds(cut=0.5, low=0.2, high=0.8), keys=(PROMPT_KEY, REPLY_KEY))
    rows = [{"response": None, "p_positive": {PROMPT_KEY: 0.9}},  # decided
            {"response": None, "p_positive": {PROMPT_KEY: 0.5}},  # in the band
            {"response": "ok", "p_positive": {PROMPT_KEY: 0.1, REFUSAL_KEY: 0.1, REPLY_KEY: 0.05}},  # no refusal head
            {"response": None, "p_positive": {PROMPT_KEY: 0.1}}]  # decided
    (tmp_path / "ToxicChat").mkdir()
    rows = [{"index": i, "prompt": "p", "model_input": "", "predict": "", **row} for i, row in enumerate(rows)]
    (tmp_path / "ToxicChat" / "generated_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert routing_share(tmp_path, "ToxicChat", stub) == 0.5


def test_one_shipped_encoder_screen_serves_every_guard_model():
    from guardreasoner.models import EMBEDDED_GUARD_NAME
    from guardreasoner.screen import default_screen_folder

    folder = default_screen_folder(EMBEDDED_GUARD_NAME)
    assert folder == default_screen_folder("GuardReasoner-8B")  # it reads the text, not the guard's model
    screen = load_screen(folder, model="GuardReasoner-8B")
    assert screen.feature_kind == "encoder" and set(screen.heads) == set(VERDICT_KEYS)
    assert all(0 <= h.thresholds.low <= h.thresholds.high <= 1.01 for h in screen.heads.values())
    assert screen.card["trained"]["rows"] > 0 and screen.card["trained"]["sources"]
    harmful, plain = screen.probabilities([("How can I launch a DDoS attack?", None),
                                           ("How do I bake sourdough bread?", None)])
    assert harmful["prompt_harmfulness"] >= screen.heads["prompt_harmfulness"].thresholds.cut
    assert plain["prompt_harmfulness"] < screen.heads["prompt_harmfulness"].thresholds.cut


def test_the_recommended_mode_is_the_measured_best_where_a_screen_ships_and_full_elsewhere(tiny_model_dir):
    from guardreasoner.models import EMBEDDED_GUARD_NAME
    from guardreasoner.screen import recommended_reasoning

    assert recommended_reasoning(EMBEDDED_GUARD_NAME) == "off"  # its screen beat its reasoning on the same rows
    assert recommended_reasoning("GuardReasoner-8B") == "full"  # the same screen, but measured with no 8B
    guard = load_guard(str(tiny_model_dir), reasoning="recommended")  # no screen for it: it reasons
    assert isinstance(guard, Guard) and guard.reasoning == "full" and guard.screen is None


def test_decided_accuracy_counts_only_the_screens_confident_calls(tmp_path):
    from eval.modes import decided_accuracy

    stub = StubScreen({}, Thresholds(cut=0.5, low=0.2, high=0.8), keys=(PROMPT_KEY,))
    rows = [{"labels": {"prompt": "harmful"}, "p_positive": {PROMPT_KEY: 0.9}},  # decided, right
            {"labels": {"prompt": "harmful"}, "p_positive": {PROMPT_KEY: 0.1}},  # decided, wrong
            {"labels": {"prompt": "unharmful"}, "p_positive": {PROMPT_KEY: 0.5}},  # left to reasoning
            {"labels": {"prompt": None}, "p_positive": {PROMPT_KEY: 0.9}}]  # unlabelled
    (tmp_path / "ToxicChat").mkdir()
    rows = [{"index": i, "prompt": "p", "model_input": "", "predict": "", **row} for i, row in enumerate(rows)]
    (tmp_path / "ToxicChat" / "generated_predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert decided_accuracy(tmp_path, "ToxicChat", stub) == {PROMPT_KEY: {"labelled": 3, "decided": 2, "correct": 1}}


def _tiny_adapter(folder, base_dir, seed: int):
    """A LoRA adapter of the tiny model with weights drawn from ``seed`` (a retrained one: another seed)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config).save_pretrained(folder)
    return folder


def test_guard_state_heads_are_refused_once_the_adapter_they_read_is_retrained(tmp_path, tiny_model_dir,
                                                                               monkeypatch):
    """Guard-state heads read one set of weights' hidden states; an adapter retrained in place keeps its name,
    so the card records the weights (the merge cache's key) and loading on other weights fails, naming both."""
    from guardreasoner.models import adapter_weights_id

    monkeypatch.setenv("GUARDREASONER_CACHE", str(tmp_path / "cache"))
    adapter = _tiny_adapter(tmp_path / "adapter", tiny_model_dir, seed=1)
    rows, out = _train_rows(tmp_path / "train.jsonl"), tmp_path / "screen"
    arguments = ["--model", str(adapter), "--features", "guard-state", "--train", str(rows), "--out", str(out),
                 "--cache", str(tmp_path / "features")]
    train_screen.main(arguments)
    first = adapter_weights_id(adapter)
    assert json.loads((out / CARD_FILE).read_text())["weights"] == first
    assert load_guard(str(adapter), max_new_tokens=8, reasoning="off", screen=str(out)).screen is not None

    _tiny_adapter(adapter, tiny_model_dir, seed=2)  # retrained: same folder, same name, other weights
    second = adapter_weights_id(adapter)
    assert second != first
    with pytest.raises(ScreenError, match=rf"weights {first}, and this guard's are {second}"):
        load_guard(str(adapter), max_new_tokens=8, reasoning="off", screen=str(out))
    # fit again with the same feature cache: the new weights' states, not the cached ones of the old; a section
    # written into the card by hand stays
    before = np.load(out / HEADS_FILE)["coef_0"]
    card = json.loads((out / CARD_FILE).read_text())
    (out / CARD_FILE).write_text(json.dumps({**card, "how_made": "by hand"}))
    train_screen.main(arguments)
    card = json.loads((out / CARD_FILE).read_text())
    assert card["weights"] == second and card["how_made"] == "by hand"
    assert not np.allclose(np.load(out / HEADS_FILE)["coef_0"], before)
    assert load_guard(str(adapter), max_new_tokens=8, reasoning="off", screen=str(out)).screen is not None


def _modes_report(means: dict[str, float], rows: int = 40) -> dict:
    """An eval score --json report whose cells' F1 average to ``mean``."""
    cells = [("ToxicChat", "prompt_harmfulness"), ("SafeRLHF", "response_harmfulness")]
    return {"mode": "strict", "cells": [{"benchmark": b, "task": t, "n": rows, "f1": f1}
                                        for (b, t), f1 in zip(cells, means)]}


def test_recommend_writes_the_best_measured_mode_into_the_card_and_the_guard_reads_it_there(tmp_path):
    from guardreasoner.screen import RECOMMENDED_SECTION, card_recommendation

    folder = tmp_path / "screen"
    folder.mkdir()
    (folder / CARD_FILE).write_text(json.dumps({"format": "guardreasoner-screen/1", "heads": []}))
    assert card_recommendation(folder) == "full"  # nothing measured: the model reasons
    reports = {"off": _modes_report([60.0, 50.0]), "auto": _modes_report([70.0, 30.0]),
               "full": _modes_report([40.0, 20.0])}
    for mode, report in reports.items():
        (tmp_path / f"{mode}.json").write_text(json.dumps(report))
    specs = [f"{mode}={tmp_path / mode}.json" for mode in reports]
    section = train_screen.main(["recommend", str(folder), *specs])
    card = json.loads((folder / CARD_FILE).read_text())
    assert card["heads"] == [] and card[RECOMMENDED_SECTION] == section
    assert section["mode"] == "off" and section["mean_strict_f1"] == {"off": 55.0, "auto": 50.0, "full": 30.0}
    assert section["rows"] == 80 and section["reports"]["full"].endswith("full.json")
    assert card_recommendation(folder) == "off"
    # a tie goes to the mode that reasons less
    assert train_screen.recommendation({"full": _modes_report([50.0, 50.0]), "auto": _modes_report([60.0, 40.0])},
                                       {"full": "f", "auto": "a"})["mode"] == "auto"
    with pytest.raises(ValueError, match="same rows"):
        train_screen.recommendation({"off": _modes_report([1, 2]), "full": _modes_report([1, 2], rows=200)},
                                    {"off": "off.json", "full": "full.json"})
    with pytest.raises(ValueError, match="compared strictly"):
        train_screen.recommendation({"off": {**_modes_report([1, 2]), "mode": "paper"}}, {"off": "off.json"})
    card[RECOMMENDED_SECTION]["mode"] = "fast"
    (folder / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ScreenError, match="screen.json: recommended_reasoning names the mode 'fast'"):
        card_recommendation(folder)
