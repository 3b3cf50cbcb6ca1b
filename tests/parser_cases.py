"""Real GuardReasoner outputs vendored in tests/fixtures/parser_cases.jsonl (provenance in tests/fixtures/README.md),
so the parser tests run in a bare clone; the whole-corpus tests still read ../shared where it exists."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from guardreasoner.rows import read_jsonl

CASES_FILE = Path(__file__).resolve().parent / "fixtures" / "parser_cases.jsonl"


@cache
def parser_cases() -> dict[str, dict]:
    """Each case by name: {case, exercises, source: {file, line}, row: {prompt, label, predict}, expect}."""
    return {case["case"]: case for case in read_jsonl(CASES_FILE)}


def vendored_row(model: str, benchmark: str, index: int) -> dict:
    """Row ``index`` (0-based) of shared/predictions/<model>/<benchmark>/generated_predictions.jsonl, from the
    vendored copy."""
    file = f"predictions/{model}/{benchmark}/generated_predictions.jsonl"
    for case in parser_cases().values():
        if case["source"] == {"file": file, "line": index + 1}:
            return dict(case["row"])
    raise KeyError(f"{file} line {index + 1} is not vendored: add it in tests/fixtures/vendor_parser_cases.py")
