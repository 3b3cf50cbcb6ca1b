"""TRL's ``ModelConfig`` with this project's defaults, and what it means for loading a model."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import ModelConfig


@dataclass
class GuardModelConfig(ModelConfig):
    """TRL's model options (``--use_peft``, ``--lora_r``, ``--lora_alpha``, ``--lora_target_modules`` ...), with
    the defaults these stages had before they took TRL's names: the checkpoint's own dtype (TRL: float32) and
    LoRA on every linear layer (TRL: PEFT's per-architecture default, attention only for Llama)."""

    dtype: str | None = field(default="auto", metadata={
        "help": "dtype the weights load in; auto: the checkpoint's own", "choices": ["auto", "bfloat16", "float16",
                                                                                     "float32"]})
    lora_target_modules: list[str] | None = field(default_factory=lambda: ["all-linear"], metadata={
        "help": "modules LoRA adapts; all-linear: every linear layer but the output head"})


def model_load_kwargs(model_args: ModelConfig) -> dict:
    """``from_pretrained`` keywords from TRL's model options. Models are found by ``guardreasoner.models`` (hub
    ids, folders, adapters, "embedded"), which reads one folder per model: a revision is chosen by pointing at
    that revision's folder."""
    from trl import get_quantization_config

    if model_args.model_revision != "main":
        raise ValueError("--model_revision is not supported: pass the folder of that revision as "
                         "--model_name_or_path")
    kwargs = {"dtype": model_args.dtype, "attn_implementation": model_args.attn_implementation,
              "quantization_config": get_quantization_config(model_args)}
    return {key: value for key, value in kwargs.items() if value is not None}
