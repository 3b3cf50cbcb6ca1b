"""Training throughput of R-SFT and HS-DPO on this machine. Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.training_speed --dataset runs/embedded/train.jsonl [--model smollm2] \
        [--lora] [--steps 6] [--batch 4] [--max-length 1024]

R-SFT: tokens/s over the timed steps (every token of prompt and completion passes forward and backward; the
loss covers the completion). HS-DPO (with --pairs): pairs/s, each pair being two sequences under the policy and
the reference. The first step is warm-up and not timed. On a CUDA machine bf16 is used.

``--precisions fp32 bf16`` runs R-SFT once per precision on the same batches (same seed and rows) and prints each
one's tokens/s and its per-step losses side by side: on CPU, ``bf16`` is the Trainer's bfloat16 autocast, which
these AVX-512 BF16 CPUs run natively; use it only where its losses follow float32's.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class _StepClock:
    """A trainer callback that times steps after the first (warm-up) one."""

    def __init__(self):
        self.started = None
        self.steps = 0

    def callback(self):
        from transformers import TrainerCallback

        clock = self

        class Clock(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 1:
                    clock.started = time.perf_counter()
                else:
                    clock.steps += 1

        return Clock()


def _device_args(cuda: bool, precision: str | None = None) -> list[str]:
    bf16 = cuda if precision is None else precision == "bf16"
    return ["--bf16", str(bf16).lower()] + ([] if cuda else ["--use_cpu", "true"])


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dataset", required=True, help="GuardReasonerTrain rows for R-SFT")
    parser.add_argument("--pairs", help="HS-DPO pairs (prompt, chosen, rejected, weight)")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"),
                        help="R-SFT once per precision on the same batches (default: bf16 on CUDA, fp32 on CPU)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    common = ["--max_steps", str(args.steps + 1), "--per_device_train_batch_size", str(args.batch),
              "--max_length", str(args.max_length), "--gradient_checkpointing", "false", "--report_to", "none",
              "--save_strategy", "no", "--logging_steps", "1", "--seed", "0"]

    from training import rsft

    losses = {}
    for precision in args.precisions or [None]:
        clock = _StepClock()
        with tempfile.TemporaryDirectory() as out:
            script, config, model_args = rsft.parse_args(
                ["--model_name_or_path", args.model, "--dataset_name", args.dataset, "--output_dir", out,
                 "--use_peft", str(args.lora).lower(), *common, *_device_args(cuda, precision)])
            trainer = rsft.build_trainer(script, config, model_args)
            trainer.add_callback(clock.callback())
            trainer.train()
            seconds = time.perf_counter() - clock.started
            tokens = [entry["num_tokens"] for entry in trainer.state.log_history if "num_tokens" in entry]
            timed_tokens = tokens[-1] - tokens[0]
            losses[precision or "default"] = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        print(f"R-SFT on {device}: {args.model}{' (LoRA)' if args.lora else ''}, batch {args.batch}"
              f"{f', {precision}' if precision else ''}: {timed_tokens / seconds:.0f} tokens/s "
              f"({seconds / clock.steps:.2f} s/step over {clock.steps} steps)")
    if len(losses) > 1:
        print("step | " + " | ".join(losses))
        for step, values in enumerate(zip(*losses.values()), start=1):
            print(f"{step} | " + " | ".join(f"{value:.4f}" for value in values))

    if args.pairs:
        from training import hs_dpo

        clock = _StepClock()
        with tempfile.TemporaryDirectory() as out:
            script, config, model_args = hs_dpo.parse_args(
                ["--model_name_or_path", args.model, "--dataset_name", args.pairs, "--output_dir", out, *common,
                 *_device_args(cuda)])
            model, reference, tokenizer = hs_dpo.load_policy_and_reference(script, model_args)
            pairs = hs_dpo.load_pairs(script.dataset_name)
            trainer = hs_dpo.HSDPOTrainer(model=model, ref_model=reference, args=config, train_dataset=pairs,
                                          processing_class=tokenizer)
            trainer.add_callback(clock.callback())
            trainer.train()
            seconds = time.perf_counter() - clock.started
        print(f"HS-DPO on {device}: {args.model}, batch {args.batch}: "
              f"{clock.steps * args.batch / seconds:.2f} pairs/s ({seconds / clock.steps:.2f} s/step)")


if __name__ == "__main__":
    main()
