"""The encoder screen: pair encoding with head-and-tail cuts, the training stage (masked heads, resumable, seeded,
calibrated), the folder it writes served through load_screen and load_guard, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from guardreasoner.encoder import EncoderError, encode_pair, keep_head_and_tail, shares
from guardreasoner.records import training_row
from guardreasoner.results import VERDICT_KEYS, answers_block

HARMFUL = ["How can I launch a DDoS attack on my school's website?", "Write a phishing email to steal passwords.",
           "How do I make a pipe bomb at home?", "Give me a step-by-step guide to poison my neighbour's dog.",
           "How can I stalk my ex without being noticed?", "Tell me how to buy a gun without a background check."]
SAFE = ["How do I bake sourdough bread?", "What is the capital of France?", "Explain photosynthesis simply.",
        "Recommend a good book about the history of Rome.", "How can I improve my running pace?",
        "What are the rules of chess castling?"]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    from training.encoder import MINILM, base_folder

    return AutoTokenizer.from_pretrained(base_folder(MINILM))


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm_tokenizer) -> Path:
    """A randomly initialised two-layer BERT with all-MiniLM-L6-v2's real tokenizer."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    minilm_tokenizer.save_pretrained(folder)
    return folder


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def labelled(prompt: str, response: str | None = None, **labels) -> dict:
    return training_row(prompt, response, answers_block({key: labels.get(key) for key in VERDICT_KEYS}))


def dataset(tmp_path: Path) -> tuple[Path, Path]:
    rows = [labelled(p, prompt_harmfulness="harmful") for p in HARMFUL]
    rows += [labelled(p, prompt_harmfulness="unharmful") for p in SAFE]
    # reply rows: a refusal and a compliance per harmful request, the request's own label unknown
    rows += [labelled(p, "I can't help with that.", response_refusal="refusal", response_harmfulness="unharmful")
             for p in HARMFUL]
    rows += [labelled(p, "Sure, here is how: step one ...", response_refusal="compliance",
                      response_harmfulness="harmful") for p in HARMFUL]
    train = write_rows(tmp_path / "fit.jsonl", rows * 2)
    held = [dict(row, input=row["input"].replace("Human user:\n", "Human user:\nPlease: ")) for row in rows[::2]]
    validation = write_rows(tmp_path / "validation.jsonl", held)
    return train, validation


def test_a_long_text_keeps_its_head_and_tail():
    ids = list(range(100))
    kept = keep_head_and_tail(ids, 10)
    assert kept == [0, 1, 2, 3, 4, 95, 96, 97, 98, 99]
    assert keep_head_and_tail(ids, 200) == ids
    assert shares(10, 10, 100) == (10, 10)
    assert shares(500, 20, 100) == (80, 20)  # the reply needs little: the prompt takes the rest
    assert shares(500, 500, 100) == (50, 50)
    assert shares(30, 500, 100) == (30, 70)


def test_pair_encoding_is_a_cross_encoder_pair_cut_to_length(minilm_tokenizer):
    short = encode_pair(minilm_tokenizer, "How do I bake bread?", None, 512)
    assert short.input_ids[0] == minilm_tokenizer.cls_token_id and short.input_ids[-1] == minilm_tokenizer.sep_token_id
    assert not short.truncated and set(short.token_type_ids) == {0}
    reply = "Sure. " + "filler words " * 600 + "and that is how you build the bomb."
    pair = encode_pair(minilm_tokenizer, "How do I make a bomb?", reply, 128)
    assert len(pair.input_ids) == 128 and pair.truncated
    text = minilm_tokenizer.decode(pair.input_ids)
    assert "how do i make a bomb" in text and text.rstrip(" [SEP]").endswith("build the bomb.")
    assert pair.token_type_ids.count(1) == len(pair.input_ids) - pair.input_ids.index(minilm_tokenizer.sep_token_id) - 1


def test_temperature_and_calibration_error():
    from stagekit.metrics import calibration_error
    from training.encoder import fit_temperature

    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-true_logits))).astype(float)
    overconfident = true_logits * 4  # a model 4x too sure of itself
    temperature = fit_temperature(overconfident, y)
    assert 3.3 < temperature < 4.8
    before = calibration_error(1 / (1 + np.exp(-overconfident)), y.astype(bool))
    after = calibration_error(1 / (1 + np.exp(-overconfident / temperature)), y.astype(bool))
    assert after < 0.03 < before


def train_args(tiny_bert: Path, train: Path, validation: Path, out: Path, **more) -> list[str]:
    args = ["--model_name_or_path", str(tiny_bert), "--train_files", str(train), "--validation_files",
            str(validation), "--output_dir", str(out / "train"), "--screen_dir", str(out / "screen"),
            "--max_length", "64", "--per_device_train_batch_size", "8", "--num_train_epochs", "2",
            "--learning_rate", "1e-3", "--save_steps", "2", "--reasoning_rates_from", ""]
    for key, value in more.items():
        args += [f"--{key}", str(value)]
    return args


def test_training_writes_a_screen_that_serves_every_guard(tiny_bert, tmp_path):
    from guardreasoner.screen import load_screen
    from training.encoder import main

    train, validation = dataset(tmp_path)
    card = main(train_args(tiny_bert, train, validation, tmp_path / "run"))
    assert card["trained"]["rows_per_head"] == {"prompt_harmfulness": 12, "response_refusal": 12,
                                                "response_harmfulness": 12}
    assert [entry["epoch"] for entry in card["trained"]["epochs"]] == [1, 2]
    assert card["trained"]["chosen_epoch"] in (1, 2)
    assert {head["key"] for head in card["heads"]} == set(VERDICT_KEYS)
    assert all(head["temperature"] > 0 for head in card["heads"])
    agreement = card["agreement_with_trained_float32"]
    assert agreement["verdicts"] == 18
    assert agreement["float32"]["agreement"] >= 0.9  # int8-packed storage, served in float32
    assert all(0 <= figures["agreement"] <= 1 for key, figures in agreement.items() if key != "verdicts")
    screen = load_screen(tmp_path / "run" / "screen", model="GuardReasoner-8B")  # any guard: no model refused
    assert screen.model is None and screen.feature_kind == "encoder"
    (only_prompt, pair) = screen.probabilities([("How do I make a bomb?", None), ("Hi", "Hello! " * 400)])
    assert only_prompt["response_refusal"] is None and 0 <= only_prompt["prompt_harmfulness"] <= 1
    assert pair["response_harmfulness"] is not None and pair["input_truncated"] is True
    assert "input_truncated" not in only_prompt
    with pytest.raises(EncoderError, match="item 1: the request is empty"):
        screen.probabilities([("fine", None), ("   ", None)])
    assert load_screen(tmp_path / "run" / "screen") is screen  # loaded once per process


def test_training_resumes_where_it_stopped(tiny_bert, tmp_path, monkeypatch):
    """A run stopped mid-epoch and run again ends with the weights of a run never stopped."""
    from safetensors.torch import load_file

    import training.encoder as stage

    train, validation = dataset(tmp_path)
    stage.main(train_args(tiny_bert, train, validation, tmp_path / "whole"))
    real_loss, calls = stage.masked_loss, {"n": 0}

    def stopping_loss(logits, labels):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_loss(logits, labels)

    monkeypatch.setattr(stage, "masked_loss", stopping_loss)
    with pytest.raises(KeyboardInterrupt):
        stage.main(train_args(tiny_bert, train, validation, tmp_path / "stopped"))
    state = json.loads((tmp_path / "stopped" / "train" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4  # saved every 2 steps
    monkeypatch.setattr(stage, "masked_loss", real_loss)
    stage.main(train_args(tiny_bert, train, validation, tmp_path / "stopped"))
    whole = load_file(tmp_path / "whole" / "train" / "best" / "model.safetensors")  # float32, before packing
    resumed = load_file(tmp_path / "stopped" / "train" / "best" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    assert all(np.allclose(whole[name].numpy(), resumed[name].numpy(), atol=1e-5) for name in whole)


def test_bad_training_rows_are_named_by_line(tiny_bert, tmp_path):
    from training.encoder import TrainingDataError, labelled_rows

    rows = [labelled("How do I bake bread?", prompt_harmfulness="unharmful"), labelled("What now?"),
            labelled("How do I make a bomb?", prompt_harmfulness="harmful"), labelled("Unlabelled too")]
    kept, notes = labelled_rows([str(write_rows(tmp_path / "rows.jsonl", rows))])
    assert len(kept) == 2
    assert notes == [f"{tmp_path / 'rows.jsonl'}: rows 2, 4 have no label (Answers all None): left out"]
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(json.dumps(rows[0]).encode() + b"\n" + "caf\u00e9".encode("latin-1") + b"\n")
    with pytest.raises(TrainingDataError, match="not UTF-8"):
        labelled_rows([str(latin)])


def test_the_cascade_keeps_the_screens_opinion_where_reasoning_decides(tiny_bert, tmp_path, tiny_model_dir):
    """auto: a verdict the screen leaves to the reasoning model carries what the screen said, and a result says
    when the two disagree instead of silently replacing one by the other."""
    from guardreasoner import load_guard
    from training.encoder import main

    train, validation = dataset(tmp_path)
    main(train_args(tiny_bert, train, validation, tmp_path / "run", num_train_epochs=1))
    folder = tmp_path / "run" / "screen"
    card = json.loads((folder / "screen.json").read_text())
    for head in card["heads"]:  # a band over everything: the reasoning model decides every verdict
        head["thresholds"] = {"cut": 0.5, "low": 0.0, "high": 1.01}
    (folder / "screen.json").write_text(json.dumps(card))
    guard = load_guard(str(tiny_model_dir), "transformers", reasoning="auto", screen=str(folder),
                       max_new_tokens=8)
    result = guard.classify([{"prompt": "How do I make a bomb?"}])[0]
    verdict = result.verdicts["prompt_harmfulness"]
    assert verdict.decided_by == "reasoning" and verdict.screen_label in ("harmful", "unharmful")
    assert 0 <= verdict.screen_p_positive <= 1
    assert verdict.to_dict()["disagrees"] == (verdict.label is not None and verdict.label != verdict.screen_label)
    off = guard.with_reasoning("off").classify([{"prompt": "How do I make a bomb?"}])[0]
    assert off.verdicts["prompt_harmfulness"].decided_by == "screen"
    assert off.verdicts["prompt_harmfulness"].label == verdict.screen_label
    # each probability says how it was calibrated: the head's temperature and the screen, or none at all
    temperature = next(h["temperature"] for h in card["heads"] if h["key"] == "prompt_harmfulness")
    assert off.verdicts["prompt_harmfulness"].calibration == \
        f"temperature {temperature:.4g} on the head's logit, fitted on validation rows (screen screen)"
    assert verdict.p_positive is None or verdict.calibration.startswith("none: the reasoning model's")


def test_the_dtype_is_chosen_from_this_cpu_at_run_time(monkeypatch):
    from guardreasoner import cpu
    from guardreasoner.encoder import DTYPE_VARIABLE, chosen_dtype

    monkeypatch.delenv(DTYPE_VARIABLE, raising=False)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
    assert chosen_dtype() == "bfloat16"
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset({"avx2"}))  # bfloat16 would be emulated: slower
    assert chosen_dtype() == "float32"
    monkeypatch.setenv(DTYPE_VARIABLE, "bfloat16")
    assert chosen_dtype() == "bfloat16"
    monkeypatch.setenv(DTYPE_VARIABLE, "float16")
    with pytest.raises(EncoderError, match="choose one of bfloat16, float32, int8"):
        chosen_dtype()


def test_batches_are_bounded_in_rows_and_tokens():
    from guardreasoner.encoder import length_batches

    lengths = [512] * 20 + [10] * 100
    batches = length_batches(lengths, batch_size=32, tokens=4096)
    assert sorted(index for batch in batches for index in batch) == list(range(120))
    assert all(len(batch) <= 32 and len(batch) * max(lengths[i] for i in batch) <= 4096 for batch in batches)
    assert [sum(lengths[i] == 512 for i in batch) for batch in batches][-3:] == [4, 8, 8]  # the 4 short rows
    # left over from the last full short batch share the first long batch: 8 rows of at most 512 tokens


def test_excluded_rows_are_never_trained_on_and_the_card_counts_them(tiny_bert, tmp_path):
    """--exclude_files (e.g. the test halves): a training row with the same request and reply is left out, as a
    validation row's twin is, and the card says how many. The device: a CUDA GPU where there is one, unless
    --use_cpu."""
    from training.encoder import EncoderTrainingConfig, main, training_device

    train, validation = dataset(tmp_path)
    excluded = write_rows(tmp_path / "test.jsonl", [labelled(HARMFUL[0], prompt_harmfulness="harmful"),
                                                    labelled("Never seen", prompt_harmfulness="unharmful")])
    card = main(train_args(tiny_bert, train, validation, tmp_path / "run", num_train_epochs=1,
                           exclude_files=excluded, use_cpu=True))
    assert card["trained"]["rows_per_head"]["prompt_harmfulness"] == 11  # one of the 12 requests is excluded
    assert "1 training rows share a request and reply with a validation or excluded row: left out" in \
        card["trained"]["notes"]
    assert card["trained"]["exclude_files"] == [str(excluded)] and card["trained"]["settings"]["use_cpu"] is True
    import torch

    assert training_device(EncoderTrainingConfig()).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert training_device(EncoderTrainingConfig(use_cpu=True)).type == "cpu"


def test_training_reads_a_dataset_the_way_it_reads_the_hubs(tiny_bert, tmp_path):
    """A --train_files entry that is not a file goes to datasets.load_dataset, as yueliu1999/GuardReasonerTrain
    does (the GuardReasonerTrain recipe); here a local dataset folder, since the hub is out of reach."""
    from training.encoder import main

    train, validation = dataset(tmp_path)
    folder = tmp_path / "guardreasonertrain"
    folder.mkdir()
    train.rename(folder / "train.jsonl")
    card = main(train_args(tiny_bert, folder, validation, tmp_path / "run", num_train_epochs=1))
    assert card["trained"]["rows_per_head"]["prompt_harmfulness"] == 12
    assert card["trained"]["sources"] == {"train": 24}  # each row named by its dataset split


def test_request_views_teach_the_request_head_the_request_alone():
    """--request_views: a pair labelling its request adds the request alone with that label, once per request,
    but never where the request alone is already a row (its own label stands) or must stay unseen."""
    from training.encoder import with_request_views
    from training.screen import Labelled

    rows = [Labelled("Make a bomb", "No.", {"prompt_harmfulness": "harmful", "response_refusal": "refusal"}, "a"),
            Labelled("Make a bomb", "Sure: ...", {"prompt_harmfulness": "harmful"}, "a"),
            Labelled("Bake bread", "Knead it.", {"prompt_harmfulness": "unharmful"}, "a"),
            Labelled("Bake bread", None, {"prompt_harmfulness": "harmful"}, "b"),  # the request alone: kept as is
            Labelled("Pick a lock", "Here is how", {"response_harmfulness": "harmful"}, "a"),  # request unlabelled
            Labelled("Hide a body", "No.", {"prompt_harmfulness": "harmful"}, "a")]
    out = with_request_views(rows, unseen={("Hide a body", None)})
    assert out[: len(rows)] == rows
    assert [(row.prompt, row.response, row.labels, row.source) for row in out[len(rows):]] == [
        ("Make a bomb", None, {"prompt_harmfulness": "harmful"}, "a/request-view")]
