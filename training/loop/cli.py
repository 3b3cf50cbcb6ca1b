"""``python -m training.loop [rollback|status|withdraw]``: one round of the loop, or a move of the served release.

    python -m training.loop --data-dir ../shared/benchmarks/guardreasoner --flags flagged/queue.jsonl
    python -m training.loop --dry-run
    python -m training.loop rollback
    python -m training.loop withdraw --round 2      # a refused round's corrections out of every later round

The state folder is --state (default $GUARDREASONER_LOOP_STATE or runs/loop); releases live in --releases
(default STATE/releases; serving reads the same folder from $GUARDREASONER_RELEASES). Reviews come from the
Argilla server of ARGILLA_API_URL / ARGILLA_API_KEY (none set: flags only, and the round says so).

Exit status: 0 shipped, nothing new, nothing to learn or a dry run; 1 refused by the gate; 3 Argilla
unreachable (nothing used: run again later); 2 an error (another loop running, bad input).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from guardreasoner.cli_support import debug_option, run_command

from .collect import default_flag_queue
from .learn import LearnSettings
from .releases import Releases
from .round import DEFAULT_BASE_SCREEN, DEFAULT_DATA_DIR, RoundConfig, run_round
from .state import Lock, LoopState, default_state

STATUS = {"refused": 1, "argilla-unreachable": 3}
COMMANDS = ("rollback", "status", "withdraw")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--state", type=Path, default=None, help="the loop's state folder")
    parser.add_argument("--releases", type=Path, default=None, help="the releases folder (default STATE/releases)")


def round_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.loop", description=__doc__.split("\n\n")[0],
                                     parents=[debug_option()])
    _common(parser)
    parser.add_argument("--dry-run", action="store_true", help="say what a round would do; change nothing")
    parser.add_argument("--flags", type=Path, default=None,
                        help="the app's flag queue (default $GUARDREASONER_FLAG_QUEUE or flagged/queue.jsonl)")
    parser.add_argument("--no-reviews", action="store_true", help="do not read Argilla, even if configured")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("GUARDREASONER_BENCHMARKS", DEFAULT_DATA_DIR)),
                        help="the GuardReasoner benchmark folder (default $GUARDREASONER_BENCHMARKS or "
                             f"{DEFAULT_DATA_DIR})")
    parser.add_argument("--splits-dir", type=Path, default=None, help="the split files (default assets/splits)")
    parser.add_argument("--sample", type=int, default=None, help="test rows per benchmark (seeded; default all)")
    parser.add_argument("--fit-sample", type=int, default=None, help="fit rows (seeded; default all)")
    parser.add_argument("--base-screen", type=Path, default=DEFAULT_BASE_SCREEN,
                        help="the screen the first round starts from (becomes v0000)")
    defaults = LearnSettings()
    parser.add_argument("--correction-weight", type=float, default=defaults.correction_weight)
    parser.add_argument("--l2", type=float, default=defaults.l2,
                        help="the pull of each head towards the shipped one")
    parser.add_argument("--boosts", type=int, default=defaults.boosts,
                        help="refits that raise the weight of corrections still answered wrongly")
    parser.add_argument("--require-every-correction", action="store_true",
                        help="refuse a candidate that answers any correction wrongly (default: only a lost one)")
    parser.add_argument("--reasoning-model", help="HS-DPO starts from this model (run only where a GPU is)")
    parser.add_argument("--policy", type=Path, action="append", default=[], metavar="FOLDER",
                        help="a fitted custom policy the round refits where corrections name it (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        parser = argparse.ArgumentParser(prog=f"python -m training.loop {argv[0]}", parents=[debug_option()])
        _common(parser)
        if argv[0] == "withdraw":
            parser.add_argument("--round", type=int, action="append", default=[],
                                help="withdraw every correction this round added (repeatable)")
            parser.add_argument("--key", action="append", default=[], help="withdraw this item (repeatable)")
        args = parser.parse_args(argv[1:])
        return run_command({"rollback": _rollback, "status": _status, "withdraw": _withdraw}[argv[0]], args)
    return run_command(_round, round_parser().parse_args(argv))


def _paths(args) -> tuple[LoopState, Releases]:
    state = LoopState(args.state or default_state())
    return state, Releases(args.releases or state.root / "releases")


def _round(args) -> int:
    from .collect import argilla_reviews

    state, releases = _paths(args)
    config = RoundConfig(state.root, args.data_dir, releases.root, args.base_screen, args.flags or default_flag_queue(),
                         args.splits_dir, args.sample, args.fit_sample,
                         learn=LearnSettings(args.correction_weight, args.l2, args.boosts),
                         require_every_correction=args.require_every_correction,
                         reasoning_model=args.reasoning_model, policies=args.policy,
                         dry_run=args.dry_run)
    report = run_round(config, reviews=None if args.no_reviews else argilla_reviews)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        for sentence in report["said"]:
            print(sentence)
        for entry in report["left_out"]:
            print(f"left out {entry['source']} {entry['id']}: {entry['reason']}", file=sys.stderr)
        if report.get("version"):
            print(f"report: {releases.root / report['version'] / 'card' / 'report.md'}")
        elif report.get("gate"):
            print(f"report: {state.round_dir(report['round']) / 'report.md'}")
    return STATUS.get(report["outcome"], 0)


def _rollback(args) -> int:
    state, releases = _paths(args)
    with Lock(state):
        before, after = releases.rollback()
    print(f"serving {after} (was {before})")
    return 0


def _status(args) -> int:
    state, releases = _paths(args)
    rounds = state.rounds()
    last = {key: value for key, value in rounds[-1].items() if key != "inputs"} if rounds else None
    print(json.dumps({"current": releases.current(), "releases": releases.versions(), "rounds": len(rounds),
                      "last_round": last}, indent=2))
    return 0


def _withdraw(args) -> int:
    """Take corrections out of the training set and the regression set of every later round (a bad batch that
    got a round refused would otherwise refuse every round after it). Nothing served changes."""
    from .collect import current_corrections
    from .state import now

    state, _ = _paths(args)
    if not args.round and not args.key:
        raise ValueError("name what to withdraw: --round N or --key KEY")
    with Lock(state):
        current = current_corrections(state.correction_records())
        known_rounds = {entry["round"] for entry in state.rounds()}
        missing = [number for number in args.round if number not in known_rounds]
        if missing:
            raise ValueError(f"no round {missing[0]} in {state.rounds_file}")
        unknown = [key for key in args.key if key not in current]
        if unknown:
            raise ValueError(f"{unknown[0]}: no such correction in {state.corrections_file}")
        keys = list(dict.fromkeys(args.key + [key for key, record in current.items()
                                              if record.get("round") in args.round]))
        state.add_corrections([{"key": key, "withdrawn": True, "at": now(),
                                "why": f"withdrawn (rounds {args.round}, keys {args.key})"} for key in keys])
    print(f"withdrew {len(keys)} correction(s); {len(current) - len(keys)} remain")
    return 0
