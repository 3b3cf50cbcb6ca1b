"""python -m eval run|score: generate on the 13 benchmark cells, then score as the paper did or strictly."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guardreasoner.cli import add_model_options
from guardreasoner.cli_support import RenamedFlag, debug_option, run_command
from stagekit.splits import PARTS

from .registry import BENCHMARKS, cells_for


def _run(args) -> int:
    from guardreasoner import load_guard

    from .run import run_benchmark

    benchmarks = list(dict.fromkeys(cell.benchmark for cell in cells_for(args.benchmarks)))
    guard = load_guard(args.model, args.backend, mode=args.prompt_format, fallback=False, fail_closed=False,
                       max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                       compute_type=args.compute_type, reasoning=args.reasoning, screen=args.screen)
    out = Path(args.out)
    data_dir = Path(args.data_dir) if args.data_dir else None
    skipped = []
    for benchmark in benchmarks:
        try:
            made = run_benchmark(guard, benchmark, data_dir, out, limit=args.limit, batch_size=args.batch_size,
                                 sample=args.sample, seed=args.seed, part=args.split,
                                 reuse=[Path(folder) for folder in args.reuse])
        except (FileNotFoundError, ValueError) as error:  # one missing source does not stop the others
            skipped.append(benchmark)
            print(f"{benchmark}: skipped: {error}", file=sys.stderr)
            continue
        print(f"{benchmark}: {made} rows generated", file=sys.stderr)
    print(f"done: score it with  python -m eval score {out} --scoring strict", file=sys.stderr)
    return 1 if skipped else 0


def _score(args) -> int:
    from .report import to_html, to_markdown
    from .score import score_run

    report = score_run(args.run, args.scoring, args.data_dir)
    name = args.name or Path(args.run).name
    markdown = to_markdown(report, name)
    sys.stdout.write(markdown)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown)
    if args.html:
        Path(args.html).write_text(to_html(report, name))
    _write_curves(args, report, name)
    return 0


def _write_curves(args, report: dict, name: str) -> None:
    """The reliability, ROC and precision-recall page: at --curves, else beside the first report written
    (REPORT-curves.html)."""
    from .calibration import curves_html

    beside = next((Path(path) for path in (args.json, args.markdown, args.html) if path), None)
    target = Path(args.curves) if args.curves else beside.with_name(beside.stem + "-curves.html") if beside else None
    if target is None:
        return
    page = curves_html(report, name)
    if page is None:
        print("no reliability or ROC page: no cell's rows carry verdict probabilities (p_positive)", file=sys.stderr)
        return
    target.write_text(page)
    print(f"wrote {target}", file=sys.stderr)


def _compare(args) -> int:
    from stagekit.reports import current_report

    from .report import compare_markdown, joined_report

    parts: dict[str, list[dict]] = {}
    for spec in args.reports:
        name, _, path = spec.rpartition("=")
        parts.setdefault(name or Path(path).stem, []).append(current_report(json.loads(Path(path).read_text()), path))
    markdown = compare_markdown({name: joined_report(reports) for name, reports in parts.items()})
    sys.stdout.write(markdown)
    if args.markdown:
        Path(args.markdown).write_text(markdown)
    return 0


def build_parser() -> argparse.ArgumentParser:
    debug = debug_option()
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__, parents=[debug])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", parents=[debug], help="generate predictions for the benchmark rows (resumable)")
    add_model_options(run, model_required=True, reasoning_default="full", sampling_options=False)
    run.add_argument("--data-dir", help="folder with the GuardReasoner benchmark files (default: the public hub "
                     "datasets, which exist for 6 of the 11 benchmarks)")
    run.add_argument("--out", required=True, help="run folder; one sub-folder per benchmark")
    run.add_argument("--benchmarks", nargs="*", choices=list(BENCHMARKS))
    run.add_argument("--limit", type=int, help="first N rows of each benchmark")
    run.add_argument("--sample", type=int, help="a seeded random N rows of each benchmark (the same for every model)")
    run.add_argument("--seed", type=int, default=0, help="seed of --sample")
    run.add_argument("--split", choices=PARTS, help="only this part of the committed split (assets/splits); "
                     "'test' keeps OpenAIModeration and SafeRLHF whole, as they are never trained on")
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--reuse", nargs="*", default=[], metavar="RUN",
                     help="run folders of the same model and settings: rows of this sample found there are copied, "
                          "not generated again (e.g. a smaller --sample run grown to a larger one); in another "
                          "--reasoning mode their reasoning is replayed and the screen runs anew")
    score = commands.add_parser("score", parents=[debug],
                                help="F1 per cell and task for a run folder (ours or upstream's)")
    score.add_argument("run")
    score.add_argument("--scoring", "--mode", action=RenamedFlag, choices=["paper", "strict"], default="paper",
                       help="paper: upstream evaluate.py's reading and weights; strict: the core parser, rows as "
                       "labelled, bootstrap intervals (--mode is the old name)")
    score.add_argument("--data-dir", help="benchmark files, for WildGuardTest labels of upstream folders")
    score.add_argument("--name", help="the run's name in the reports")
    score.add_argument("--json")
    score.add_argument("--markdown")
    score.add_argument("--html")
    score.add_argument("--curves", help="the reliability diagrams, ROC and precision-recall curves of the cells "
                       "whose rows carry verdict probabilities, as HTML (default: REPORT-curves.html beside the "
                       "first of --json, --markdown, --html given)")
    compare = commands.add_parser("compare", parents=[debug],
                                  help="one table for several `score --json` reports on the same rows")
    compare.add_argument("reports", nargs="+", help="NAME=report.json (or report.json: named by its file); a NAME "
                         "given twice is one system whose reports score different benchmarks")
    compare.add_argument("--markdown")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command({"run": _run, "score": _score, "compare": _compare}[args.command], args)
