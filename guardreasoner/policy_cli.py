"""``python -m guardreasoner policy fit|evaluate``: fit a policy from labelled examples, and measure one on examples
it was not fitted on. The policy itself is ``guardreasoner.policy``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

POLICY_HELP = ("a policy folder (`policy fit` writes one; or a text policy folder): each result's `categories` "
               "gives its label and probability (repeatable)")


def add_policy_command(commands, parents: list) -> None:
    policy = commands.add_parser("policy", parents=parents, help="your own categories, learned from examples")
    actions = policy.add_subparsers(dest="policy_command", required=True)
    fit = actions.add_parser("fit", parents=parents, help="fit a policy from labelled examples and write its folder")
    fit.add_argument("name", help="the policy's name: the key of its category in every result")
    fit.add_argument("--examples", required=True, help="CSV or JSONL: prompt, optional response, label (1/0)")
    fit.add_argument("--flags", action="append", default=[],
                     help="a flag queue, or an Argilla pull's --policy-examples file, whose flags naming this policy "
                          "add their examples (repeatable; for one item a later file's label wins)")
    fit.add_argument("--out", required=True, help="the policy folder to write (replaced only when the fit succeeds)")
    fit.add_argument("--description", help="what the policy covers (default: the file's '# description:' line)")
    fit.add_argument("--screen", help="the encoder screen folder to fit on (default: the shipped one)")
    evaluate = actions.add_parser("evaluate", parents=parents,
                                  help="F1, precision and recall of a policy on labelled examples it was not fitted on")
    evaluate.add_argument("folder")
    evaluate.add_argument("--examples", required=True)
    evaluate.add_argument("--screen", help="the encoder screen folder (default: the shipped one)")


def _encoder(folder: str | None):
    from .screen import default_screen_folder, load_screen

    return load_screen(folder or default_screen_folder("embedded"))


def run_policy(args) -> int:
    return {"fit": _fit, "evaluate": _evaluate}[args.policy_command](args)


def _fit(args) -> int:
    from .policy import fit_policy, flag_examples, item_key, read_examples, save_policy

    examples, description = read_examples(args.examples)
    flagged = {}
    for queue in args.flags:  # a later file's label for an item wins: the reviewers' pull after the app's queue
        extra = flag_examples(queue, args.name)
        print(f"{queue}: {len(extra)} flag(s) name the policy {args.name}", file=sys.stderr)
        flagged.update({item_key(example): example for example in extra})
    examples += list(flagged.values())
    policy = fit_policy(args.name, examples, _encoder(args.screen), description=args.description or description)
    save_policy(policy, args.out)
    card = policy.card
    cv = card["cross_validation"]
    print(f"{args.name}: {card['examples']['positive']} positive, {card['examples']['negative']} negative examples; "
          f"{cv['folds']}-fold cross-validated F1 {cv['f1']:.1f} (precision {cv['precision']:.1f}, recall "
          f"{cv['recall']:.1f}, ROC AUC {cv['roc_auc']:.3f}); threshold {card['threshold']:.3f}; "
          f"{len(card['misclassified'])} misclassified out of fold; fitted in {card['fit_seconds']:.1f} s")
    print(f"wrote {Path(args.out)}")
    return 0


def evaluate_policy(folder, examples_path, screen) -> dict:
    """The policy's figures on labelled examples (with the items it got wrong)."""
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    from .policy import load_policy, read_examples, representation

    policy = load_policy(folder, screen)
    examples, _ = read_examples(examples_path)
    p = policy.probabilities(representation(screen, [(e.prompt, e.response) for e in examples], policy.layers))
    y = [e.label for e in examples]
    predicted = p >= policy.threshold
    return {"policy": policy.name, "examples": len(y), "positive": sum(y),
            "f1": round(100 * f1_score(y, predicted), 2),
            "precision": round(100 * precision_score(y, predicted, zero_division=0), 2),
            "recall": round(100 * recall_score(y, predicted), 2), "roc_auc": round(float(roc_auc_score(y, p)), 4),
            "wrong": [{"line": e.line, "label": e.label, "p": round(float(pi), 4), "prompt": e.prompt[:120]}
                      for e, pi, hit in zip(examples, p, predicted) if hit != bool(e.label)]}


def _evaluate(args) -> int:
    print(json.dumps(evaluate_policy(args.folder, args.examples, _encoder(args.screen)), indent=2,
                     ensure_ascii=False))
    return 0
