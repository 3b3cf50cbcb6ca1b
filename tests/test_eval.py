import json
import shutil

import numpy as np
import pytest

from eval.cli import main as eval_main
from eval.data import load_benchmark
from eval.registry import BENCHMARKS, CELLS
from eval.score import score_run
from stagekit.metrics import f1_percent

PUBLISHED = {  # ../shared/README.md, scored exactly as the paper scored them
    "GuardReasoner-1B": {"SimpleSafetyTests": 98.99, "AegisSafetyTest": 89.34, "HarmBenchPrompt": 96.31,
                         "HarmBenchResponse": 84.75, "XSTestResponseHarmful": 90.12, "XSTestResponseRefusal": 91.34},
    "GuardReasoner-8B": {"SimpleSafetyTests": 99.50, "AegisSafetyTest": 90.18, "HarmBenchPrompt": 91.86,
                         "HarmBenchResponse": 85.47, "XSTestResponseHarmful": 94.34, "XSTestResponseRefusal": 93.68},
}


def test_registry_has_the_13_cells_with_paper_weights():
    assert len(CELLS) == 13
    assert [c.paper_weight for c in CELLS if c.task == "prompt_harmfulness"] == [2853, 239, 1680, 359, 100, 1756]
    assert [c.paper_weight for c in CELLS if c.task == "response_harmfulness"] == [602, 2000, 3021, 446, 1768]
    assert [c.paper_weight for c in CELLS if c.task == "response_refusal"] == [499, 1777]


def test_f1_matches_the_definition():
    assert f1_percent(["harmful", "harmful", "unharmful", "unharmful"],
                      ["harmful", "unharmful", "harmful", "unharmful"],
                      "harmful") == pytest.approx(50.0)
    assert f1_percent(["unharmful"], ["unharmful"], "harmful") == 0.0


@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_paper_mode_reproduces_the_published_f1(model, shared_dir, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert eval_main(["score", str(shared_dir / "predictions" / model), "--scoring", "paper", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    got = {c["benchmark"]: round(c["f1"], 2) for c in report["cells"]}
    assert got == PUBLISHED[model]
    assert "XSTestResponseHarmful" in got  # upstream's misspelt folder, canonical name
    assert report["tasks"]["prompt_harmfulness"]["partial"] and report["overall_partial"]
    assert {m["benchmark"] for m in report["missing"]} == {"ToxicChat", "OpenAIModeration", "WildGuardTest",
                                                             "SafeRLHF", "BeaverTails"}
    assert "| **" + model + "** |" in capsys.readouterr().out


def test_strict_mode_counts_each_failure_once_and_adds_intervals(shared_dir):
    paper = {c["benchmark"]: c for c in score_run(shared_dir / "predictions/GuardReasoner-8B", "paper")["cells"]}
    strict = {c["benchmark"]: c for c in score_run(shared_dir / "predictions/GuardReasoner-8B", "strict")["cells"]}
    # Aegis: one unparsable output on a harmful row is dropped by the paper's scorer, counted wrong here.
    assert strict["AegisSafetyTest"]["f1"] < paper["AegisSafetyTest"]["f1"]
    for cell in strict.values():
        low, high = cell["ci95"]
        assert low <= cell["f1"] <= high
        confusion = cell["confusion"]
        assert sum(confusion.values()) == cell["n"]
        assert cell["weight"] == cell["n"]


def test_wildguardtest_labels_come_from_its_columns(shared_dir):
    rows = load_benchmark("WildGuardTest", shared_dir / "benchmarks/guardreasoner")
    assert len(rows) == 1725
    unlabelled = sum(r.labels["prompt_harmfulness"] is None for r in rows)
    assert 0 < unlabelled < 100
    assert {r.labels["response_refusal"] for r in rows} <= {"refusal", "compliance", None}
    safe_rlhf = load_benchmark("SafeRLHF", shared_dir / "benchmarks/guardreasoner")
    assert {r.labels["response_harmfulness"] for r in safe_rlhf} == {"harmful", "unharmful"}


def test_run_then_score_end_to_end_and_resume(shared_dir, tmp_path, taught_model_dir, capsys):
    run = tmp_path / "run"
    args = ["run", "--model", str(taught_model_dir), "--backend", "transformers", "--data-dir",
            str(shared_dir / "benchmarks/guardreasoner"), "--out", str(run), "--limit", "5",
            "--max-new-tokens", "24", "--batch-size", "3"]
    assert eval_main(args) == 0
    for benchmark in BENCHMARKS:
        rows = [json.loads(x) for x in (run / benchmark / "generated_predictions.jsonl").read_text().splitlines()]
        assert sorted(r["index"] for r in rows) == [0, 1, 2, 3, 4]
        assert all(r["output_tokens"] > 0 and r["latency_s"] > 0 for r in rows)
    # Interrupt: drop two rows and cut the last one in half; the rerun redoes exactly those.
    path = run / "ToxicChat" / "generated_predictions.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    kept = lines[:2]
    assert eval_main(args) == 0
    err = capsys.readouterr().err
    assert "ToxicChat: 3 rows generated" in err and "SafeRLHF: 0 rows generated" in err
    after = path.read_text().splitlines()
    assert after[:2] == kept and sorted(json.loads(x)["index"] for x in after) == [0, 1, 2, 3, 4]

    out = tmp_path / "strict.json"
    assert eval_main(["score", str(run), "--scoring", "strict", "--json", str(out), "--markdown",
                      str(tmp_path / "r.md"), "--html", str(tmp_path / "r.html")]) == 0
    report = json.loads(out.read_text())
    assert len(report["cells"]) == 13 and not report["missing"]
    assert not report["overall_partial"] and report["overall"] is not None
    assert all(c["n"] <= 5 for c in report["cells"])
    assert all(c["mean_output_tokens"] is not None for c in report["cells"])
    assert "<html>" in (tmp_path / "r.html").read_text()[:500].lower()
    assert "Overall" in (tmp_path / "r.md").read_text()


def test_batch_size_reaches_the_transformers_backend_when_auto_picks_it(shared_dir, tmp_path, taught_model_dir,
                                                                        monkeypatch):
    from guardreasoner.backends.ctranslate2_backend import CTranslate2Backend
    from guardreasoner.backends.transformers_backend import TransformersBackend

    sizes = []
    for local in (TransformersBackend, CTranslate2Backend):  # whichever `auto` picks on this machine
        def recording_init(self, *args, build=local.__init__, **kwargs):
            build(self, *args, **kwargs)
            sizes.append(self.batch_size)

        monkeypatch.setattr(local, "__init__", recording_init)
    args = ["run", "--model", str(taught_model_dir), "--data-dir", str(shared_dir / "benchmarks/guardreasoner"),
            "--benchmarks", "ToxicChat", "--out", str(tmp_path / "run"), "--limit", "2", "--max-new-tokens", "4",
            "--batch-size", "3"]
    assert eval_main(args) == 0
    assert sizes == [3]


def test_a_larger_sample_reuses_the_rows_a_smaller_run_generated(shared_dir, tmp_path, taught_model_dir, capsys):
    """--reuse copies the rows of this sample that another run of the same settings made (a 40-row run grown to
    200 generates only the rest); a reused row must have read the very input this guard builds."""
    from eval.run import split_part
    from guardreasoner.rows import seeded_sample as sample_rows

    data = shared_dir / "benchmarks/guardreasoner"
    base = ["run", "--model", str(taught_model_dir), "--backend", "transformers", "--data-dir", str(data),
            "--benchmarks", "ToxicChat", "--max-new-tokens", "8", "--batch-size", "4"]
    small, large = tmp_path / "small", tmp_path / "large"
    assert eval_main([*base, "--sample", "4", "--out", str(small)]) == 0
    capsys.readouterr()
    assert eval_main([*base, "--sample", "9", "--out", str(large), "--reuse", str(small)]) == 0
    rows = load_benchmark("ToxicChat", data)
    overlap = {r.index for r in sample_rows(rows, 4)} & {r.index for r in sample_rows(rows, 9)}
    assert overlap and f"ToxicChat: {9 - len(overlap)} rows generated" in capsys.readouterr().err
    made = [json.loads(x) for x in (large / "ToxicChat" / "generated_predictions.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in made) == [r.index for r in sample_rows(split_part(rows, "ToxicChat", None), 9)]
    before = {json.loads(x)["index"]: x for x in (small / "ToxicChat" / "generated_predictions.jsonl").read_text()
              .splitlines()}
    assert all(json.dumps(r, ensure_ascii=False) == before[r["index"]] for r in made if r["index"] in overlap)

    path = small / "ToxicChat" / "generated_predictions.jsonl"  # a run of other settings: another input
    path.write_text(path.read_text().replace("Human user:", "Human:"))
    assert eval_main([*base, "--sample", "9", "--out", str(tmp_path / "again"), "--reuse", str(small)]) == 1
    assert "from another input than this guard builds" in capsys.readouterr().err


class AlternatingScreen:
    """Sure (p=0.97) of every other prompt it is asked about, unsure (0.5) of the rest: auto defers half."""

    def __init__(self):
        from guardreasoner.screen import Head, Thresholds

        zero = np.zeros(1, dtype=np.float32)
        self.heads = {"prompt_harmfulness": Head("prompt_harmfulness", "input", zero, zero + 1, zero, 0.0,
                                                 Thresholds(cut=0.5, low=0.2, high=0.9))}
        self.sure: dict[str, bool] = {}

    def timed_probabilities(self, items):
        for prompt, _ in items:
            self.sure.setdefault(prompt, len(self.sure) % 2 == 0)
        return [{"prompt_harmfulness": 0.97 if self.sure[prompt] else 0.5} for prompt, _ in items], 0.001


def test_another_reasoning_mode_replays_a_runs_reasoning_instead_of_generating(shared_dir, tmp_path,
                                                                               taught_model_dir, monkeypatch):
    """--reuse across reasoning modes: an auto run over a full run's rows calls the screen anew and takes the
    reasoning of the rows it defers from the full run (never copying a full record whole, whose every verdict
    the reasoning made); a full run over an auto run's rows regenerates only rows the screen decided whole."""
    from eval.run import run_benchmark
    from guardreasoner.backends.base import SamplingConfig
    from guardreasoner.backends.transformers_backend import TransformersBackend
    from guardreasoner.cascade import Cascade
    from guardreasoner.guard import Guard

    data = shared_dir / "benchmarks/guardreasoner"
    backend = TransformersBackend(str(taught_model_dir))
    sampling = SamplingConfig(max_new_tokens=8)
    full, auto, again = tmp_path / "full", tmp_path / "auto", tmp_path / "again"
    assert run_benchmark(Guard(backend, sampling=sampling), "ToxicChat", data, full, sample=6, batch_size=4) == 6

    def no_generation(*args, **kwargs):
        raise AssertionError("generated a row whose reasoning the reused run holds")

    monkeypatch.setattr(backend, "generate", no_generation)
    screen = AlternatingScreen()
    auto_guard = Cascade(Guard(backend, sampling=sampling, fail_closed=False), screen, "auto")
    assert run_benchmark(auto_guard, "ToxicChat", data, auto, sample=6, batch_size=4, reuse=[full]) == 6
    assert auto_guard.backend is backend  # the replay wraps a copy: the caller's guard is never changed

    def records(run):
        lines = (run / "ToxicChat" / "generated_predictions.jsonl").read_text().splitlines()
        return {record["index"]: record for record in map(json.loads, lines)}

    made, reasoned = records(auto), records(full)
    by_screen = {i for i, r in made.items() if r["decided_by"]["prompt_harmfulness"] == "screen"}
    assert len(by_screen) == 3 and all("Request: harmful" in made[i]["predict"] for i in by_screen)
    for index in set(made) - by_screen:  # deferred: the full run's reasoning, decided as it decided
        assert made[index]["predict"] == reasoned[index]["predict"]
        assert "reasoning_output" not in made[index]

    calls = []
    monkeypatch.undo()
    real = backend.generate
    monkeypatch.setattr(backend, "generate", lambda prompts, *rest, **options: calls.append(len(prompts))
                        or real(prompts, *rest, **options))
    assert run_benchmark(Guard(backend, sampling=sampling), "ToxicChat", data, again, sample=6, batch_size=6,
                         reuse=[auto]) == 3  # the deferred rows' records are whole reasoning records: copied
    assert calls == [3]  # the rows the screen decided alone had no reasoning to reuse
    assert {i: r["predict"] for i, r in records(again).items()} == {i: r["predict"] for i, r in reasoned.items()}


def test_missing_run_folder_is_a_clear_error(tmp_path, capsys):
    assert eval_main(["score", str(tmp_path / "nope")]) == 2
    assert "no run folder" in capsys.readouterr().err


def test_upstream_wildguard_folder_needs_the_data_dir(shared_dir, tmp_path):
    run = tmp_path / "upstream"
    shutil.copytree(shared_dir / "predictions/GuardReasoner-8B/SimpleSafetyTests", run / "SimpleSafetyTests")
    (run / "WildGuardTest").mkdir()
    (run / "WildGuardTest" / "generated_predictions.jsonl").write_text(
        json.dumps({"prompt": "x", "label": "", "predict": "Answers: \nRequest: harmful"}) + "\n")
    report = score_run(run, "paper")
    reasons = {m["benchmark"]: m["reason"] for m in report["missing"]}
    assert "--data-dir" in reasons["WildGuardTest"]
    report = score_run(run, "paper", shared_dir / "benchmarks/guardreasoner")
    assert any(c["benchmark"] == "WildGuardTest" for c in report["cells"])


HUB_ROWS = {  # a few rows in each public dataset's own schema
    ("allenai/wildguardmix", "wildguardtest", "test"): [
        {"prompt": "p1", "response": "r1", "prompt_harm_label": "harmful", "response_harm_label": "unharmful",
         "response_refusal_label": "refusal"},
        {"prompt": "p2", "response": None, "prompt_harm_label": None, "response_harm_label": None,
         "response_refusal_label": None}],
    ("mmathys/openai-moderation-api-evaluation", None, "train"): [
        {"prompt": "a", "S": 0, "H": 0, "V": 0, "HR": 1, "SH": 0, "S3": 0, "H2": 0, "V2": 0},
        {"prompt": "b", "S": 0, "H": 0, "V": 0, "HR": 0, "SH": 0, "S3": 0, "H2": 0, "V2": None}],
    ("PKU-Alignment/BeaverTails", None, "30k_test"): [
        {"prompt": "q", "response": "unsafe", "is_safe": False, "category": {}},
        {"prompt": "q", "response": "fine", "is_safe": True, "category": {}}],
    ("allenai/xstest-response", None, "response_refusal"): [
        {"prompt": "x", "response": "No.", "label": "refusal"}],
    ("Bertievidgen/SimpleSafetyTests", None, "test"): [{"id": "sst_001", "prompts_final": "how to ..."}],
}


@pytest.fixture
def fake_hub(monkeypatch):
    import datasets

    calls = []

    def load_dataset(repo, config=None, split=None):
        calls.append((repo, config, split))
        return datasets.Dataset.from_list(HUB_ROWS[(repo, config, split)])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_rows_map_to_prompts_replies_and_labels(fake_hub):
    from eval.data import load_benchmark

    wild = load_benchmark("WildGuardTest", None)
    assert (wild[0].prompt, wild[0].response) == ("p1", "r1")
    assert wild[0].labels == {"prompt_harmfulness": "harmful", "response_harmfulness": "unharmful",
                              "response_refusal": "refusal"}
    assert wild[1].response is None and wild[1].labels == {"prompt_harmfulness": None, "response_harmfulness": None,
                                                           "response_refusal": None}
    assert [r.labels["prompt_harmfulness"] for r in load_benchmark("OpenAIModeration",
                                                                   None)] == ["harmful", "unharmful"]
    assert [r.labels["response_harmfulness"] for r in load_benchmark("BeaverTails", None)] == ["harmful", "unharmful"]
    assert load_benchmark("XSTestResponseRefusal", None)[0].labels == {"response_refusal": "refusal"}
    simple = load_benchmark("SimpleSafetyTests", None)[0]
    assert simple.prompt == "how to ..." and simple.labels == {"prompt_harmfulness": "harmful"}
    assert ("allenai/wildguardmix", "wildguardtest", "test") in fake_hub


def test_benchmarks_without_a_hub_source_say_what_to_do(fake_hub):
    from eval.data import load_benchmark

    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_benchmark("ToxicChat", None)


def test_hub_row_count_is_checked(fake_hub, caplog):
    from eval.data import load_benchmark

    load_benchmark("OpenAIModeration", None)
    assert "has 2 rows, the paper used 1680" in caplog.text


def test_run_without_data_dir_uses_the_hub_and_skips_what_it_cannot_load(fake_hub, tmp_path, taught_model_dir, capsys):
    run = tmp_path / "hub-run"
    code = eval_main(["run", "--model", str(taught_model_dir), "--backend", "transformers", "--out", str(run),
                      "--benchmarks", "WildGuardTest", "ToxicChat", "--limit", "2", "--max-new-tokens", "8"])
    err = capsys.readouterr().err
    assert code == 1 and "ToxicChat: skipped" in err and "WildGuardTest: 2 rows generated" in err
    rows = [json.loads(x) for x in (run / "WildGuardTest" / "generated_predictions.jsonl").read_text().splitlines()]
    assert rows[0]["labels"] == {"prompt_harmfulness": "harmful", "response_harmfulness": "unharmful",
                                 "response_refusal": "refusal"}


def test_seeded_samples_are_the_same_rows_for_every_model(shared_dir):
    from eval.data import load_benchmark
    from guardreasoner.rows import seeded_sample as sample_rows

    rows = load_benchmark("ToxicChat", shared_dir / "benchmarks" / "guardreasoner")
    first, again, other = sample_rows(rows, 100, seed=0), sample_rows(rows, 100, seed=0), sample_rows(rows, 100, seed=1)
    assert [r.index for r in first] == [r.index for r in again] and len(first) == 100
    assert [r.index for r in first] == sorted(r.index for r in first)  # file order, so runs resume cleanly
    assert [r.index for r in first] != [r.index for r in other]
    assert {r.labels["prompt_harmfulness"] for r in first} == {"harmful", "unharmful"}
    assert len(sample_rows(rows[:10], 100)) == 10


def test_the_minilm_baseline_is_a_screen_in_off_and_writes_a_scorable_run(shared_dir, tmp_path, capsys):
    """The non-reasoning baseline (formerly eval/baseline.py) is a MiniLM screen trained on the training rows,
    evaluated by ``eval run --reasoning off --screen FOLDER``: the same scorer, rows and record as every model."""
    from eval.run import run_benchmark
    from guardreasoner import load_guard
    from guardreasoner.parser import parse, split_upstream_prompt
    from stagekit.splits import load_split
    from training.from_predictions import main as rows_from_predictions
    from training.screen import main as train_screen

    train = tmp_path / "train.jsonl"
    rows_from_predictions(["--runs", str(shared_dir / "predictions" / "GuardReasoner-1B"), "--output", str(train)])
    rows = [json.loads(line) for line in train.open()][::12]  # ~165 rows, every benchmark
    subset = tmp_path / "subset.jsonl"
    subset.write_text("".join(json.dumps(row) + "\n" for row in rows))
    screen = tmp_path / "minilm-screen"
    report = train_screen(["--model", "embedded", "--features", "minilm", "--train", str(subset), "--out", str(screen)])
    distinct = len({row["input"] for row in rows})  # training.screen merges rows of the same prompt and reply
    assert report["heads"]["prompt_harmfulness"]["rows"] == distinct
    assert 0 < report["heads"]["response_harmfulness"]["rows"] < distinct

    guard = load_guard("embedded", "transformers", fail_closed=False, reasoning="off", screen=str(screen))
    said = guard.classify([dict(zip(("prompt", "response"), split_upstream_prompt(row["input"]))) for row in rows])
    right = sum(result.labels["prompt_harmfulness"] == parse(row["output"]).labels["prompt_harmfulness"]
                for row, result in zip(rows, said))
    assert right / len(rows) > 0.8  # the heads fit their own training rows

    out, data = tmp_path / "minilm", shared_dir / "benchmarks" / "guardreasoner"
    assert run_benchmark(guard, "ToxicChat", data, out, sample=10, part="test") == 10
    assert run_benchmark(guard, "XSTestResponseRefusal", data, out, sample=10) == 10
    # --split test scores the rows eval run --split test scores: only the test half of a split benchmark.
    indices = {json.loads(line)["index"] for line in (out / "ToxicChat" / "generated_predictions.jsonl").open()}
    assert len(indices) == 10 and indices <= set(load_split("ToxicChat").test)
    cells = {(c["benchmark"], c["task"]): c for c in score_run(out, "strict")["cells"]}
    toxic = cells[("ToxicChat", "prompt_harmfulness")]
    assert toxic["n"] == 10 and toxic["parse_failures"] == 0 and toxic["mean_ms_per_row"] is not None
    assert cells[("XSTestResponseRefusal", "response_refusal")]["n"] == 10


def test_compare_puts_runs_on_the_same_rows_in_one_table(shared_dir, tmp_path, capsys):
    from eval.cli import main

    for model in ("1B", "8B"):
        main(["score", str(shared_dir / f"predictions/GuardReasoner-{model}"), "--scoring", "strict",
              "--json", str(tmp_path / f"{model}.json")])
    capsys.readouterr()
    assert main(["compare", f"one={tmp_path / '1B.json'}", str(tmp_path / "8B.json"),
                 "--markdown", str(tmp_path / "table.md")]) == 0
    table = (tmp_path / "table.md").read_text()
    lines = table.splitlines()
    # paper order
    header = "| system | HarmBenchPrompt (prompt_harmfulness) | AegisSafetyTest (prompt_harmfulness) |"
    assert lines[0].startswith(header)
    assert lines[2].startswith("| one | ") and lines[3].startswith("| 8B | ")
    one = json.loads((tmp_path / "1B.json").read_text())
    aegis = next(c for c in one["cells"] if c["benchmark"] == "AegisSafetyTest")
    assert lines[2].split(" | ")[2] == f"{aegis['f1']:.2f} ({aegis['ci95'][0]:.1f}–{aegis['ci95'][1]:.1f})"
    assert "Not comparable" not in table  # both folders hold the same rows
    mean = sum(cell["f1"] for cell in one["cells"]) / len(one["cells"])
    assert lines[0].endswith(" | mean |") and lines[2].split(" | ")[-1] == f"{mean:.2f} |"
    # The reference row: every labelled row called positive scores 2P / (2P + N) on the same rows.
    confusion = aegis["confusion"]
    positives, negatives = confusion["tp"] + confusion["fn"], confusion["fp"] + confusion["tn"]
    assert lines[4].startswith("| all positive (reference) | ")
    low, high = (float(x) for x in lines[4].split(" | ")[2].split(" (")[1].rstrip(")").split("–"))
    assert lines[4].split(" | ")[2].startswith(f"{200 * positives / (2 * positives + negatives):.2f} (")
    assert low < 200 * positives / (2 * positives + negatives) < high
    # Balanced accuracy: the mean recall of both labels, 50 for a guard that calls every row one label.
    balanced = table.split("\n\n")[-1].splitlines()  # the last table
    assert balanced[0].startswith("| system | balanced accuracy: HarmBenchPrompt")
    expected = 50 * (confusion["tp"] / positives + confusion["tn"] / negatives)
    assert balanced[2].startswith("| one | ") and balanced[2].split(" | ")[2] == f"{expected:.2f}"

    # One system scored in two parts (two processes, two run folders): the same row as from one report.
    for name, cells in (("first", one["cells"][:3]), ("rest", one["cells"][3:])):
        (tmp_path / f"{name}.json").write_text(json.dumps({**one, "cells": cells}))
    capsys.readouterr()
    assert main(["compare", f"one={tmp_path / 'rest.json'}", f"one={tmp_path / 'first.json'}",
                 str(tmp_path / "8B.json")]) == 0
    assert capsys.readouterr().out.splitlines()[2] == lines[2]
    assert main(["compare", f"one={tmp_path / '1B.json'}", f"one={tmp_path / 'first.json'}"]) == 2
    first = one["cells"][0]
    assert f"{first['benchmark']} ({first['task']}) is scored in more than one report" in capsys.readouterr().err

    eight = json.loads((tmp_path / "8B.json").read_text())  # a system missing a cell: its mean says so
    eight["cells"] = eight["cells"][1:]
    (tmp_path / "8B.json").write_text(json.dumps(eight))
    capsys.readouterr()
    assert main(["compare", f"one={tmp_path / '1B.json'}", str(tmp_path / "8B.json")]) == 0
    partial = capsys.readouterr().out.splitlines()[3]
    kept = sum(cell["f1"] for cell in eight["cells"]) / len(eight["cells"])
    assert partial.endswith(f" | {kept:.2f} ({len(eight['cells'])} of {len(one['cells'])} cells) |")
