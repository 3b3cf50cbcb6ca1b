"""One builder for the options that load a guard: ``classify``, ``serve`` and ``eval run`` read them alike."""

import argparse

import pytest

from guardreasoner.cli import add_model_options, build_parser

MODEL_FLAGS = ["--model", "embedded", "--backend", "ctranslate2", "--prompt-format", "raw", "--compute-type",
               "float32", "--max-new-tokens", "64", "--reasoning", "off", "--screen", "some/folder"]
SHARED = ("model", "backend", "prompt_format", "compute_type", "max_new_tokens", "reasoning", "screen")


def _eval_run_parser() -> argparse.ArgumentParser:
    from eval.cli import build_parser as eval_parser

    subcommands = next(a for a in eval_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subcommands.choices["run"]


def test_classify_serve_and_eval_run_read_the_model_options_alike():
    classify = build_parser().parse_args(["classify", "hi", *MODEL_FLAGS])
    serve = build_parser().parse_args(["serve", *MODEL_FLAGS])
    run = _eval_run_parser().parse_args([*MODEL_FLAGS, "--out", "x"])
    for name in SHARED:
        assert getattr(classify, name) == getattr(serve, name) == getattr(run, name), name


def test_eval_run_names_its_model_reasons_in_full_by_default_and_has_no_sampling_options(capsys):
    run = _eval_run_parser()
    assert run.parse_args(["--model", "embedded", "--out", "x"]).reasoning == "full"
    with pytest.raises(SystemExit):
        run.parse_args(["--out", "x"])  # --model is required
    with pytest.raises(SystemExit):
        run.parse_args(["--model", "m", "--out", "x", "--reasoning", "recommended"])
    assert not hasattr(run.parse_args(["--model", "m", "--out", "x"]), "temperature")
    assert build_parser().parse_args(["classify", "hi"]).reasoning == "recommended"
    own = argparse.ArgumentParser()
    add_model_options(own)
    assert own.parse_args([]).model == build_parser().parse_args(["classify", "hi"]).model
