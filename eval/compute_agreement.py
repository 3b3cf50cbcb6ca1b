"""Which CTranslate2 compute types keep the embedded guard's verdicts, and which of those is fastest here.

    .venv/bin/python -m eval.compute_agreement --data-dir ../shared/benchmarks/guardreasoner \
        --out runs/compute-types --write assets/embedded-guard/compute-types.json

Each compute type runs the same seeded held-out rows (by default 40 of each of the test halves of ToxicChat,
WildGuardTest and BeaverTails and of OpenAIModeration and SafeRLHF: 200 rows, as ``benchmarks/engine_quality.sh``)
through an ordinary resumable ``eval run`` folder (``OUT/<compute type>``), full reasoning, greedy, at most 512 new
tokens, batch 8. Rerun the command to resume. Then it prints, per compute type, its verdict agreement with
float32 (``eval/engine_agreement.py``'s reading: every verdict a row asks for, "no verdict" counting as a value)
and its speed (rows over the summed generation time of its records, so loading and resumption do not count), and
names the fastest type agreeing on at least ``--min-agreement`` of the verdicts.

``--write`` stores that as the adapter's measured table (``compute-types.json`` beside the adapter), which the
CTranslate2 backend reads to choose its compute type at run time (``choose_measured``). Agreement is a property of
the numerics; speed is one of the CPU, so each machine's speeds are kept under its CPU's speed flags, and a machine
with other flags adds its own entry when it runs the same command (an entry of the same flags is replaced). Only
complete runs are written; the table names the adapter weights it was measured for, so a retrained adapter does
not inherit it.
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
from guardreasoner.models import adapter_weights_id, resolve_model
from guardreasoner.predictions import read_run

from .engine_agreement import agreement, verdicts_by_row

REFERENCE = "float32"
HELD_OUT = ("ToxicChat", "WildGuardTest", "BeaverTails", "OpenAIModeration", "SafeRLHF")
CPU_TYPES = ("float32", "int8", "int8_float32", "int8_bfloat16", "bfloat16")  # float16 types are for GPUs


def eval_run(args, compute_type: str) -> None:
    """One compute type's ``eval run`` folder, made or completed (eval run resumes after the rows it has)."""
    command = [sys.executable, "-m", "eval", "run", "--model", args.model, "--data-dir", args.data_dir,
               "--benchmarks", *args.benchmarks, "--split", "test", "--sample", str(args.sample),
               "--seed", str(args.seed), "--max-new-tokens", str(args.max_new_tokens), "--batch-size", "8",
               "--backend", "ctranslate2", "--compute-type", compute_type, "--reasoning", "full",
               "--out", str(args.out / compute_type)]
    if compute_type == REFERENCE and args.reuse_reference:
        command += ["--reuse", *args.reuse_reference]
    print(" ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True, env=os.environ | {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})


def speed(run: Path) -> tuple[int, int, float]:
    """(rows, generated tokens, summed generation seconds) of a run folder's records."""
    records = read_run(run)
    return (len(records), sum(record.output_tokens or 0 for record in records),
            sum(record.latency_s or 0.0 for record in records))


def measure(runs: dict[str, Path]) -> dict[str, dict]:
    """Per compute type: rows, verdicts, agreed verdicts, agreement share with the reference, rows/s."""
    reference = verdicts_by_row(runs[REFERENCE])
    figures = {}
    for kind, run in runs.items():
        found = agreement(reference, verdicts_by_row(run))
        rows, tokens, seconds = speed(run)
        figures[kind] = {"rows": rows, "compared_rows": found["rows"], "verdicts": found["verdicts"],
                         "agreed": found["agreed"], "agreement": found["share"], "generation_s": round(seconds, 1),
                         "rows_per_s": rows / seconds if seconds else None,
                         "tokens_per_s": tokens / seconds if seconds else None}
    return figures


def markdown(figures: dict[str, dict], min_agreement: float) -> str:
    lines = ["| compute type | rows | verdicts | agree with float32 | share | generation s | rows/s | tokens/s | "
             f">= {100 * min_agreement:.0f}% |", "|---|---|---|---|---|---|---|---|---|"]
    for kind, f in figures.items():
        share = "—" if f["agreement"] is None else f"{100 * f['agreement']:.1f}%"
        rate = "—" if f["rows_per_s"] is None else f"{f['rows_per_s']:.3f} | {f['tokens_per_s']:.1f}"
        ok = "yes" if (f["agreement"] or 0) >= min_agreement else "no"
        lines.append(f"| {kind} | {f['rows']} | {f['verdicts']} | {f['agreed']} | {share} | {f['generation_s']:.0f} "
                     f"| {rate} | {ok} |")
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
    runs = {}
    for kind in kinds:
        eval_run(args, kind)
        runs[kind] = args.out / kind
    figures = measure(runs)
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
        complete = {f["rows"] for f in figures.values()} == {figures[REFERENCE]["rows"]} and all(
            f["compared_rows"] == f["rows"] for f in figures.values())
        if not complete:
            raise SystemExit("the runs hold different rows (one is unfinished): rerun to complete them first")
        if args.write.resolve().parent != adapter.resolve():
            print(f"note: {args.write} is not beside the adapter {adapter}; the backend reads "
                  f"{adapter}/compute-types.json", file=sys.stderr)
        args.write.write_text(json.dumps(measured, indent=2) + "\n")
        print(f"written: {args.write}")


if __name__ == "__main__":
    main()
