"""``python -m annotate push|pull|status``: send disagreements to Argilla, bring reviews back as training data.

    python -m annotate push --flags flagged/queue.jsonl --eval-run runs/1b --mined runs/pairs-1b.jsonl
    python -m annotate pull --pairs runs/review_pairs.jsonl --sft runs/review_sft.jsonl [--weight 1.5]
        [--policy-examples runs/review_policy_flags.jsonl]   # then: guardreasoner policy fit NAME --flags FILE
    python -m annotate status          # how many items wait in the outbox

The server is ARGILLA_API_URL / ARGILLA_API_KEY; the dataset ANNOTATE_DATASET (default guardreasoner-reviews).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guardreasoner.cli_support import debug_option, run_command
from guardreasoner.rows import write_jsonl

from . import items as sources
from .pull import DEFAULT_WEIGHT, pull, reviews_from_argilla
from .push import outbox_path, pending, push
from .workspace import Target, dataset, missing_for_policies


def main(argv: list[str] | None = None) -> int:
    debug = debug_option()
    parser = argparse.ArgumentParser(prog="python -m annotate", description=__doc__.split("\n\n")[0],
                                     parents=[debug])
    parser.add_argument("--dataset", help="Argilla dataset name")
    parser.add_argument("--workspace", help="Argilla workspace (default: your first)")
    parser.add_argument("--outbox", type=Path, help=f"local outbox (default: $ANNOTATE_OUTBOX or {outbox_path()})")
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("push", parents=[debug],
                               help="queue items from the three sources and deliver the outbox")
    send.add_argument("--flags", type=Path, help="the app's flag queue (JSONL)")
    send.add_argument("--eval-run", type=Path, help="an `eval run` folder: rows the model got wrong")
    send.add_argument("--mined", type=Path, help="a `training.mine` pairs file")
    send.add_argument("--model", help="model name for eval/mined items (default: the run folder's name)")
    send.add_argument("--report", type=Path, help="also write the push's outcome (a PushReport) to this JSON file")
    receive = commands.add_parser("pull", parents=[debug], help="submitted reviews -> preference pairs (+ SFT rows)")
    receive.add_argument("--pairs", type=Path, required=True)
    receive.add_argument("--sft", type=Path, help="also write corrected reasoning as GuardReasonerTrain rows")
    receive.add_argument("--weight", type=float, default=DEFAULT_WEIGHT)
    receive.add_argument("--policy-examples", type=Path,
                         help="also write the agreed policy labels as flag records (JSONL) for "
                              "`python -m guardreasoner policy fit NAME --flags FILE`")
    commands.add_parser("status", parents=[debug], help="items waiting in the outbox")
    return run_command(_command, parser.parse_args(argv))


def _command(args) -> int:
    target = Target()
    target.dataset = args.dataset or target.dataset
    target.workspace = args.workspace or target.workspace
    outbox = args.outbox or outbox_path()
    if args.command == "push":
        found = []
        if args.flags and args.flags.exists():
            found += sources.from_flags(args.flags)
        if args.eval_run:
            found += sources.from_eval_run(args.eval_run, args.model)
        if args.mined:
            found += sources.from_mined(args.mined, args.model)
        report = push(found, target, outbox)
        if args.report:
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_text(json.dumps(report.to_dict()), encoding="utf-8")
        print(json.dumps(report.to_dict()))
        return 0 if report.error is None else 2
    if args.command == "pull":
        result = pull(reviews_from_argilla(target), args.weight)
        write_jsonl(result.pairs, args.pairs)
        if args.sft:
            write_jsonl(result.sft_rows, args.sft)
        if args.policy_examples:
            write_jsonl(result.policy_examples, args.policy_examples)
            missing = missing_for_policies(dataset(target, create=False))
            if missing:
                print(f"note: the dataset {target.dataset!r} was made by an earlier version and lacks "
                      f"{' and '.join(missing)}: its records carry no policy labels (make a new dataset, or set "
                      "ANNOTATE_DATASET, to review policies)", file=sys.stderr)
        for conflict in result.conflicts:
            about = f" for the policy {conflict['policy']}" if "policy" in conflict else ""
            print(f"conflict on record {conflict['id']}: reviewers disagree on {conflict['verdict']}{about}: "
                  f"{conflict['reviews']}", file=sys.stderr)
        counts = {"pairs": len(result.pairs), "sft_rows": len(result.sft_rows),
                  "conflicts": len(result.conflicts), "skipped": len(result.skipped)}
        if args.policy_examples:
            counts["policy_examples"] = len(result.policy_examples)
        print(json.dumps(counts))
        return 0
    print(json.dumps({"outbox": str(outbox), "pending": len(pending(outbox))}))
    return 0
