"""How often engines give the same verdicts on the same rows, and each run's strict F1. Prints; asserts nothing.

    .venv/bin/python -m eval.engine_agreement --reference transformers-float32=runs/quality/transformers-float32 \
        ctranslate2-float32=runs/quality/ctranslate2-float32 ctranslate2-int8=runs/quality/ctranslate2-int8

Each argument is an ``eval run`` folder over the same seeded rows (``benchmarks/engine_quality.sh`` makes them).
A verdict is one of the verdicts a row asks for (the request's always, the reply's two where there is a reply),
parsed by the core parser from each run's output; "no verdict" is a value like any other, so a run that fails
to answer where the reference answers disagrees. Only rows present in both runs are compared.

With ``--times FILE`` (lines ``NAME SECONDS s``, as engine_quality.sh writes them) it also prints each run's
rows/s over its whole wall time (loading included) and the share of rows that reached the reasoning model
(every row in a full run; in ``auto`` those with a verdict the screen left undecided).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from guardreasoner.cascade import needed_keys
from guardreasoner.predictions import read_run

from .report import compare_markdown
from .score import score_run


def verdicts_by_row(run: Path) -> dict[tuple[str, str, str | None], dict[str, str | None]]:
    """(benchmark, prompt, response) -> the parsed verdict of each key the row asks for."""
    out = {}
    for row in read_run(run):
        labels = row.parsed().labels
        out[(row.benchmark, row.prompt, row.response)] = {key: labels.get(key) for key in needed_keys(row.response)}
    return out


def agreement(reference: dict, other: dict) -> dict:
    by_benchmark: dict[str, list[int]] = {}
    for row, verdicts in reference.items():
        if row not in other:
            continue
        tally = by_benchmark.setdefault(row[0], [0, 0])
        for key, label in verdicts.items():
            tally[0] += other[row].get(key) == label
            tally[1] += 1
    agreed, total = (sum(t[i] for t in by_benchmark.values()) for i in (0, 1))
    return {"agreed": agreed, "verdicts": total, "share": agreed / total if total else None,
            "rows": sum(row in other for row in reference), "by_benchmark": by_benchmark}


def reasoning_share(run: Path) -> tuple[int, int]:
    """(rows the reasoning model decided some verdict of, rows); rows without ``decided_by`` were all reasoned."""
    records = read_run(run)
    reasoned = sum(r.decided_by is None or "reasoning" in r.decided_by.values() for r in records)
    return reasoned, len(records)


def wall_times(path: Path) -> dict[str, float]:
    times = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, seconds, *_ = line.split()
        times[name] = times.get(name, 0.0) + float(seconds)  # a resumed run adds its parts
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.engine_agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="NAME=RUN_FOLDER that the others are compared with")
    parser.add_argument("runs", nargs="+", help="NAME=RUN_FOLDER")
    parser.add_argument("--times", type=Path, help="wall times, one 'NAME SECONDS s' line per run (or part)")
    args = parser.parse_args(argv)
    runs = dict(spec.split("=", 1) for spec in [args.reference, *args.runs])
    reference_name = args.reference.split("=", 1)[0]
    reference = verdicts_by_row(Path(runs[reference_name]))
    print(f"## Verdict agreement with {reference_name}\n")
    print("| run | rows | verdicts | agree | share | per benchmark |\n|---|---|---|---|---|---|")
    for name, folder in runs.items():
        if name == reference_name:
            continue
        found = agreement(reference, verdicts_by_row(Path(folder)))
        share = "—" if found["share"] is None else f"{100 * found['share']:.1f}%"
        detail = ", ".join(f"{b} {a}/{t}" for b, (a, t) in sorted(found["by_benchmark"].items()))
        print(f"| {name} | {found['rows']} | {found['verdicts']} | {found['agreed']} | {share} | {detail} |")
    reports = {name: score_run(Path(folder), "strict") for name, folder in runs.items()}
    print("\n## Strict F1 (%), 95% intervals\n")
    print(compare_markdown(reports))
    times = wall_times(args.times) if args.times else {}
    print("\n| run | rows | reached the reasoning model | wall s | rows/s |\n|---|---|---|---|---|")
    for name, folder in runs.items():
        reasoned, total = reasoning_share(Path(folder))
        wall = times.get(name)
        speed = f"{total / wall:.3f}" if wall and total else "—"
        share = f"{reasoned} ({100 * reasoned / total:.0f}%)" if total else "—"
        print(f"| {name} | {total} | {share} | {'—' if wall is None else f'{wall:.0f}'} | {speed} |")


if __name__ == "__main__":
    main()
