"""R-SFT: supervised fine-tuning on reasoning traces with TRL's SFTTrainer, loss on the completion only.

    accelerate launch --config_file training/configs/zero3.yaml --num_processes 8 -m training.rsft \\
        --config training/configs/rsft_8b.yaml
    python -m training.rsft --model_name_or_path HuggingFaceTB/SmolLM2-135M-Instruct --dataset_name rows.jsonl \\
        --use_peft --lora_r 16 --lora_alpha 32 --output_dir runs/rsft            # LoRA, for small machines

The options are TRL's (``SFTConfig`` and ``ModelConfig``, as in ``trl/scripts/sft.py``) plus the few below; a
``--config`` YAML sets any of them and the command line overrides it. The prompt is built exactly as at inference
(``--prompt_mode raw`` for the released checkpoints' format).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser, get_peft_config

from .args import DATASET_HELP, modern_flags
from .data import HUB_DATASET, load_rows, tokenize_example
from .model_args import GuardModelConfig, model_load_kwargs
from .runs import resume_point


@dataclass
class RSFTScriptArguments:
    dataset_name: str = field(default=HUB_DATASET, metadata={"help": "GuardReasonerTrain rows: " + DATASET_HELP})
    splits: list[str] | None = field(default=None, metadata={
        "help": "hub splits, or the rows' own source values, to train on (default: all)"})
    prompt_mode: str = field(default="raw", metadata={"help": "raw or chat: must match inference"})
    max_rows: int | None = None
    adapter: str | None = field(default=None, metadata={
        "help": "a LoRA adapter of --model_name_or_path to train on from where it is (e.g. assets/embedded-guard with "
                "--model_name_or_path smollm2), instead of a new one; the result is again an adapter of that base"})


def parse_args(argv: list[str] | None = None) -> tuple[RSFTScriptArguments, SFTConfig, ModelConfig]:
    parser = TrlParser((RSFTScriptArguments, SFTConfig, GuardModelConfig))
    return parser.parse_args_and_config(modern_flags(argv))


def build_trainer(script: RSFTScriptArguments, config: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from guardreasoner.models import EMBEDDED_HUB_ID, model_folder, resolve_model

    if not model_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (the base model: a hub id, a folder, or embedded)")
    rows = load_rows(script.dataset_name, script.splits)[: script.max_rows]
    spec = resolve_model(model_args.model_name_or_path)  # hub ids, folders, and "embedded" (SmolLM2 offline)
    folder = model_folder(spec)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    dataset = Dataset.from_list([tokenize_example(row, tokenizer, script.prompt_mode) for row in rows])
    model = AutoModelForCausalLM.from_pretrained(folder, **model_load_kwargs(model_args))
    # An adapter names its base; the embedded weights' cache path would tie it to this machine.
    model.name_or_path = EMBEDDED_HUB_ID if spec.kind == "embedded" else spec.name
    config.completion_only_loss = True
    peft_config = get_peft_config(model_args)
    if script.adapter:
        from peft import PeftModel

        # The adapter's own LoRA settings hold; merging it instead would tie the result to the merged weights.
        model = PeftModel.from_pretrained(model, script.adapter, is_trainable=True)
        peft_config = None
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config)


def main(argv: list[str] | None = None) -> SFTTrainer:
    trainer = build_trainer(*parse_args(argv))
    trainer.train(resume_from_checkpoint=resume_point(trainer.args))
    trainer.save_model(trainer.args.output_dir)
    trainer.processing_class.save_pretrained(trainer.args.output_dir)
    return trainer


if __name__ == "__main__":
    main()
