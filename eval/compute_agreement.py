"""Which CTranslate2 compute types keep the embedded guard's verdicts, and which of those is fastest here.

    .venv/bin/python -m eval.compute_agreement --data-dir ../shared/benchmarks/guardreasoner \
        --out runs/compute-types --write assets/embedded-guard/compute-types.json

Each compute type runs the same seeded held-out rows (by default 40 of each of the test halves of ToxicChat,
WildGuardTest and BeaverTails and of OpenAIModeration and SafeRLHF: 200 rows, as ``benchmarks/engine_quality.sh``)
through an ordinary resumable ``eval run`` folder (``OUT/<compute type>``), full reasoning, greedy, at most 512 new
tokens, batch 8. Rerun the command to resume. Then it prints, per compute type, its verdict agreement with
float32 (``eval/engine_agreement.py``'s reading: every verdict a row asks for, "no verdict" counting as a value)
and its speed (rows over the summed generation time of its records, so loading and resumption do not count), and
names the fastest type agreeing on at least ``--min-agreement`` of the verdicts. The types run benchmark by
benchmark, and a type that can no longer reach ``--min-agreement`` over the whole sample (even agreeing on every
verdict still to come) stops there; once every other type has stopped, so does the reference (``--complete`` runs
everything).

``--write`` stores that as the adapter's measured table (``compute-types.json`` beside the adapter), which the
CTranslate2 backend reads to choose its compute type at run time (``choose_measured``). Agreement is a property of
the numerics; speed is one of the CPU, so each machine's speeds are kept under its CPU's speed flags, and a machine
with other flags adds its own entry when it runs the same command (an entry of the same flags is replaced). Only
complete runs are written (a type stopped out of reach counts as complete, with its partial figures and the
``at_most`` share it could have reached); the table names the adapter weights it was measured for, so a retrained
adapter does not inherit it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from guardreasoner.backends.ctranslate2_backend import (
    COMPUTE_TYPES,
    SPEED_FLAGS,
    choose_measured,
    cpu_flags,
    supported_compute_types,
)
from guardreasoner.cascade import needed_keys
from guardreasoner.models import adapter_weights_id, resolve_model
from guardreasoner.predictions import read_run
from guardreasoner.rows import seeded_sample

from .data import load_benchmark
from .engine_agreement import agreement, verdicts_by_row
from .run import split_part

REFERENCE = "float32"
HELD_OUT = ("ToxicChat", "WildGuardTest", "BeaverTails", "OpenAIModeration", "SafeRLHF")
CPU_TYPES = ("float32", "int8", "int8_float32", "int8_bfloat16", "bfloat16")  # float16 types are for GPUs


def eval_run(args, compute_type: str, benchmarks: list[str]) -> None:
    """One compute type's ``eval run`` folder, made or completed (eval run resumes after the rows it has)."""
    command = [sys.executable, "-m", "eval", "run", "--model", args.model, "--data-dir", args.data_dir,
               "--benchmarks", *benchmarks, "--split", "test", "--sample", str(args.sample),
               "--seed", str(args.seed), "--max-new-tokens", str(args.max_new_tokens), "--batch-size", "8",
               "--backend", "ctranslate2", "--compute-type", compute_type, "--reasoning", "full",
               "--out", str(args.out / compute_type)]
    if compute_type == REFERENCE and args.reuse_reference:
        command += ["--reuse", *args.reuse_reference]
    print(" ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, env=os.environ | {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})


def verdicts_asked(args) -> int:
    """How many verdicts the whole seeded sample asks for (the request's on every row, the reply's two where
    there is a reply): the denominator a partial run's agreement is bounded against."""
    total = 0
    for benchmark in args.benchmarks:
        rows = seeded_sample(split_part(load_benchmark(benchmark, args.data_dir), benchmark, "test"), args.sample,
                             args.seed)
        total += sum(len(needed_keys(row.response)) for row in rows)
    return total


def best_possible(found: dict, total_verdicts: int) -> float:
    """The highest agreement a type can still reach over ``total_verdicts`` if it agreed on every verdict it has
    not yet been compared on."""
    return (found["agreed"] + total_verdicts - found["verdicts"]) / total_verdicts


def speed(run: Path) -> tuple[int, int, float]:
    """(rows, generated tokens, summed generation seconds) of a run folder's records."""
    records = read_run(run)
    return (len(records), sum(record.output_tokens or 0 for record in records),
            sum(record.latency_s or 0.0 for record in records))


def measure(runs: dict[str, Path], total_verdicts: int) -> dict[str, dict]:
    """Per compute type: rows, verdicts, agreed verdicts, agreement share with the reference, the best share it
    can still reach over the whole sample, rows/s."""
    reference = verdicts_by_row(runs[REFERENCE])
    figures = {}
    for kind, run in runs.items():
        found = agreement(reference, verdicts_by_row(run))
        rows, tokens, seconds = speed(run)
        figures[kind] = {"rows": rows, "compared_rows": found["rows"], "verdicts": found["verdicts"],
                         "agreed": found["agreed"], "agreement": found["share"],
                         "at_most": best_possible(found, total_verdicts), "generation_s": round(seconds, 1),
                         "rows_per_s": rows / seconds if seconds else None,
                         "tokens_per_s": tokens / seconds if seconds else None}
    return figures


def markdown(figures: dict[str, dict], min_agreement: float) -> str:
    lines = ["| compute type | rows | verdicts | agree with float32 | share | at most, whole sample | generation s "
             f"| rows/s | tokens/s | >= {100 * min_agreement:.0f}% |", "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, f in figures.items():
        share = "—" if f["agreement"] is None else f"{100 * f['agreement']:.1f}%"
        rate = "—" if f["rows_per_s"] is None else f"{f['rows_per_s']:.3f} | {f['tokens_per_s']:.1f}"
        ok = "yes" if (f["agreement"] or 0) >= min_agreement else "no"
        if f["at_most"] < min_agreement:
            ok = "no (out of reach)"
        lines.append(f"| {kind} | {f['rows']} | {f['verdicts']} | {f['agreed']} | {share} | {100 * f['at_most']:.1f}% "
                     f"| {f['generation_s']:.0f} | {rate} | {ok} |")
    return "\n".join(lines)


def table(figures: dict[str, dict], args, weights: str, flags: frozenset[str], previous: dict | None) -> dict:
    """The measured table (see the module docstring), this CPU's speeds merged into a previous table's."""
    here = sorted(flags & SPEED_FLAGS)
    speeds = [entry for entry in (previous or {}).get("speed", [])
              if previous.get("weights") == weights and sorted(set(entry["flags"]) & SPEED_FLAGS) != here]
    speeds.append({"flags": here, "cpu": cpu_name(), "cpus": os.cpu_count(),
                   "rows_per_s": {kind: round(f["rows_per_s"], 4) for kind, f in figures.items() if f["rows_per_s"]}})
    return {
        "weights": weights, "reference": REFERENCE, "min_agreement": args.min_agreement,
        "agreement": {kind: round(f["agreement"], 4) for kind, f in figures.items()},
        "verdicts": {kind: f["verdicts"] for kind, f in figures.items()},
        # a type stopped once it could no longer reach min_agreement was compared on part of the rows only
        "at_most": {kind: round(f["at_most"], 4) for kind, f in figures.items()},
        "rows": {"benchmarks": list(args.benchmarks), "split": "test", "sample": args.sample, "seed": args.seed,
                 "max_new_tokens": args.max_new_tokens, "batch_size": 8},
        "command": "python -m eval.compute_agreement " + " ".join(sys.argv[1:]),
        "speed": speeds,
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.compute_agreement", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", type=Path, required=True, help="one eval run folder per compute type under it")
    parser.add_argument("--model", default="embedded", help="an adapter model (default: the embedded guard)")
    parser.add_argument("--compute-types", nargs="+", choices=CPU_TYPES, default=list(CPU_TYPES),
                        help="float32 is always run (the reference); those CTranslate2 does not run on this CPU "
                             "are skipped, with a note")
    parser.add_argument("--benchmarks", nargs="+", default=list(HELD_OUT))
    parser.add_argument("--sample", type=int, default=40, help="seeded rows of each benchmark's test part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--min-agreement", type=float, default=0.98)
    parser.add_argument("--complete", action="store_true",
                        help="run every type on every row (by default a type stops, benchmark by benchmark, once "
                             "it can no longer reach --min-agreement, and the reference stops with the last)")
    parser.add_argument("--reuse-reference", nargs="*", default=[], metavar="RUN",
                        help="float32 eval run folders of these same adapter weights whose rows are copied")
    parser.add_argument("--write", type=Path, help="the measured table to write (e.g. "
                        "assets/embedded-guard/compute-types.json, beside the adapter it was measured for)")
    args = parser.parse_args(argv)
    supported = supported_compute_types()
    kinds = [REFERENCE] + [kind for kind in args.compute_types if kind != REFERENCE]
    for kind in [k for k in kinds if k not in supported]:
        print(f"{kind}: skipped, CTranslate2 does not run it on this CPU (it would substitute another type; "
              f"it runs {', '.join(sorted(supported))})", file=sys.stderr)
    kinds = [kind for kind in kinds if kind in supported and kind in COMPUTE_TYPES]
    runs = {kind: args.out / kind for kind in kinds}
    total_verdicts = verdicts_asked(args)
    running = list(kinds)
    for benchmark in args.benchmarks:  # benchmark by benchmark, so a type out of reach stops early
        for kind in running:
            eval_run(args, kind, [benchmark])
        figures = measure({kind: run for kind, run in runs.items() if run.is_dir()}, total_verdicts)
        for kind in [k for k in running if k != REFERENCE and figures[k]["at_most"] < args.min_agreement]:
            if not args.complete:
                print(f"{kind}: stopped after {benchmark}, out of reach: {figures[kind]['agreed']} of "
                      f"{figures[kind]['verdicts']} verdicts agree, at most {100 * figures[kind]['at_most']:.1f}% "
                      f"of the sample's {total_verdicts} can", file=sys.stderr)
                running.remove(kind)
        if running == [REFERENCE] and len(kinds) > 1:
            print("every other type is out of reach: the reference stays, nothing more to run", file=sys.stderr)
            break
    figures = measure(runs, total_verdicts)
    flags = cpu_flags()
    print(f"\n{cpu_name()}, {os.cpu_count()} CPUs, speed flags {' '.join(sorted(flags & SPEED_FLAGS)) or 'none'}; "
          f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print(markdown(figures, args.min_agreement))
    spec = resolve_model(args.model)
    if spec.kind not in ("embedded", "adapter") or not spec.location:
        print(f"\n{args.model} is not an adapter: no measured table is written for it", file=sys.stderr)
        return
    adapter = Path(spec.location)
    weights = adapter_weights_id(adapter)
    previous_path = args.write if args.write and args.write.is_file() else None
    previous = json.loads(previous_path.read_text()) if previous_path else None
    measured = table(figures, args, weights, flags, previous)
    print(f"\nchosen on this CPU: {choose_measured(measured, supported=supported, flags=flags)} (the fastest with "
          f">= {100 * args.min_agreement:.0f}% of verdicts agreeing with float32)")
    if args.write:
        reference_rows = figures[REFERENCE]["rows"]
        in_reach = [f for kind, f in figures.items() if kind != REFERENCE and f["at_most"] >= args.min_agreement]
        complete = all(f["compared_rows"] == f["rows"] for f in figures.values()) and all(
            f["rows"] == reference_rows for f in in_reach) and (
            figures[REFERENCE]["verdicts"] == total_verdicts or not in_reach)
        if not complete:
            raise SystemExit("the runs hold different rows (one is unfinished): rerun to complete them first")
        if args.write.resolve().parent != adapter.resolve():
            print(f"note: {args.write} is not beside the adapter {adapter}; the backend reads "
                  f"{adapter}/compute-types.json", file=sys.stderr)
        args.write.write_text(json.dumps(measured, indent=2) + "\n")
        print(f"written: {args.write}")


if __name__ == "__main__":
    main()
