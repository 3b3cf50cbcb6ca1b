"""Command line: classify text or files, print the exact model input, parse existing generations, serve."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .backends.ctranslate2_backend import COMPUTE_TYPES
from .cascade import REASONING_MODES, RECOMMENDED
from .cli_support import RenamedFlag, debug_option, run_command
from .models import DEFAULT_MODEL
from .policy_cli import POLICY_HELP, add_policy_command, run_policy
from .proxy import add_proxy_command, run_proxy
from .results import VERDICT_KEYS

OPERATING_POINT_HELP = ("a folder `calibrate` wrote for this model and reasoning mode: its thresholds choose every "
                        "verdict's label, and each result names it")


def add_model_options(parser: argparse.ArgumentParser, *, model_required: bool = False,
                      reasoning_default: str = RECOMMENDED, sampling_options: bool = True) -> None:
    """The options that load a guard, one definition for every command that loads one (``classify``, ``serve``,
    ``eval run``): the same names, choices and help. ``eval run`` passes ``model_required`` (a measurement names its
    model), ``reasoning_default="full"`` (and its mode stated; no ``recommended``) and no sampling options (greedy,
    never the fallback model)."""
    parser.add_argument("--model", required=model_required, default=None if model_required else DEFAULT_MODEL,
                        help="GuardReasoner-1B/3B/8B, a hub id, a local folder, 'embedded', "
                             "or an OpenAI-compatible URL")
    parser.add_argument("--backend", default="auto", choices=["auto", "transformers", "ctranslate2", "vllm", "openai"])
    parser.add_argument("--prompt-format", "--mode", action=RenamedFlag, choices=["raw", "chat"],
                        help="raw text or the chat template (default: the model's own; --mode is the old name)")
    parser.add_argument("--compute-type", choices=COMPUTE_TYPES,
                        help="CTranslate2's compute type (default: the one measured fastest of those that agree with "
                             "float32 on this CPU, where the model's adapter ships that table; else int8 for models "
                             "of 1B and up, float32 for smaller ones)")
    parser.add_argument("--max-new-tokens", type=int, default=2048)
    if sampling_options:
        parser.add_argument("--temperature", type=float, default=0.0)
        parser.add_argument("--no-fallback", action="store_true",
                            help="fail instead of using the embedded model when the hub model cannot be loaded")
    modes = (*REASONING_MODES, RECOMMENDED) if reasoning_default == RECOMMENDED else REASONING_MODES
    recommended = ("; recommended: the mode measured best for the model (off for the embedded guard, full for "
                   "models without a screen)" if RECOMMENDED in modes else "")
    parser.add_argument("--reasoning", choices=modes, default=reasoning_default,
                        help="full: reason on every item; off: the screen's verdicts only; auto: the screen where it "
                        f"is sure, reasoning for the rest{recommended} (default: {reasoning_default})")
    parser.add_argument("--screen", help="screen folder for --reasoning off/auto (default: the model's own)")
    parser.add_argument("--policy", action="append", help=POLICY_HELP)


def _load(args, **options):
    from .loading import load_guard

    guard = load_guard(
        args.model, args.backend, mode=args.prompt_format, fallback=not args.no_fallback,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, compute_type=args.compute_type,
        reasoning=getattr(args, "reasoning", RECOMMENDED), screen=getattr(args, "screen", None),
        operating_point=getattr(args, "operating_point", None), policies=getattr(args, "policy", None), **options,
    )
    if guard.fallback_reason:
        print(f"note: using the embedded model {guard.model_name} ({guard.fallback_reason})", file=sys.stderr)
    return guard


def _verdict_line(result) -> str:
    parts = []
    for key in VERDICT_KEYS:
        verdict = result.verdicts[key]
        note = " (fail-closed)" if verdict.fail_closed else " (recovered)" if verdict.recovered else ""
        note += " (screen)" if verdict.decided_by == "screen" else ""
        confidence = f" p={verdict.confidence:.2f}" if verdict.confidence is not None else ""
        parts.append(f"{key}: {verdict.label}{note}{confidence}")
    return " | ".join(parts) + f"   [{result.status}, {result.output_tokens} tokens, {result.latency_s:.2f}s]"


def _classify_text(args) -> int:
    guard = _load(args)
    result = None
    for update in guard.stream(args.text, args.response):
        if update.delta and not args.json:
            print(update.delta, end="", flush=True)
        result = update.result or result
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print("\n\n" + _verdict_line(result))
    return 0


def _classify_file(args) -> int:
    from tqdm.auto import tqdm

    from .rows import append_lines, classify_rows, done_lines, split_rows

    output = Path(args.output)
    done = done_lines(output)
    rows, errors = split_rows(args.input)
    for error in errors:
        print(f"{args.input}: {error}", file=sys.stderr)
    rows = [row for row in rows if row.line not in done]
    if done:
        print(f"resuming: {len(done)} rows already in {output}, {len(rows)} to go", file=sys.stderr)
    if rows:
        guard = _load(args)
        with tqdm(total=len(rows), desc="classify", unit="row") as bar:
            for records in classify_rows(guard, rows, args.batch_size):
                # Synced per batch: a finished batch survives an interruption, and a rerun resumes after it.
                append_lines(output, [json.dumps(record, ensure_ascii=False) for record in records])
                bar.update(len(records))
    if errors:
        print(f"{len(errors)} row(s) skipped because of errors (see above); the others are in {output}",
              file=sys.stderr)
        return 1
    return 0


def _calibrate(args) -> int:
    from .operating_point import calibrate, check_holdout, summary_lines

    check_holdout(args.holdout)  # before the model loads
    point = calibrate(_load(args), args.data, args.out, target_fpr=args.target_fpr, target_recall=args.target_recall,
                      screen=args.screen, batch_size=args.batch_size, holdout=args.holdout, seed=args.seed,
                      recalibration=args.recalibration)
    print("\n".join(summary_lines(point)))
    print(f"wrote {Path(args.out) / 'operating_point.json'}")
    return 0


def _prompt(args) -> int:
    from .template import build_prompt, render

    tokenizer = None
    if args.prompt_format == "chat":
        from transformers import AutoTokenizer

        from .models import model_folder, resolve_model

        tokenizer = AutoTokenizer.from_pretrained(model_folder(resolve_model(args.model, fallback=True)))
    built = build_prompt(args.prompt, args.response)
    sys.stdout.write(render(built.text, args.prompt_format, tokenizer))
    return 0


def _parse(args) -> int:
    from .predictions import Prediction

    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    bad = 0
    try:
        with open(args.input, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                record = {key: None for key in VERDICT_KEYS} | {"parse_error": True}
                try:
                    row = json.loads(line)
                    text = row[args.field]
                    if not isinstance(text, str):
                        raise TypeError(f"'{args.field}' is not text")
                    # The user's texts as every reader of prediction files takes them (any of the file's shapes),
                    # so a row parses here exactly as the scorer and training read it.
                    prediction = Prediction.from_dict({**row, "predict": text}, line=number - 1, where=args.input)
                except (KeyError, TypeError, ValueError) as error:  # ValueError: bad JSON or a bad record
                    bad += 1
                    print(f"{args.input}: line {number}: {error}", file=sys.stderr)
                    out.write(json.dumps(record) + "\n")
                    continue
                parsed = prediction.parsed()
                record = parsed.labels | {"parse_error": parsed.parse_error}
                if args.details:
                    record |= {"status": parsed.status, "flags": parsed.flags,
                               "sources": {k: v.source for k, v in parsed.verdicts.items()}}
                out.write(json.dumps(record) + "\n")
    finally:
        if args.out:
            out.close()
    return 1 if bad else 0


def _serve(args) -> int:
    from .serve import ServiceSettings, serve
    from .service.security import load_keys

    keys = load_keys(args.api_key, args.api_key_file)  # a bad key or file: main's one-line error
    settings = ServiceSettings(
        api_keys=keys, max_items=args.max_items, max_item_chars=args.max_item_chars,
        max_new_tokens=args.max_new_tokens, max_body_bytes=args.max_body_bytes,
        request_timeout_s=args.request_timeout, batch_max_size=args.batch_max_size, batch_wait_ms=args.batch_wait_ms,
    )
    serve(args.model, host=args.host, port=args.port, backend=args.backend, mode=args.prompt_format,
          fallback=not args.no_fallback, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
          settings=settings, served_name=args.served_name, reasoning=args.reasoning, screen=args.screen or "shipped",
          operating_point=args.operating_point, policies=args.policy, releases=args.releases)
    return 0


def build_parser() -> argparse.ArgumentParser:
    debug = debug_option()
    parser = argparse.ArgumentParser(prog="python -m guardreasoner", description=__doc__, parents=[debug])
    commands = parser.add_subparsers(dest="command", required=True)

    classify = commands.add_parser("classify", parents=[debug],
                                   help="classify a request (and reply), or a JSONL/CSV file")
    classify.add_argument("text", nargs="?", help="the user's request")
    classify.add_argument("--response", help="the AI reply to judge (optional)")
    classify.add_argument("--input", help="rows.jsonl or rows.csv with 'prompt' and optional 'response'")
    classify.add_argument("--output", help="results.jsonl (appended; rows already there are skipped)")
    classify.add_argument("--batch-size", type=int, default=16)
    classify.add_argument("--json", action="store_true", help="print the result as JSON")
    add_model_options(classify)
    classify.add_argument("--operating-point", help=OPERATING_POINT_HELP)

    calibrate = commands.add_parser(
        "calibrate", parents=[debug], help="choose per-verdict thresholds for a target false-positive rate or recall "
        "from labelled rows, and write them as an operating point folder")
    calibrate.add_argument("--data", required=True, help="rows.csv or rows.jsonl: 'prompt', optional 'response', and "
                           f"gold labels under {', '.join(VERDICT_KEYS)} (a row may label only some)")
    target = calibrate.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-fpr", type=float, help="the highest recall at a false-positive rate <= this")
    target.add_argument("--target-recall", type=float, help="the lowest false-positive rate at a recall >= this")
    calibrate.add_argument("--out", required=True, help="the operating point folder to write (OUT.partial keeps "
                           "the rows classified so far: a rerun resumes there)")
    calibrate.add_argument("--batch-size", type=int, default=16)
    calibrate.add_argument("--holdout", type=float, help="a share of the rows (e.g. 0.5) kept apart, stratified by "
                           "their labels: the thresholds are chosen on the rest, and what they reach on these is "
                           "reported beside the target")
    calibrate.add_argument("--seed", type=int, default=0, help="seed of --holdout's split and of the bootstrap")
    calibrate.add_argument("--recalibration", choices=("platt", "none"), default="platt",
                           help="platt (default): fit a map per verdict on the rows so that each result's "
                           "probability means what it says on them, and choose the thresholds on it; none: keep "
                           "the probabilities as the guard gives them")
    add_model_options(calibrate, sampling_options=False)
    calibrate.set_defaults(temperature=0.0, no_fallback=True)  # greedy, and the model named or nothing

    prompt = commands.add_parser("prompt", parents=[debug], help="print the exact model input")
    prompt.add_argument("--prompt", required=True)
    prompt.add_argument("--response")
    prompt.add_argument("--prompt-format", "--mode", action=RenamedFlag, choices=["raw", "chat"], default="raw",
                        help="raw text (default) or the chat template (--mode is the old name)")
    prompt.add_argument("--model", default="embedded", help="whose chat template to use with --prompt-format chat")

    parse = commands.add_parser("parse", parents=[debug],
                                help="parse existing generations (e.g. generated_predictions.jsonl)")
    parse.add_argument("input")
    parse.add_argument("--field", default="predict")
    parse.add_argument("--out")
    parse.add_argument("--details", action="store_true", help="add status, flags and verdict sources")

    serve = commands.add_parser(
        "serve", parents=[debug], help="serve the guard over HTTP: /v1/classify, /v1/classify/stream, /health, "
        "/metrics; --max-new-tokens is also the cap a request may ask for")
    add_model_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="beyond loopback only with an API key")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-name", help="the model name the answers and /health give (default: the model's)")
    serve.add_argument("--api-key", action="append", help="a key clients send as 'Authorization: Bearer KEY' "
                       "(repeatable; or the GUARDREASONER_API_KEY variable, which keeps it out of `ps`)")
    serve.add_argument("--api-key-file", help="a file of keys, one a line")
    serve.add_argument("--batch-max-size", type=int, default=8,
                       help="items generated together at most (local backends); 1 turns batching off")
    serve.add_argument("--batch-wait-ms", type=float, default=10.0,
                       help="how long the first request of a batch waits for others")
    serve.add_argument("--max-items", type=int, default=32, help="items per request at most")
    serve.add_argument("--max-item-chars", type=int, default=20_000, help="characters per prompt or response")
    serve.add_argument("--max-body-bytes", type=int, default=1_000_000)
    serve.add_argument("--request-timeout", type=float, default=300.0, help="seconds a request may take")
    serve.add_argument("--operating-point", action="append",
                       help="a folder `calibrate` wrote for this model (repeatable): requests choose one by its "
                       "folder's name (`operating_point`); the first applies to requests that name none, in its mode")
    serve.add_argument("--releases", default=os.environ.get("GUARDREASONER_RELEASES"),
                       help="a releases folder python -m training.loop ships to: its current release's screen is "
                       "served and followed without a restart (POST /v1/reload, and a look every few seconds); "
                       "default: $GUARDREASONER_RELEASES")
    add_proxy_command(commands, [debug], add_model_options)
    add_policy_command(commands, [debug])
    return parser


def _command(args) -> int:
    if args.command == "classify":
        if args.input:
            if not args.output:
                raise ValueError("--input needs --output")
            return _classify_file(args)
        if not args.text:
            raise ValueError("give the request text, or --input FILE --output FILE")
        return _classify_text(args)
    if args.command == "proxy":
        return run_proxy(args, _load)
    if args.command == "policy":
        return run_policy(args)
    return {"prompt": _prompt, "parse": _parse, "serve": _serve, "calibrate": _calibrate}[args.command](args)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 on success; on an error one line on stderr and status 2 (the traceback with --debug)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return run_command(_command, build_parser().parse_args(argv))
