"""Training rows from the released outputs: kept only where every labelled verdict equals gold."""

from guardreasoner.parser import parse, split_upstream_prompt
from guardreasoner.predictions import read_run
from training.data import load_rows
from training.from_predictions import main


def test_only_outputs_that_reach_gold_become_rows(shared_dir, tmp_path):
    output = tmp_path / "train.jsonl"
    runs = [str(shared_dir / "predictions" / name) for name in ("GuardReasoner-1B", "GuardReasoner-8B")]
    stats = main(["--runs", *runs, "--output", str(output)])
    counts = stats["by_source"]
    assert sum(sum(c.values()) for c in counts.values()) == 4390  # every released output is accounted for
    rows = load_rows(str(output))
    assert len(rows) == stats["rows"] == sum(c["kept"] for c in counts.values())
    assert all("The ground truth is" not in row["output"] for row in rows)  # leaks cut (8B writes them)
    ids = {row["id"]: row for row in rows}
    assert "GuardReasoner-1B/AegisSafetyTest/276" not in ids  # read as unharmful, gold harmful
    assert "GuardReasoner-1B/AegisSafetyTest/282" not in ids  # harmful, but only after looping
    assert "GuardReasoner-1B/AegisSafetyTest/0" in ids
    originals = {f"{model}/{row.benchmark}/{row.line}": row for model in ("GuardReasoner-1B", "GuardReasoner-8B")
                 for row in read_run(shared_dir / "predictions" / model)}
    for key, row in list(ids.items())[::25]:
        original = originals[key]
        assert split_upstream_prompt(row["input"]) == (original.prompt, original.response)
        labels = parse(row["output"]).labels
        assert original.gold and all(labels[k] == v for k, v in original.gold.items())


def test_shared_traces_are_appended_as_rows(shared_dir, tmp_path):
    output = tmp_path / "train.jsonl"
    traces = shared_dir / "traces" / "guardreasonertrain_sample.json"
    stats = main(["--runs", str(shared_dir / "predictions" / "GuardReasoner-1B"), "--extra", str(traces),
                  "--output", str(output)])
    rows = load_rows(str(output))
    assert stats["by_source"][str(traces)]["kept"] == 4
    assert [row["source"] for row in rows[-4:]] == ["WildGuardTrainR", "AegisTrainR", "BeaverTailsTrainR",
                                                    "ToxicChatTrainR"]
    assert len(rows) == stats["rows"] == sum(c["kept"] for c in stats["by_source"].values())
