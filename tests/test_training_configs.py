"""The shipped GPU recipes are TRL-style YAML that the stages read through ``--config``, carry the paper's
settings, and launch with accelerate's ZeRO-3 config, which leaves the GPU count to the launch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from training import hs_dpo, rsft

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
GPUS = 8  # the recipes' batch arithmetic assumes one 8-GPU node


@pytest.mark.parametrize("size,base", [("1b", "meta-llama/Llama-3.2-1B"), ("3b", "meta-llama/Llama-3.2-3B"),
                                       ("8b", "meta-llama/Llama-3.1-8B")])
def test_recipes_match_the_paper(size, base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # output_dir is relative; parsing must not depend on where tests run
    script, sft, model = rsft.parse_args(["--config", str(CONFIGS / f"rsft_{size}.yaml"), "--use_cpu", "true"])
    assert model.model_name_or_path == base and script.dataset_name == "yueliu1999/GuardReasonerTrain"
    assert not model.use_peft and script.prompt_mode == "raw"
    assert (sft.learning_rate, sft.num_train_epochs, sft.lr_scheduler_type.value) == (5e-5, 3, "cosine")
    assert sft.warmup_steps == 0 and sft.max_length == 2048 and sft.bf16
    assert sft.per_device_train_batch_size * sft.gradient_accumulation_steps * GPUS == 384

    script, dpo, model = hs_dpo.parse_args(["--config", str(CONFIGS / f"hs_dpo_{size}.yaml"), "--use_cpu", "true"])
    assert model.model_name_or_path == f"runs/rsft-{size}" and script.ref_model_name_or_path is None
    assert script.dataset_name == f"runs/pairs-{size}.jsonl"
    assert (dpo.learning_rate, dpo.num_train_epochs, dpo.beta, dpo.pref_ftx) == (5e-6, 2, 0.01, 2.0)
    assert dpo.loss_type == ["sigmoid"] and dpo.bf16 and dpo.max_length == 2048
    assert dpo.per_device_train_batch_size * dpo.gradient_accumulation_steps * GPUS == 256


def test_the_command_line_overrides_a_recipe_and_takes_trls_lora_options(tmp_path):
    script, sft, model = rsft.parse_args(
        ["--config", str(CONFIGS / "rsft_1b.yaml"), "--use_cpu", "true", "--learning_rate", "1e-4",
         "--dataset_name", "rows.jsonl", "--use_peft", "--lora_r", "8", "--lora_alpha", "16",
         "--lora_target_modules", "q_proj", "v_proj", "--output_dir", str(tmp_path)])
    assert sft.learning_rate == 1e-4 and sft.num_train_epochs == 3  # the rest still from the recipe
    assert script.dataset_name == "rows.jsonl" and sft.output_dir == str(tmp_path)
    assert model.use_peft and (model.lora_r, model.lora_alpha) == (8, 16)
    assert model.lora_target_modules == ["q_proj", "v_proj"]
    # This project's defaults where TRL's differ: the checkpoint's own dtype, LoRA on every linear layer.
    _, _, model = rsft.parse_args(["--model_name_or_path", "m", "--output_dir", str(tmp_path), "--use_cpu", "true"])
    assert model.dtype == "auto" and model.lora_target_modules == "all-linear"


def test_zero3_config_parses_and_leaves_the_gpu_count_to_the_launch():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    config = load_config_from_file(str(CONFIGS / "zero3.yaml"))
    assert config.distributed_type == DistributedType.DEEPSPEED
    assert config.deepspeed_config["zero_stage"] == 3 and config.mixed_precision == "bf16"
    assert config.num_processes == -1  # accelerate's "not set": launch with --num_processes <GPUs>


def _accelerate(*args, cwd, env):
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", *args], check=False, cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_accelerate_launch_runs_rsft_on_cpu_and_zero3_asks_for_the_gpu_count(tmp_path, tokenizer_dir):
    from tests.tiny_models import random_llama

    base = random_llama(tmp_path / "base", tokenizer_dir)
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"instruction": "Classify.", "input": "Human user: hi\\nAI assistant: None", '
                    '"output": "Answers: \\nRequest: unharmful\\nCompletion: None\\nResponse: None"}\n' * 2)
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))  # no machine accelerate config
    out = tmp_path / "rsft"
    stage = ["-m", "training.rsft", "--model_name_or_path", str(base), "--dataset_name", str(rows), "--output_dir",
             str(out), "--max_steps", "2", "--per_device_train_batch_size", "1", "--use_cpu", "true",
             "--gradient_checkpointing", "false", "--report_to", "none", "--save_strategy", "no",
             "--max_length", "128", "--use_peft", "--lora_r", "4"]
    run = _accelerate("--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                      "--dynamo_backend", "no", *stage, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '"r": 4' in (out / "adapter_config.json").read_text()

    refused = _accelerate("--config_file", str(CONFIGS / "zero3.yaml"), *stage, cwd=ROOT, env=env)
    assert refused.returncode != 0 and "manually pass in `--num_processes`" in refused.stderr  # not a guess


def test_the_encoder_recipes_parse_and_the_guardreasonertrain_one_keeps_the_test_halves_out(tmp_path):
    from trl import TrlParser

    from training.encoder import EncoderScriptArguments, EncoderTrainingConfig

    parser = TrlParser((EncoderScriptArguments, EncoderTrainingConfig))
    for name in ("encoder_minilm", "encoder_minilm_l3", "encoder_minilm_guardreasonertrain"):
        script, config = parser.parse_args_and_config(["--config", str(CONFIGS / f"{name}.yaml")])
        assert script.model_name_or_path in ("minilm", "paraphrase-minilm-l3") and script.max_length == 512
    assert script.train_files == ["yueliu1999/GuardReasonerTrain"]  # the hub dataset: load_rows reads its splits
    assert script.exclude_files == ["runs/encoder/test.jsonl"] and not config.use_cpu
