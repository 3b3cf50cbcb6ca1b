"""R-SFT: supervised fine-tuning on reasoning traces with TRL's SFTTrainer, loss on the completion only.

    accelerate launch --config_file training/configs/zero3.yaml -m training.rsft --config training/configs/rsft_8b.yaml
    python -m training.rsft --model_name_or_path HuggingFaceTB/SmolLM2-135M-Instruct --dataset rows.json \\
        --use_lora true --output_dir runs/rsft            # small machines

The prompt is built exactly as at inference (``--prompt_mode raw`` for the released checkpoints' format).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import SFTConfig, SFTTrainer, TrlParser

from .data import HUB_DATASET, load_rows, tokenize_example
from .runs import resume_point


@dataclass
class RSFTScriptArguments:
    model_name_or_path: str = field(metadata={"help": "base model (the paper: Llama-3.2-1B/3B, Llama-3.1-8B)"})
    dataset: str = field(default=HUB_DATASET, metadata={"help": "hub id or a local .json/.jsonl of rows"})
    splits: list[str] | None = None
    prompt_mode: str = field(default="raw", metadata={"help": "raw or chat: must match inference"})
    max_rows: int | None = None
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05


def build_trainer(script: RSFTScriptArguments, config: SFTConfig) -> SFTTrainer:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from guardreasoner.models import EMBEDDED_HUB_ID, model_folder, resolve_model

    rows = load_rows(script.dataset, script.splits)[: script.max_rows]
    spec = resolve_model(script.model_name_or_path)  # hub ids, folders, and "embedded" (SmolLM2 offline)
    folder = model_folder(spec)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    dataset = Dataset.from_list([tokenize_example(row, tokenizer, script.prompt_mode) for row in rows])
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto")
    # An adapter names its base; the embedded weights' cache path would tie it to this machine.
    model.name_or_path = EMBEDDED_HUB_ID if spec.kind == "embedded" else spec.name
    peft_config = None
    if script.use_lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=script.lora_r, lora_alpha=script.lora_alpha, lora_dropout=script.lora_dropout,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    config.completion_only_loss = True
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=peft_config)


def main(argv: list[str] | None = None) -> SFTTrainer:
    script, config = TrlParser((RSFTScriptArguments, SFTConfig)).parse_args_and_config(argv)
    trainer = build_trainer(script, config)
    trainer.train(resume_from_checkpoint=resume_point(config))
    trainer.save_model(config.output_dir)
    trainer.processing_class.save_pretrained(config.output_dir)
    return trainer


if __name__ == "__main__":
    main()
