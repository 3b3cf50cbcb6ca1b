"""One round of the loop: collect, learn, gate, ship, report (see ``training/loop/__init__.py``).

Outcomes: ``dry-run`` (says what a round would do, writes nothing), ``nothing-new`` (no input an earlier round
has not used: nothing shipped, nothing recorded), ``argilla-unreachable`` (the server could not be reached:
nothing used, the inputs wait for the next run), ``nothing-to-learn`` (new inputs, all left out), ``refused``
(the gate failed: the served version is untouched, the report says why) and ``shipped``.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from guardreasoner.rows import write_jsonl

from . import report as reports
from .collect import Collected, argilla_reviews, collect, current_corrections, is_policy_correction
from .data import Item, held_out_pairs, label_matrix, test_rows, training_part
from .features import FeatureCache, Heads
from .gate import GateResult, cell_scores, check_corrections, judge_cells
from .learn import LearnSettings, learn, write_candidate
from .policies import PolicyRound, given_policies, refit_policies
from .releases import Releases
from .state import Lock, LoopState, now

DEFAULT_BASE_SCREEN = Path(__file__).resolve().parents[2] / "assets" / "screen" / "encoder"
DEFAULT_DATA_DIR = Path("..") / "shared" / "benchmarks" / "guardreasoner"


@dataclass
class RoundConfig:
    state: Path
    data_dir: Path = DEFAULT_DATA_DIR
    releases: Path | None = None  # default: STATE/releases
    base_screen: Path = DEFAULT_BASE_SCREEN  # what v0000 is made from on the first round
    flags: Path | None = None  # the app's flag queue
    splits_dir: Path | None = None  # default: the committed assets/splits
    sample: int | None = None  # test rows per benchmark (a seeded sample; None: all)
    fit_sample: int | None = None  # fit rows (a seeded sample; None: all)
    seed: int = 0
    learn: LearnSettings = field(default_factory=LearnSettings)
    require_every_correction: bool = False
    pair_weight: float = 1.5  # annotate.pull.DEFAULT_WEIGHT: above every mined pair
    reasoning_model: str | None = None  # HS-DPO starts from it, where a GPU is present
    policies: list[Path] = field(default_factory=list)  # fitted policy folders the round may refit
    dry_run: bool = False

    @property
    def releases_root(self) -> Path:
        return Path(self.releases) if self.releases else Path(self.state) / "releases"


def run_round(config: RoundConfig, reviews=argilla_reviews) -> dict:
    """One round; returns its report (also written as files, except for a dry run or a round with nothing new).
    ``reviews`` returns every submitted review (None: no server configured)."""
    state = LoopState(Path(config.state))
    given = given_policies(config.policies)  # a --policy folder it cannot refit fails before anything is read
    if config.dry_run:
        return _dry_run(config, state, reviews, given)
    with Lock(state):
        return _round(config, state, reviews, given)


def _base_report(number: int, collected: Collected, parent: str | None) -> dict:
    return {"round": number, "at": now(), "parent": parent, "version": None, "collect": collected.summary(),
            "left_out": collected.left_out, "conflicts": collected.conflicts, "said": []}


def _dry_run(config: RoundConfig, state: LoopState, reviews, given: dict[str, Path]) -> dict:
    releases = Releases(config.releases_root)
    collected = collect(config.flags, reviews, state.used_inputs())
    report = _base_report(state.next_round(), collected, releases.current())
    report["outcome"] = "dry-run"
    if collected.argilla_error:
        report["said"].append(f"Argilla is unreachable ({collected.argilla_error}): a round now would use nothing "
                              "and keep its inputs for the next run.")
    elif not collected.inputs:
        report["said"].append("Nothing new since the last round: a round now would ship nothing.")
    else:
        known = len(current_corrections(state.correction_records()))
        named = sorted({c["policy"] for c in collected.corrections if is_policy_correction(c)})
        verdicts = sum(not is_policy_correction(c) for c in collected.corrections)
        refit, kept = [n for n in named if n in given], [n for n in named if n not in given]
        report["said"].append(
            f"A round now would refit the three heads with {verdicts} new correction(s) ({known} earlier)"
            + (f", refit the policies {', '.join(refit)}" if refit else "")
            + (f", keep the corrections of {', '.join(kept)} for a round given them with --policy" if kept else "")
            + ", gate the candidate on the 13 cells' test rows"
            + (f" ({config.sample} a benchmark)" if config.sample else "")
            + f" and on every correction, and ship {releases.next_version() if releases.current() else 'v0001'} "
              f"if it passes; {len(collected.left_out)} input(s) would be left out.")
    return report


def _round(config: RoundConfig, state: LoopState, reviews, given: dict[str, Path]) -> dict:
    number = state.next_round()
    releases = Releases(config.releases_root)
    collected = collect(config.flags, reviews, state.used_inputs())
    report = _base_report(number, collected, releases.current())
    if collected.argilla_error:
        report["outcome"] = "argilla-unreachable"
        report["said"].append(f"Argilla is unreachable ({collected.argilla_error}): nothing was used; "
                              f"{len(collected.inputs)} new flag input(s) are kept for the next run.")
        state.record_round({"round": number, "at": report["at"], "outcome": report["outcome"], "inputs": [],
                            "error": collected.argilla_error})
        return report
    if not collected.inputs:
        report["outcome"] = "nothing-new"
        report["said"].append("Nothing new since the last round (every flag and review was used before): "
                              "nothing shipped.")
        return report
    if not collected.corrections:
        return _finish(state, report, collected, "nothing-to-learn", [],
                       "Every new input was left out (see left_out): nothing to learn, nothing shipped.")
    held = held_out_pairs(config.data_dir, config.splits_dir)  # first: a wrong --data-dir fails before any write
    parent = releases.ensure_baseline(config.base_screen)
    report["parent"] = parent
    shipped_folder = releases.screen(parent)
    new = [{**c, "round": number, "at": report["at"]} for c in collected.corrections]
    everything = list(current_corrections(state.correction_records() + new).values())
    verdict_corrections = [c for c in everything if not is_policy_correction(c)]
    policy_corrections = [c for c in everything if is_policy_correction(c)]
    held_keys = {c["key"] for c in verdict_corrections if (c["prompt"], c["response"]) in held}
    learnable = [c for c in new if (c["policy"] in given if is_policy_correction(c) else c["key"] not in held_keys)]
    if not learnable:
        ungiven = sorted({c["policy"] for c in new if is_policy_correction(c) and c["policy"] not in given})
        return _finish(state, report, collected, "nothing-to-learn", new,
                       "Every new correction is of a held-out test row (never trained on)"
                       + (f" or of a policy this round was not given ({', '.join(ungiven)}: kept for a round "
                          "given it with --policy)" if ungiven else "") + ": nothing shipped.")
    round_dir = state.round_dir(number)
    round_dir.mkdir(parents=True, exist_ok=True)
    candidate, learnt_report, gate = _learn_and_gate(config, state, shipped_folder, round_dir, verdict_corrections,
                                                     held_keys, releases.next_version(), parent)
    refits = _refit_policies(config, policy_corrections, given, releases.policies(parent), shipped_folder,
                             round_dir)
    gate.reasons += refits.reasons
    report["learn"] = learnt_report
    report["gate"] = gate.to_dict()
    report["policies"] = refits.report
    report["corrections_total"] = len(everything)
    report["dpo"] = _pairs(config, collected, round_dir)
    if not gate.passed:
        report["said"].append(f"Refused: {len(gate.reasons)} reason(s); {parent} stays served. This round's "
                              f"corrections stay in every later round; to take them out: python -m training.loop "
                              f"withdraw --round {number}")
        return _finish(state, report, collected, "refused", new, None, round_dir)
    report["version"] = releases.next_version()
    report["outcome"] = "shipped"
    report["said"].append(f"Shipped {report['version']}: every cell within the shipped screen's interval, "
                          f"{len(gate.fixed)} correction(s) answered as corrected"
                          + "".join(f"; policy {entry['policy']} refitted, {len(entry['fixed'])} of its correction(s) "
                                    "answered as corrected" for entry in refits.report if entry["policy"] in
                                    refits.refitted) + ".")
    version = releases.publish(candidate, reports.card_files(report),
                               {"parent": parent, "round": number, "corrections": len(everything),
                                "policies_refitted": sorted(refits.refitted)},
                               reports.changelog_entry(report), {**releases.policies(parent), **refits.refitted})
    releases.point(version, f"round {number}")
    shutil.rmtree(candidate)  # the release holds it now
    shutil.rmtree(round_dir / "policies", ignore_errors=True)
    return _finish(state, report, collected, "shipped", new, None, round_dir)


def _finish(state: LoopState, report: dict, collected: Collected, outcome: str, new: list[dict],
            sentence: str | None, round_dir: Path | None = None) -> dict:
    """Write the round's report (where it did not ship, into its round folder) and record it: the
    corrections first, the rounds ledger last."""
    report["outcome"] = outcome
    if sentence:
        report["said"].append(sentence)
    report.setdefault("corrections_total", len(current_corrections(state.correction_records() + new)))
    if round_dir is not None and outcome != "shipped":
        for name, text in reports.card_files(report).items():
            (round_dir / name).write_text(text, encoding="utf-8")
    state.add_corrections(new)
    state.record_round({"round": report["round"], "at": report["at"], "outcome": outcome,
                        "version": report.get("version"), "parent": report.get("parent"),
                        "inputs": collected.inputs, "corrections": [c["key"] for c in new]})
    return report


def _learn_and_gate(config: RoundConfig, state: LoopState, shipped_folder: Path, round_dir: Path,
                    corrections: list[dict], held_keys: set[str], version: str, parent: str
                    ) -> tuple[Path, dict, GateResult]:
    from .features import read_card

    fit = training_part(config.data_dir, "fit", config.splits_dir, config.fit_sample, config.seed)
    validation = training_part(config.data_dir, "validation", config.splits_dir)
    tests = test_rows(config.data_dir, config.splits_dir, config.sample, config.seed)
    trained = [c for c in corrections if c["key"] not in held_keys]
    corrected = {(c["prompt"], c["response"]) for c in trained}
    fit = [item for item in fit if item.pair not in corrected]  # a correction replaces the benchmark's label
    as_items = [Item(c["prompt"], c["response"], c["labels"], c["source"]) for c in trained]
    cache = FeatureCache(shipped_folder, state.features_dir)
    x, validation_x = cache.vectors([i.pair for i in fit]), cache.vectors([i.pair for i in validation])
    corrections_x = cache.vectors([i.pair for i in as_items]) if as_items else np.zeros((0, x.shape[1]))
    test_x = {benchmark: cache.vectors([i.pair for i in items]) for benchmark, items in tests.items()}
    shipped = Heads.of_folder(shipped_folder)
    card = read_card(shipped_folder)
    learnt = learn(x, label_matrix(fit), corrections_x, label_matrix(as_items), validation_x,
                   label_matrix(validation), shipped, card, config.learn)
    learnt_report = {"rows": len(fit), "validation_rows": len(validation), "corrections_trained": len(trained),
                     "corrections_held_out": len(held_keys), "fits": learnt.fits, "wall_s": round(learnt.wall_s, 2),
                     "computed": cache.computed, "body": cache.digest, "settings": asdict(config.learn),
                     "validation": learnt.validation, "kept_shipped_heads": learnt.kept,
                     "test_rows": {benchmark: len(items) for benchmark, items in tests.items()}}
    candidate = write_candidate(shipped_folder, round_dir / "candidate", learnt,
                                {"version": version, "parent": parent, "round": int(round_dir.name[1:]),
                                 **{k: v for k, v in learnt_report.items() if k != "validation"},
                                 "heads": learnt.validation})
    gate = GateResult(cells=cell_scores(tests, test_x, shipped, learnt.heads))
    judge_cells(gate)
    check_corrections(corrections, shipped_folder, candidate, held_keys, gate, config.require_every_correction)
    return candidate, learnt_report, gate


def _refit_policies(config: RoundConfig, corrections: list[dict], given: dict[str, Path],
                    served: dict[str, Path], shipped_folder: Path, round_dir: Path) -> PolicyRound:
    """The policies corrections name, refitted on the served body (a round leaves it as it was)."""
    if not corrections:
        return PolicyRound()
    from guardreasoner.screen import load_screen

    return refit_policies(corrections, given, served, load_screen(shipped_folder), round_dir / "policies",
                          config.require_every_correction)


def _pairs(config: RoundConfig, collected: Collected, round_dir: Path) -> dict:
    """The new reviews as weighted DPO pairs (annotate's rule) and SFT rows; HS-DPO where a GPU is present."""
    import torch

    from annotate.pull import pull

    pulled = pull(collected.reviews, config.pair_weight)
    pairs, sft = round_dir / "pairs.jsonl", round_dir / "sft.jsonl"
    write_jsonl(pulled.pairs, pairs)
    write_jsonl(pulled.sft_rows, sft)
    command = (f"python -m training.hs_dpo --model_name_or_path {config.reasoning_model or 'R_SFT_MODEL'} "
               f"--dataset_name {pairs} --output_dir {round_dir / 'hs-dpo'}")
    if not pulled.pairs:
        said = "no pairs this round (no new review disagrees with a model output): HS-DPO not run"
    elif not torch.cuda.is_available():
        said = f"HS-DPO needs a GPU and this machine has none: pairs written; on a GPU host run `{command}`"
    elif not config.reasoning_model:
        said = f"a GPU is present but no --reasoning-model was given: run `{command}`"
    else:
        import subprocess

        done = subprocess.run([sys.executable, "-m", "training.hs_dpo", *command.split()[3:]], check=False)
        said = f"HS-DPO ran (`{command}`): exit status {done.returncode}; the adapter is not gated or shipped yet"
    return {"pairs": len(pulled.pairs), "sft_rows": len(pulled.sft_rows), "file": str(pairs), "hs_dpo": said}
