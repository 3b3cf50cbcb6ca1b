"""HS-DPO: DPO on hard samples, each pair's loss scaled by its ``weight`` column (the change the paper describes
but never published), plus LLaMA-Factory's ``pref_ftx`` term: ``pref_ftx`` x the mean NLL of the chosen
completion. Defaults are the paper's: sigmoid loss, beta 0.01, pref_ftx 2.0, lr 5e-6, 2 epochs.

    accelerate launch --config_file training/configs/zero3.yaml --num_processes 8 -m training.hs_dpo \\
        --config training/configs/hs_dpo_8b.yaml
    python -m training.hs_dpo --model_name_or_path R_SFT_MODEL --dataset_name pairs.jsonl --output_dir runs/hs-dpo

The options are TRL's (``DPOConfig`` and ``ModelConfig``, as in ``trl/scripts/dpo.py``) plus ``pref_ftx`` and
``--ref_model_name_or_path``; a ``--config`` YAML sets any of them and the command line overrides it. An R-SFT
LoRA adapter keeps training as that adapter; a full model trains in full, or as a new adapter with ``--use_peft``.

Per pair i with weight w_i:  loss_i = w_i * ( -log sigmoid(beta * delta_i) + pref_ftx * NLL_i ),
delta_i = [log pi(c_i) - log ref(c_i)] - [log pi(r_i) - log ref(r_i)],  NLL_i = -log pi(c_i) / |c_i|;
the batch loss is the mean of loss_i.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from trl import DPOConfig, DPOTrainer, ModelConfig, TrlParser, get_peft_config

from .args import DATASET_HELP, modern_flags
from .model_args import GuardModelConfig, model_load_kwargs
from .runs import resume_point

WEIGHT_COLUMN = "weight"


@dataclass
class HSDPOConfig(DPOConfig):
    pref_ftx: float = field(default=2.0, metadata={
        "help": "weight of the chosen completion's mean NLL (LLaMA-Factory pref_ftx)"})
    beta: float = 0.01
    learning_rate: float = 5e-6
    num_train_epochs: float = 2.0
    lr_scheduler_type: str = "cosine"


class _CarryWeights:
    """Wraps TRL's preference collator: it builds the batch, this adds one weight per pair."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        batch = self.collator(examples)
        batch[WEIGHT_COLUMN] = torch.tensor([float(e.get(WEIGHT_COLUMN, 1.0)) for e in examples])
        return batch


class HSDPOTrainer(DPOTrainer):
    """A DPOTrainer whose loss is the paper's weighted sigmoid DPO + pref_ftx SFT term, read from ``weight``.

    It overrides TRL's private ``_compute_loss``, ``_set_signature_columns_if_needed`` and ``_metrics``, which
    change between TRL minor versions: requirements/train.txt pins TRL's minor version, and
    tests/test_hs_dpo.py's hand-computed loss is the early warning when a new TRL changes them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.loss_types != ["sigmoid"] or self.f_divergence_type != "reverse_kl" or self.ld_alpha is not None \
                or self.use_weighting:
            raise ValueError("HS-DPO is the sigmoid DPO loss with reverse KL; other loss settings do not apply")
        self.data_collator = _CarryWeights(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if WEIGHT_COLUMN not in self._signature_columns:
            self._signature_columns.append(WEIGHT_COLUMN)

    def pair_losses(self, model, inputs) -> dict[str, torch.Tensor]:
        """Per-pair terms of the loss, before weighting (the tests compare them with a hand computation)."""
        completion_mask = inputs["completion_mask"]
        model_inputs = {k: v for k, v in inputs.items()
                        if k not in ("completion_mask", "ref_chosen_logps", "ref_rejected_logps", WEIGHT_COLUMN)}
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_inputs, use_cache=False, labels=labels, fused_lm_head=True)
        shift_mask = completion_mask[..., 1:]
        per_token = outputs.log_probs[:, -shift_mask.size(1):] * shift_mask
        chosen_logps, rejected_logps = per_token.sum(dim=1).chunk(2, dim=0)
        chosen_lengths = shift_mask.sum(dim=1).chunk(2, dim=0)[0].clamp(min=1)
        if "ref_chosen_logps" in inputs:
            ref_chosen, ref_rejected = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.compute_ref_log_probs(self.ref_model or self.model, inputs)
        chosen_logratios = chosen_logps - ref_chosen
        rejected_logratios = rejected_logps - ref_rejected
        return {
            "preference": -F.logsigmoid(self.beta * (chosen_logratios - rejected_logratios)),
            "sft": -chosen_logps / chosen_lengths,
            "chosen_rewards": self.beta * chosen_logratios.detach(),
            "rejected_rewards": self.beta * rejected_logratios.detach(),
        }

    def _compute_loss(self, model, inputs, return_outputs):
        inputs = dict(inputs)
        weights = inputs.pop(WEIGHT_COLUMN, None)
        terms = self.pair_losses(model, inputs)
        if weights is None:
            weights = torch.ones_like(terms["preference"])
        weights = weights.to(terms["preference"].device, terms["preference"].dtype)
        per_pair = weights * (terms["preference"] + self.args.pref_ftx * terms["sft"])
        loss = per_pair.mean()
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        for name, value in (
            ("loss/preference", terms["preference"].detach()),
            ("loss/sft", terms["sft"].detach()),
            ("rewards/chosen", terms["chosen_rewards"]),
            ("rewards/rejected", terms["rejected_rewards"]),
            ("rewards/margins", terms["chosen_rewards"] - terms["rejected_rewards"]),
            ("rewards/accuracies", (terms["chosen_rewards"] > terms["rejected_rewards"]).float()),
            ("weight", weights.detach()),
        ):
            self._metrics[mode][name].append(gather(value).mean().item())
        return (loss, terms) if return_outputs else loss


@dataclass
class HSDPOScriptArguments:
    dataset_name: str = field(metadata={"help": "pairs (prompt, chosen, rejected, weight) from training.mine: "
                                                + DATASET_HELP})
    ref_model_name_or_path: str | None = field(default=None, metadata={
        "help": "the frozen reference; default: the model being trained, as it starts (the paper: the R-SFT model)"})


def parse_args(argv: list[str] | None = None) -> tuple[HSDPOScriptArguments, HSDPOConfig, ModelConfig]:
    parser = TrlParser((HSDPOScriptArguments, HSDPOConfig, GuardModelConfig))
    return parser.parse_args_and_config(modern_flags(argv))


def load_policy_and_reference(script: HSDPOScriptArguments, model_args: ModelConfig):
    """The model to train, the frozen reference (the R-SFT model, as in the paper) and the tokenizer.

    A LoRA adapter from R-SFT keeps training as the same adapter on its base (so one adapter ships), with the
    adapter merged into a separate copy as the reference; a plain model trains in full against a copy of itself,
    or, with ``--use_peft``, as a new adapter against itself with the adapter off (reference None: TRL's way)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from guardreasoner.models import base_folder, model_folder, resolve_model

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (the R-SFT model)")
    spec = resolve_model(model_args.model_name_or_path)
    if spec.kind == "adapter" and model_args.use_peft:
        raise ValueError(f"{spec.name} is already a LoRA adapter and keeps training as that adapter: drop --use_peft")
    merged = model_folder(spec)  # for an adapter: merged into its base once
    load = model_load_kwargs(model_args)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    if script.ref_model_name_or_path:
        reference = AutoModelForCausalLM.from_pretrained(model_folder(resolve_model(script.ref_model_name_or_path)),
                                                         **load)
    elif model_args.use_peft:
        reference = None
    else:
        reference = AutoModelForCausalLM.from_pretrained(merged, **load)
    if spec.kind == "adapter":
        import json

        from peft import PeftModel

        base_id = json.loads((Path(spec.location) / "adapter_config.json").read_text())["base_model_name_or_path"]
        base = AutoModelForCausalLM.from_pretrained(base_folder(base_id), **load)
        base.name_or_path = base_id
        model = PeftModel.from_pretrained(base, spec.location, is_trainable=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(merged, **load)
    return model, reference, tokenizer


def load_pairs(source: str):
    """The pairs as a ``datasets.Dataset``: a local .json/.jsonl file, or a hub dataset's train split."""
    from datasets import load_dataset

    if Path(source).is_file():
        return load_dataset("json", data_files=source, split="train")
    return load_dataset(source, split="train")


def main(argv: list[str] | None = None) -> HSDPOTrainer:
    script, config, model_args = parse_args(argv)
    model, reference, tokenizer = load_policy_and_reference(script, model_args)
    trainer = HSDPOTrainer(model=model, ref_model=reference, args=config, train_dataset=load_pairs(script.dataset_name),
                           processing_class=tokenizer, peft_config=get_peft_config(model_args))
    trainer.train(resume_from_checkpoint=resume_point(config))
    trainer.save_model(config.output_dir)
    tokenizer.save_pretrained(config.output_dir)
    # The per-step loss terms and reward margins beside the weights: the evidence for whether DPO moved the model.
    trainer.state.save_to_json(str(Path(config.output_dir) / "trainer_state.json"))
    return trainer


if __name__ == "__main__":
    main()
