"""Which representation a policy head should read, measured: held-out F1 of the same fit (``policy.fit_head``:
regularisation by out-of-fold log-loss, Platt's scaling, best-F1 threshold) on each candidate, for each example
policy in docs/policies (fitted on examples.csv, scored on held_out.csv, which it never saw).

    .venv/bin/python -m benchmarks.policy_representation [docs/policies/NAME ...]

Candidates: the shipped verdict encoder's layer means (one forward pass with the verdicts; 0 = embeddings, 6 =
last) and, as the issue's baseline, frozen all-MiniLM-L6-v2 sentence embeddings with a plain logistic regression
(and with the same fit). Prints a table per policy, fit seconds included; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, roc_auc_score

from guardreasoner.policy import fit_head, read_examples, representation
from guardreasoner.screen import MiniLMFeatures, load_screen, shipped_screen_folder

LAYER_CHOICES = ((6,), (3,), (4,), (3, 6), (2, 4, 6), (1, 2, 3, 4, 5, 6))


def minilm(pairs: list[tuple[str, str | None]]) -> np.ndarray:
    """Frozen all-MiniLM-L6-v2 embeddings of the request and the reply read as one text."""
    return MiniLMFeatures().encoder.encode([p if r is None else f"{p}\n{r}" for p, r in pairs],
                                           normalize_embeddings=True)


def scores(fit_x, fit_y, test_x, test_y) -> dict:
    began = time.perf_counter()
    fit = fit_head(fit_x, fit_y)
    seconds = time.perf_counter() - began
    z = test_x @ fit.coef + fit.intercept
    p = 1 / (1 + np.exp(-(fit.scale * z + fit.shift)))
    return {"f1": 100 * f1_score(test_y, p >= fit.threshold), "auc": roc_auc_score(test_y, p),
            "cv_f1": 100 * f1_score(fit_y, fit.out_of_fold_p >= fit.threshold), "seconds": seconds}


def plain_logistic(fit_x, fit_y, test_x, test_y) -> dict:
    model = LogisticRegression(max_iter=2000).fit(fit_x, fit_y)
    p = model.predict_proba(test_x)[:, 1]
    return {"f1": 100 * f1_score(test_y, p >= 0.5), "auc": roc_auc_score(test_y, p), "cv_f1": float("nan"),
            "seconds": float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("policies", nargs="*", type=Path,
                        default=sorted(p for p in Path("docs/policies").iterdir() if (p / "held_out.csv").is_file()))
    args = parser.parse_args()
    encoder = load_screen(shipped_screen_folder())
    for folder in args.policies:
        fit_examples, _ = read_examples(folder / "examples.csv")
        test_examples, _ = read_examples(folder / "held_out.csv")
        fit_pairs = [(e.prompt, e.response) for e in fit_examples]
        test_pairs = [(e.prompt, e.response) for e in test_examples]
        fit_y, test_y = (np.array([e.label for e in examples]) for examples in (fit_examples, test_examples))
        print(f"\n{folder.name}: fitted on {len(fit_y)} examples ({fit_y.sum()} positive), held out "
              f"{len(test_y)} ({test_y.sum()} positive)\n")
        print("| representation | head | held-out F1 | held-out ROC AUC | cross-validated F1 | fit s |")
        print("|---|---|---|---|---|---|")
        frozen_fit, frozen_test = minilm(fit_pairs), minilm(test_pairs)
        rows = [("frozen all-MiniLM-L6-v2", "plain logistic regression",
                 plain_logistic(frozen_fit, fit_y, frozen_test, test_y)),
                ("frozen all-MiniLM-L6-v2", "policy fit", scores(frozen_fit, fit_y, frozen_test, test_y))]
        for layers in LAYER_CHOICES:
            x_fit, x_test = representation(encoder, fit_pairs, layers), representation(encoder, test_pairs, layers)
            rows.append((f"verdict encoder, layers {','.join(map(str, layers))}", "policy fit",
                         scores(x_fit, fit_y, x_test, test_y)))
        for name, head, s in rows:
            print(f"| {name} | {head} | {s['f1']:.1f} | {s['auc']:.3f} | {s['cv_f1']:.1f} | {s['seconds']:.2f} |")


if __name__ == "__main__":
    main()
