import json
from collections import Counter

import pytest

from eval.data import load_benchmark
from eval.run import split_part
from eval.split import export_rows, make_split
from guardreasoner.parser import parse, split_upstream_prompt
from stagekit.splits import SPLIT_BENCHMARKS, SPLITS_DIR, UNSEEN_BENCHMARKS, load_split
from training.seeds import load_local_seeds


@pytest.mark.parametrize("benchmark", SPLIT_BENCHMARKS)
def test_committed_split_is_disjoint_covers_the_file_and_keeps_the_label_mix(benchmark, shared_dir):
    split = load_split(benchmark)
    rows = load_benchmark(benchmark, shared_dir / "benchmarks" / "guardreasoner")
    assert split.rows == len(rows)
    train, test = set(split.train), set(split.test)
    assert not train & test
    assert train | test == set(range(len(rows)))
    assert len(split.train) == len(train) and len(split.test) == len(test)  # no index twice
    assert set(split.validation) <= train and not set(split.fit) & set(split.validation)
    assert set(split.fit) | set(split.validation) == train
    assert 0.15 < len(split.validation) / len(train) < 0.25
    # stratified: each label tuple is within one row of an even cut between the halves
    labels = {row.index: tuple(row.labels.values()) for row in rows}
    in_train, in_test = Counter(labels[i] for i in train), Counter(labels[i] for i in test)
    assert all(abs(in_train[key] - in_test[key]) <= 1 for key in set(labels.values()))


def test_the_split_is_reproduced_from_its_seed(shared_dir):
    committed = json.loads((SPLITS_DIR / "ToxicChat.json").read_text())
    made = make_split("ToxicChat", shared_dir / "benchmarks" / "guardreasoner", committed["seed"])
    assert (made["train"], made["validation"], made["test"]) == (committed["train"], committed["validation"],
                                                                 committed["test"])
    assert made["file_sha256"] == committed["file_sha256"]
    assert made["train"] != make_split("ToxicChat", shared_dir / "benchmarks" / "guardreasoner", 1)["train"]


def test_unseen_benchmarks_have_no_split_and_stay_whole_in_the_test_part(shared_dir):
    for benchmark in UNSEEN_BENCHMARKS:
        with pytest.raises(FileNotFoundError, match="never split"):
            load_split(benchmark)
    rows = load_benchmark("SafeRLHF", shared_dir / "benchmarks" / "guardreasoner")
    assert split_part(rows, "SafeRLHF", "test") == rows
    toxic = load_benchmark("ToxicChat", shared_dir / "benchmarks" / "guardreasoner")
    assert [row.index for row in split_part(toxic, "ToxicChat", "test")] == list(load_split("ToxicChat").test)


def test_exported_rows_carry_the_gold_labels_as_an_answers_block(shared_dir):
    data_dir = shared_dir / "benchmarks" / "guardreasoner"
    rows = export_rows(["WildGuardTest"], data_dir, "validation")
    gold = {row.index: row for row in load_benchmark("WildGuardTest", data_dir)}
    assert len(rows) == len(load_split("WildGuardTest").validation)
    for row in rows[:50]:
        original = gold[int(row["id"].split("/")[1])]
        assert split_upstream_prompt(row["input"]) == (original.prompt, original.response)
        labels = parse(row["output"]).labels
        assert {key: labels[key] for key in original.labels} == original.labels


def test_a_training_half_exported_as_seeds_is_what_synthesis_reads(shared_dir, tmp_path):
    data_dir = shared_dir / "benchmarks" / "guardreasoner"
    gold = {row.index: row for row in load_benchmark("WildGuardTest", data_dir)}
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in export_rows(["WildGuardTest"], data_dir, "train",
                                                                          form="seeds")))
    seeds = load_local_seeds(path)
    assert len(seeds) == len(load_split("WildGuardTest").train)
    for seed in seeds:
        original = gold[int(seed.id.split("/")[1])]
        assert (seed.prompt, seed.response) == (original.prompt, original.response)
        assert seed.labels == {key: label for key, label in original.labels.items() if label is not None}
    # The other format, given to synthesis by mistake: a short error that says which export to use.
    wrong = tmp_path / "train.jsonl"
    wrong.write_text("".join(json.dumps(row) + "\n" for row in export_rows(["WildGuardTest"], data_dir, "train")))
    with pytest.raises(ValueError) as error:
        load_local_seeds(wrong)
    message = str(error.value)
    assert "line 20: missing or empty 'prompt'" in message and "line 21:" not in message
    assert f"and {len(seeds) - 20} more" in message and "--format seeds" in message


def test_the_splits_are_found_as_every_asset_is_and_a_missing_folder_says_where_they_live(tmp_path):
    from guardreasoner.shipped import assets_dir

    assert SPLITS_DIR == assets_dir() / "splits"  # shipped.py's finder, not a path next to the source tree
    with pytest.raises(FileNotFoundError, match="not carry them"):  # an installed wheel has no splits
        load_split("ToxicChat", tmp_path / "splits")


def test_training_parts_leave_out_rows_that_are_held_out_rows_elsewhere(shared_dir):
    """The two XSTest files hold the same pairs, so a training-half row of one can be a test-half row of the
    other: the export leaves it out (and says which), so no score is read off a row a model was trained on."""
    from eval.split import held_out_pairs

    data_dir = shared_dir / "benchmarks" / "guardreasoner"
    dropped: list[str] = []
    rows = export_rows(["XSTestResponseRefusal"], data_dir, "fit", dropped=dropped)
    held = held_out_pairs(data_dir)
    assert dropped and len(rows) + len(dropped) == len(load_split("XSTestResponseRefusal").fit)
    assert not {split_upstream_prompt(row["input"]) for row in rows} & held
    harmful = load_benchmark("XSTestResponseHarmful", data_dir)
    harmful_test = {(harmful[i].prompt, harmful[i].response) for i in load_split("XSTestResponseHarmful").test}
    refusal = load_benchmark("XSTestResponseRefusal", data_dir)
    assert {(refusal[int(d.split("/")[1])].prompt, refusal[int(d.split("/")[1])].response) for d in dropped} <= held
    assert any((refusal[int(d.split("/")[1])].prompt, refusal[int(d.split("/")[1])].response) in harmful_test
               for d in dropped)
