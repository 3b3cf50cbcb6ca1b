"""Ship the best trained adapter as the embedded guard, and fill its model card from the run's own files.

    python -m training.ship --candidates rsft=runs/embedded/rsft hs-dpo=runs/embedded/hs-dpo \\
        --reports runs/embedded/eval/rsft.json runs/embedded/eval/hs-dpo.json \\
        --comparison runs/embedded/eval/comparison.md --times runs/embedded/times.txt \\
        --pairs runs/embedded/pairs.jsonl --dpo_run runs/embedded/hs-dpo

The winner is the candidate with the highest mean strict F1 over the cells its report scored (the reports are
``python -m eval score --json`` files, read as files: training does not import the evaluation), among those whose
mean balanced accuracy is no lower than the first candidate's (the one shipped now): F1 of the positive label
rises when a guard calls more rows harmful, skilled or not, and balanced accuracy does not, so a candidate that
gains F1 while losing balanced accuracy only moved towards "harmful". Reports without confusion matrices (paper
mode) are ranked by F1 alone. Its weights are stored in float16, half the size in git; the merge into the base
upcasts them to float32. The card's sections between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` are
replaced, so the table in the card is the one the commands produced, and the prose around it stays hand-written.
The ``hs-dpo`` section shows what HS-DPO had to learn from and what its loss did (pairs, per-step preference and
SFT losses, reward margins), so a card can say why it did or did not beat R-SFT.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean

from guardreasoner.rows import read_jsonl
from stagekit.metrics import all_positive_f1, balanced_accuracy, mean_cell_f1, mean_over_cells

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "embedded-guard"


@dataclass
class ShipConfig:
    candidates: list[str] = field(metadata={"help": "NAME=adapter_folder, one per trained model"})
    reports: list[str] = field(metadata={"help": "the candidates' scored reports, <NAME>.json"})
    to: str = str(SHIPPED)
    comparison: str | None = None
    times: str | None = None
    pairs: str | None = field(default=None, metadata={"help": "the mined pairs file HS-DPO trained on"})
    dpo_run: str | None = field(default=None, metadata={"help": "HS-DPO's output_dir (its trainer_state.json)"})


def mean_f1(report: dict) -> float:
    value = mean_cell_f1(report)
    return float("-inf") if value is None else value


def winner(candidates: Collection[str], reports: dict[str, dict]) -> str:
    """The best mean strict F1 among the candidates that do not lose balanced accuracy to the first one."""
    missing = set(candidates) - set(reports)
    if missing:
        raise ValueError(f"no report for {sorted(missing)}: score every candidate before choosing")
    names = list(candidates)
    floor = mean_over_cells(reports[names[0]], balanced_accuracy)
    eligible = [name for name in names if floor is None or name == names[0]
                or (mean_over_cells(reports[name], balanced_accuracy) or 0.0) >= floor]
    return max(eligible, key=lambda name: mean_f1(reports[name]))


def score_line(name: str, report: dict, shipped: bool) -> str:
    line = f"- {name}: mean strict F1 {mean_f1(report):.2f} over {len(report['cells'])} cells"
    accuracy = mean_over_cells(report, balanced_accuracy)
    if accuracy is not None:
        line += f", balanced accuracy {accuracy:.2f}"
    return line + (" (shipped)" if shipped else "")


def copy_adapter(adapter: Path, target: Path) -> None:
    """The adapter's config and its weights in float16; nothing else (the tokenizer is the base's)."""
    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    weights = load_file(adapter / "adapter_model.safetensors")
    save_file({key: value.to(torch.float16) for key, value in weights.items()},
              str(target / "adapter_model.safetensors"))
    shutil.copyfile(adapter / "adapter_config.json", target / "adapter_config.json")


def fill_section(card: str, name: str, text: str) -> str:
    pattern = re.compile(rf"(<!-- begin {re.escape(name)} -->\n).*?(<!-- end {re.escape(name)} -->)", re.S)
    if not pattern.search(card):
        raise ValueError(f"the card has no '<!-- begin {name} -->' ... '<!-- end {name} -->' section")
    return pattern.sub(lambda match: match.group(1) + text.rstrip("\n") + "\n" + match.group(2), card)


LOGGED = {"loss": "loss", "loss/preference": "preference loss", "loss/sft": "SFT loss",
          "rewards/margins": "reward margin", "rewards/accuracies": "reward accuracy", "learning_rate": "lr"}


def hs_dpo_report(pairs_path: Path, run: Path | None = None) -> str:
    """The pairs HS-DPO had (how many of the mined rows, which task made each hard, their weights and lengths) and,
    from its trainer_state.json, each logged step's loss terms and reward margins."""
    pairs = read_jsonl(pairs_path)
    samples = pairs_path.with_name(pairs_path.name + ".samples.jsonl")
    mined = len({record["row"] for record in read_jsonl(samples)}) if samples.exists() else None
    tasks = ", ".join(f"{task} {count}" for task, count in Counter(p["task"] for p in pairs).most_common())
    lines = [f"- {len(pairs)} pairs" + (f" from {mined} mined training rows" if mined is not None else "")
             + (f" (deciding task: {tasks})" if tasks else "")]
    if pairs:
        lines.append(f"- weights {min(p['weight'] for p in pairs):.2f} to {max(p['weight'] for p in pairs):.2f}; "
                     f"mean length {fmean([len(p['chosen']) for p in pairs]):.0f} characters chosen, "
                     f"{fmean([len(p['rejected']) for p in pairs]):.0f} rejected")
    if run and (run / "trainer_state.json").exists():
        history = json.loads((run / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
        steps = [entry for entry in history if "loss" in entry]
        columns = [key for key in LOGGED if any(key in entry for entry in steps)]
        lines += ["", "| step | " + " | ".join(LOGGED[key] for key in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        lines += [f"| {entry['step']} | " + " | ".join(f"{entry[key]:.4g}" if key in entry else "" for key in columns)
                  + " |" for entry in steps]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    from transformers import HfArgumentParser

    (config,) = HfArgumentParser(ShipConfig).parse_args_into_dataclasses(argv)
    candidates = dict(item.split("=", 1) for item in config.candidates)
    reports = {Path(path).stem: json.loads(Path(path).read_text()) for path in config.reports}
    chosen = winner(candidates, reports)
    target = Path(config.to)
    if Path(candidates[chosen]).resolve() != target.resolve():  # the shipped adapter may stay the winner
        copy_adapter(Path(candidates[chosen]), target)
    card_path = target / "README.md"
    card = card_path.read_text(encoding="utf-8")
    scores = "\n".join(score_line(name, reports[name], name == chosen) for name in candidates)
    reference = mean_over_cells(reports[chosen], all_positive_f1)
    if reference is not None:  # what calling every row harmful (or refusal) scores on the same rows
        scores += f"\n- every row called positive: mean strict F1 {reference:.2f}"
    card = fill_section(card, "winner", scores)
    if config.comparison:
        card = fill_section(card, "comparison", Path(config.comparison).read_text(encoding="utf-8"))
    if config.times:
        times = Path(config.times).read_text(encoding="utf-8").strip().splitlines()
        card = fill_section(card, "times", "\n".join(f"- {line}" for line in times))
    if config.pairs:
        card = fill_section(card, "hs-dpo", hs_dpo_report(Path(config.pairs), Path(config.dpo_run) if config.dpo_run
                                                          else None))
    card_path.write_text(card, encoding="utf-8")
    print(json.dumps({"shipped": chosen, "from": candidates[chosen], "to": str(target)}))
    return chosen


if __name__ == "__main__":
    main()
