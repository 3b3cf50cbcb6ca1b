"""What a loop round's policy refit does to a worked policy: each held-out item the fitted policy gets wrong becomes
a correction (as a flag in the app would), the policy is refitted as ``training.loop`` refits it, and the refit is
scored on the rest of the held-out file, which neither fit saw.

    python -m benchmarks.loop_policy_refit docs/policies/medical-self-treatment [docs/policies/investment-advice]

Prints, per policy: the corrections, the gate's figures (out-of-fold F1 on the untouched examples, served and
refit, with the served 95% interval), how many corrections the refit answers as corrected, the held-out rows each
policy gets wrong (and the refit's when cut at the served threshold), and the refit's wall time. Nothing is
written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from guardreasoner.policy import fitted_examples, load_policy, read_card, read_examples, representation
from guardreasoner.results import CATEGORY_LABELS
from guardreasoner.screen import load_screen, shipped_screen_folder
from training.loop.policies import refit_policies


def wrong_rows(folder: Path, screen, rows, threshold: float | None = None) -> list:
    """The rows the policy in ``folder`` gets wrong, at its own threshold or at ``threshold``."""
    policy = load_policy(folder, screen)
    cut = policy.threshold if threshold is None else threshold
    p = policy.probabilities(representation(screen, [(e.prompt, e.response) for e in rows], policy.layers))
    return [e for e, x in zip(rows, p) if (x >= cut) != bool(e.label)]


def measure(policy_dir: Path, screen) -> None:
    fitted, name = policy_dir / "fitted", read_card(policy_dir / "fitted")["name"]
    held, _ = read_examples(policy_dir / "held_out.csv")
    wrong = wrong_rows(fitted, screen, held)
    # each held-out row the served policy gets wrong is flagged with its gold label (label 1: "positive")
    corrections = [{"key": f"policy-{index}", "policy": name, "label": CATEGORY_LABELS[1 - e.label],
                    "prompt": e.prompt, "response": e.response, "origin": f"held_out line {e.line}", "source": "flag"}
                   for index, e in enumerate(wrong)]
    if not corrections:
        print(f"{name}: the fitted policy gets every held-out row right; nothing to correct")
        return
    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        refit = refit_policies(corrections, {name: fitted}, {}, screen, Path(out))
        seconds = time.perf_counter() - began
        [entry] = refit.report
        rest = [e for e in held if all(e.prompt != row.prompt for row in wrong)]
        after = wrong_rows(Path(out) / name, screen, rest) if name in refit.refitted else None
        # the refit's weights cut at the served threshold instead of the one it chose again
        kept_cut = wrong_rows(Path(out) / name, screen, rest, read_card(fitted)["threshold"]) \
            if name in refit.refitted else None
    print(f"{name}: {len(fitted_examples(fitted))} examples, {len(corrections)} correction(s) from the held-out file; "
          f"gate {'passed' if entry['passed'] else 'refused'}: out-of-fold F1 served {entry['shipped']['f1']:.2f} "
          f"[{entry['shipped']['ci95'][0]:.2f}, {entry['shipped']['ci95'][1]:.2f}], "
          f"refit {entry['candidate']['f1']:.2f}; {len(entry['fixed'])} answered as corrected; "
          f"refit in {seconds:.1f} s")
    served_wrong = len(wrong_rows(fitted, screen, rest))
    print(f"  the other {len(rest)} held-out rows: served policy {served_wrong} wrong, refit "
          f"{'(not shipped)' if after is None else f'{len(after)} wrong'}")
    for row in after or []:
        print(f"    now wrong: {CATEGORY_LABELS[row.label]} for {row.prompt[:100]!r}")
    if kept_cut is not None:
        print(f"  the refit cut at the served threshold {read_card(fitted)['threshold']:.3f} instead of its "
              f"{entry['threshold']['candidate']:.3f}: "
              f"{len(kept_cut)} of those rows wrong")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_policy_refit",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("policies", nargs="+", type=Path, help="docs/policies folders (fitted/ and held_out.csv)")
    args = parser.parse_args(argv)
    screen = load_screen(shipped_screen_folder())
    for folder in args.policies:
        measure(folder, screen)


if __name__ == "__main__":
    main()
