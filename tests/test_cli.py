import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guardreasoner import cli as cli_module
from guardreasoner.cli import build_parser, main
from guardreasoner.errors import GuardReasonerError
from guardreasoner.models import ModelUnavailable
from guardreasoner.parser import split_upstream_prompt
from tests.tiny_models import HARMFUL_REQUEST, SAFE_REQUEST

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_classify_text_prints_reasoning_and_a_verdict_line(capsys, taught_model_dir):
    code, out, err = run(capsys, "classify", HARMFUL_REQUEST, "--model", str(taught_model_dir), "--max-new-tokens",
                         "200")
    assert code == 0
    assert "## Reasoning Step 1" in out
    assert out.strip().splitlines()[-1].startswith("prompt_harmfulness: harmful p=")
    code, out, _ = run(capsys, "classify", SAFE_REQUEST, "--model", str(taught_model_dir), "--json")
    assert json.loads(out)["labels"]["prompt_harmfulness"] == "unharmful"


def test_classify_file_reports_bad_rows_by_line_and_runs_the_rest(capsys, tmp_path, taught_model_dir):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join([
        json.dumps({"prompt": HARMFUL_REQUEST, "id": "a"}),
        "{not json",
        json.dumps({"prompt": SAFE_REQUEST, "response": "", "id": "b"}),  # empty reply = no reply
        json.dumps({"response": "no prompt"}),
        json.dumps({"prompt": SAFE_REQUEST, "response": 42}),
    ]) + "\n")
    output = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "classify", "--input", str(rows), "--output", str(output),
                       "--model", str(taught_model_dir), "--max-new-tokens", "200")
    assert code == 1
    assert "line 2: invalid JSON" in err and "line 4: missing or empty 'prompt'" in err
    assert "line 5: 'response' must be text" in err
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [(r["line"], r["id"], r["labels"]["prompt_harmfulness"]) for r in records] == \
        [(1, "a", "harmful"), (3, "b", "unharmful")]


def test_classify_csv_with_line_numbers(capsys, tmp_path, taught_model_dir):
    rows = tmp_path / "rows.csv"
    rows.write_text('prompt,response\n"' + HARMFUL_REQUEST + '",\n"multi\nline prompt",ok,extra\n')
    output = tmp_path / "out.jsonl"
    code, _, err = run(capsys, "classify", "--input", str(rows), "--output", str(output),
                       "--model", str(taught_model_dir), "--max-new-tokens", "200")
    assert code == 1 and "line 3: more fields than the header names" in err
    assert [json.loads(x)["line"] for x in output.read_text().splitlines()] == [2]


def test_interrupted_file_run_resumes_without_redoing_or_losing_rows(capsys, tmp_path, taught_model_dir):
    rows = tmp_path / "rows.jsonl"
    prompts = [HARMFUL_REQUEST, SAFE_REQUEST, HARMFUL_REQUEST, SAFE_REQUEST]
    rows.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    output = tmp_path / "out.jsonl"
    args = ["classify", "--input", str(rows), "--output", str(output), "--model", str(taught_model_dir),
            "--max-new-tokens", "200", "--batch-size", "2"]
    assert run(capsys, *args)[0] == 0
    complete = output.read_text().splitlines()
    # An interruption: the first record survived whole, the second was cut mid-write.
    output.write_text(complete[0] + "\n" + complete[1][:50])
    code, _, err = run(capsys, *args)
    assert code == 0 and "resuming: 1 rows already" in err
    resumed = output.read_text().splitlines()
    assert resumed[0] == complete[0]  # kept byte for byte, not regenerated
    assert sorted(json.loads(x)["line"] for x in resumed) == [1, 2, 3, 4]
    assert [json.loads(x)["labels"] for x in resumed] == [json.loads(x)["labels"] for x in complete]
    code, _, err = run(capsys, *args)  # nothing left to do
    assert code == 0 and len(output.read_text().splitlines()) == 4


def test_prompt_prints_the_exact_model_input(capsys, shared_dir):
    row = json.loads((shared_dir / "predictions/GuardReasoner-8B/HarmBenchResponse/generated_predictions.jsonl")
                     .read_text().split("\n")[3])
    request, reply = split_upstream_prompt(row["prompt"])
    code, out, _ = run(capsys, "prompt", "--prompt", request, "--response", reply)
    assert code == 0 and out == row["prompt"]


def test_parse_reads_upstream_generations_in_order(capsys, tmp_path, shared_dir):
    source = shared_dir / "predictions/GuardReasoner-1B/HarmBenchResponse/generated_predictions.jsonl"
    out_path = tmp_path / "parsed.jsonl"
    code, _, _ = run(capsys, "parse", str(source), "--out", str(out_path))
    assert code == 0
    parsed = [json.loads(x) for x in out_path.read_text().splitlines()]
    rows = source.read_text().rstrip("\n").split("\n")  # JSON strings may hold U+2028, which splitlines splits on
    assert len(parsed) == len(rows) == 602
    assert set(parsed[0]) == {"prompt_harmfulness", "response_refusal", "response_harmfulness", "parse_error"}
    assert parsed[0]["response_harmfulness"] == json.loads(rows[0])["predict"].split("Response:")[-1].strip()
    assert [p["parse_error"] for p in parsed].count(True) == 2  # the two looping outputs (rows 221, 486)
    assert parsed[221]["parse_error"] and parsed[221]["prompt_harmfulness"] is None


def test_parse_keeps_line_alignment_on_bad_input(capsys, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"predict": "Answers:\\nRequest: harmful"}\nnot json\n{"other": 1}\n')
    code, out, err = run(capsys, "parse", str(source))
    lines = [json.loads(x) for x in out.splitlines()]
    assert code == 1 and len(lines) == 3 and "line 2" in err and "line 3" in err
    assert lines[0]["prompt_harmfulness"] == "harmful" and lines[1]["parse_error"] and lines[2]["parse_error"]


def test_unreachable_model_without_fallback_is_one_clear_line(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    code, _, err = run(capsys, "classify", "hi", "--model", "GuardReasoner-3B", "--no-fallback")
    assert code == 2
    assert err.strip().count("\n") == 0 and "yueliu1999/GuardReasoner-3B" in err


def test_input_without_output_is_refused(capsys):
    code, _, err = run(capsys, "classify", "--input", "x.jsonl")
    assert code == 2 and err == "error: --input needs --output\n"


def cli(*argv, module="guardreasoner"):
    """The command line as a user runs it: its own process, so stderr holds exactly what the user would see."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGILLA_")} | {"PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT)


@pytest.mark.parametrize("argv", [
    ("parse", "/nonexistent/generations.jsonl"),                                  # a missing file
    ("classify", "--input", "/nonexistent/rows.jsonl", "--output", "out.jsonl"),  # a missing input file
    ("serve", "--api-key", "short"),                                               # a key under 16 characters
])
def test_bad_input_is_one_line_on_stderr_and_a_nonzero_status(argv):
    done = cli(*argv)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    debug = cli(*argv, "--debug")  # after the subcommand's own options, or before the subcommand
    assert debug.returncode != 0 and "Traceback (most recent call last)" in debug.stderr
    assert "Traceback" in cli("--debug", *argv).stderr


@pytest.mark.parametrize("module, argv", [
    ("eval", ("score", "/nonexistent/run", "--scoring", "strict")),
    ("annotate", ("pull", "--pairs", "/nonexistent/pairs.jsonl")),  # no Argilla key set
])
def test_the_other_command_lines_say_bad_input_in_one_line_too(module, argv):
    done = cli(*argv, module=module)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "Traceback" in cli(*argv, "--debug", module=module).stderr


def test_an_unexpected_error_names_its_type_and_points_to_debug(capsys, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli_module, "_parse", broken)
    code, _, err = run(capsys, "parse", "x.jsonl")
    assert code == 2
    assert err == "error: ZeroDivisionError: division by zero (run again with --debug for the traceback)\n"
    with pytest.raises(ZeroDivisionError):
        main(["parse", "x.jsonl", "--debug"])


def test_old_mode_flags_still_work_and_say_the_new_name(capsys):
    code, new, err = run(capsys, "prompt", "--prompt", "Hi", "--prompt-format", "raw")
    assert code == 0 and err == ""
    code, old, err = run(capsys, "prompt", "--prompt", "Hi", "--mode", "raw")
    assert code == 0 and old == new and err == "warning: --mode is deprecated; use --prompt-format\n"
    parsed = build_parser().parse_args(["classify", "hi", "--mode", "chat"])
    assert parsed.prompt_format == "chat"
    capsys.readouterr()
    from eval.cli import main as eval_main

    assert eval_main(["score", "/nonexistent/run", "--mode", "strict"]) == 2  # parsed, then the run is missing
    assert "warning: --mode is deprecated; use --scoring" in capsys.readouterr().err


def test_the_library_errors_share_one_base_and_keep_their_old_ones():
    from guardreasoner.backends.ctranslate2_backend import ConversionUnsupported
    from guardreasoner.backends.vllm_backend import RowTooLong
    from guardreasoner.client import GuardServiceError
    from guardreasoner.screen import ScreenError

    for error, old_base in [(ModelUnavailable("x"), RuntimeError), (ScreenError("x"), ValueError),
                            (GuardServiceError(503, "busy"), RuntimeError), (RowTooLong("x"), ValueError),
                            (ConversionUnsupported("x"), RuntimeError)]:
        with pytest.raises(GuardReasonerError):
            raise error
        with pytest.raises(old_base):
            raise error


def test_the_verdict_vocabulary_is_exported_and_is_what_results_carry():
    import guardreasoner

    parsed = guardreasoner.parse("Answers: \nRequest: harmful\nCompletion: None\nResponse: None")
    # The package docstring's example, on the keys and labels the package exports.
    assert parsed.labels == {guardreasoner.PROMPT_HARMFULNESS: "harmful", guardreasoner.RESPONSE_REFUSAL: None,
                             guardreasoner.RESPONSE_HARMFULNESS: None}
    assert tuple(parsed.labels) == guardreasoner.VERDICT_KEYS
    assert "'prompt_harmfulness': 'harmful', 'response_refusal': None" in guardreasoner.__doc__
    assert guardreasoner.LABELS[guardreasoner.RESPONSE_REFUSAL] == ("refusal", "compliance")
    assert guardreasoner.POSITIVE[guardreasoner.PROMPT_HARMFULNESS] == "harmful"
