"""The one column-to-label language that evaluation's hub loaders and training's seed sources share."""

import pytest

from stagekit.label_specs import check_spec, read_label

P, R = "prompt_harmfulness", "response_refusal"


def test_each_kind_of_spec_reads_its_label():
    assert read_label({"l": " Harmful "}, "l", P) == "harmful"
    assert read_label({"l": "Refusal"}, "l", R) == "refusal"
    assert read_label({"l": "maybe"}, "l", P) is None
    assert read_label({}, "=harmful", P) == "harmful"
    assert [read_label({"t": v}, "flag:t", P) for v in (1, True, "1", 0, False)] == ["harmful"] * 3 + ["unharmful"] * 2
    assert [read_label({"safe": v}, "not:safe", P) for v in (False, True)] == ["harmful", "unharmful"]
    assert read_label({"a": 0, "b": 1}, "any:a,b", P) == "harmful"
    assert read_label({"a": 0, "b": None}, "any:a,b", P) == "unharmful"  # one vote missing, the other said
    votes = {"v0": "Needs Caution", "v1": "Safe", "v2": "O1: Violence"}
    assert read_label(votes, "majority:v0,v1,v2", P) == "harmful"
    assert read_label(dict(votes, v2="Safe"), "majority:v0,v1,v2", P) == "unharmful"


@pytest.mark.parametrize("spec", ["l", "flag:t", "not:safe", "any:a,b", "majority:v0,v1"])
def test_a_row_without_the_columns_is_unlabelled_never_negative(spec):
    # Evaluation's and training's copies used to disagree here (one said unharmful, the other None).
    assert read_label({"l": None, "t": None, "safe": None, "a": None, "b": "", "v0": None, "v1": ""}, spec, P) is None


def test_unknown_specs_fail_when_declared():
    with pytest.raises(ValueError, match="unknown label spec"):
        check_spec("most:a,b")
    with pytest.raises(ValueError, match="names no column"):
        check_spec("any:")
    check_spec("majority:a,b")
