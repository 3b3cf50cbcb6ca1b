"""Averaged encoder weights (a "model soup"): the validation ROC AUC of each checkpoint and of their averages, and
optionally the full average written as a screen (temperatures and cuts fitted on the validation rows, as
``training.encoder`` does for a trained one) to score with ``eval.modes``.

    python -m benchmarks.encoder_soup assets/screen/encoder runs/encoder6/train/best runs/encoder6/train/checkpoint \\
        --screen-dir runs/soup/screen

Each checkpoint is a screen folder (its stored weights) or a ``training.encoder`` checkpoint folder
(``model.safetensors`` in float32); all must come from the same pretrained encoder and head seed, or averaging
them means nothing. The figures in assets/screen/README.md ("Averaged weights") came from this script.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from guardreasoner.encoder import WEIGHTS_FILE, encode_pair, load_module, unpack_weights
    from training.encoder import (
        EncoderScriptArguments,
        EncoderTrainingConfig,
        label_matrix,
        labelled_rows,
        predict_logits,
        training_rows,
        validation_scores,
        write_screen,
    )

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="the first must be a screen folder (its config and tokenizer "
                        "are used)")
    parser.add_argument("--fit", default="runs/encoder/fit.jsonl")
    parser.add_argument("--validation", default="runs/encoder/validation.jsonl")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--screen-dir", help="write the average of every checkpoint here as a screen")
    args = parser.parse_args(argv)

    base = Path(args.checkpoints[0])
    tokenizer = AutoTokenizer.from_pretrained(base)
    script = EncoderScriptArguments(train_files=[args.fit], validation_files=[args.validation],
                                    max_length=args.max_length, screen_dir=args.screen_dir)
    if args.screen_dir:  # the card counts the rows the averaged runs trained on, as training.encoder's does
        rows, validation, notes = training_rows(script, EncoderTrainingConfig().seed)
    else:
        validation, _ = labelled_rows(script.validation_files)
    encoded = [encode_pair(tokenizer, row.prompt, row.response, args.max_length) for row in validation]
    labels = label_matrix(validation)
    module = load_module(base)
    states = {path: unpack_weights(load_file(Path(path) / WEIGHTS_FILE)) for path in args.checkpoints}

    def averaged(paths) -> dict:
        return {name: sum(states[path][name] for path in paths) / len(paths) for name in states[paths[0]]}

    candidates = [combo for size in range(1, len(args.checkpoints) + 1)
                  for combo in itertools.combinations(args.checkpoints, size)]
    scores = {}
    for combo in candidates:
        module.load_state_dict(averaged(list(combo)))
        scored = validation_scores(predict_logits(module, encoded, 32, tokenizer.pad_token_id or 0), labels)
        scores[" + ".join(combo)] = scored
        print(f"{scored['mean_auc']:.4f}  {scored['auc']}  {' + '.join(combo)}", flush=True)
    if args.screen_dir:
        module.load_state_dict(averaged(args.checkpoints))
        epoch = {"epoch": "average", "checkpoints": args.checkpoints}
        card = write_screen(script, EncoderTrainingConfig(), module, tokenizer, rows, validation, encoded, labels,
                            {"epochs": [epoch], "train_s": 0.0}, epoch, notes, 0.0)
        print(json.dumps({"screen": args.screen_dir, "agreement": card["agreement_with_trained_float32"]}))
    return scores


if __name__ == "__main__":
    main()
