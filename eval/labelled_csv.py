"""A benchmark's labelled rows as a ``calibrate --data`` CSV: ``prompt``, ``response`` and the gold label under
each verdict name the benchmark labels. Rows that label none are left out, and so are exact repeats of an earlier
row's prompt and response (``calibrate`` refuses a file with repeats); both are counted on stderr.

    .venv/bin/python -m eval.labelled_csv OpenAIModeration --data-dir ../shared/benchmarks/guardreasoner \
        --out openai_moderation.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from guardreasoner.results import VERDICT_KEYS

from .data import load_benchmark, tasks_of
from .registry import BENCHMARKS


def labelled_rows(benchmark: str, data_dir: str | Path | None) -> tuple[list[dict], int, int]:
    """The CSV's rows, and how many rows were left out unlabelled and as repeats."""
    tasks = [key for key in VERDICT_KEYS if key in tasks_of(benchmark)]
    out, seen, unlabelled, repeats = [], set(), 0, 0
    for row in load_benchmark(benchmark, data_dir):
        labels = {key: row.labels.get(key) for key in tasks}
        if all(label is None for label in labels.values()):
            unlabelled += 1
            continue
        if (row.prompt, row.response) in seen:
            repeats += 1
            continue
        seen.add((row.prompt, row.response))
        out.append({"prompt": row.prompt, "response": row.response or "",
                    **{key: label or "" for key, label in labels.items()}})
    return out, unlabelled, repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.labelled_csv", description=__doc__.split("\n\n")[0])
    parser.add_argument("benchmark", choices=list(BENCHMARKS))
    parser.add_argument("--data-dir", help="the GuardReasoner benchmark files (default: the public hub dataset)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    rows, unlabelled, repeats = labelled_rows(args.benchmark, args.data_dir)
    with open(args.out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["prompt", "response", *[k for k in rows[0] if k in VERDICT_KEYS]])
        writer.writeheader()
        writer.writerows(rows)
    print(f"{args.out}: {len(rows)} rows ({unlabelled} unlabelled and {repeats} repeats left out)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
