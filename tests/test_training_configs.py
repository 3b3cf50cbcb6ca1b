"""The shipped GPU recipes parse with the stages' own parsers and carry the paper's settings."""

import pytest
from trl import SFTConfig, TrlParser

from training.hs_dpo import HSDPOConfig, HSDPOScriptArguments
from training.rsft import RSFTScriptArguments

GPUS = 8  # the configs' batch arithmetic assumes one 8-GPU node


@pytest.mark.parametrize("size,base", [("1b", "meta-llama/Llama-3.2-1B"), ("3b", "meta-llama/Llama-3.2-3B"),
                                       ("8b", "meta-llama/Llama-3.1-8B")])
def test_recipes_match_the_paper(size, base, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # output_dir is relative; parsing must not depend on where tests run
    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "training" / "configs"
    script, sft = TrlParser((RSFTScriptArguments, SFTConfig)).parse_args_and_config(
        ["--config", str(root / f"rsft_{size}.yaml"), "--use_cpu", "true"])  # no GPU here
    assert script.model_name_or_path == base and script.dataset == "yueliu1999/GuardReasonerTrain"
    assert not script.use_lora and script.prompt_mode == "raw"
    assert (sft.learning_rate, sft.num_train_epochs, sft.lr_scheduler_type.value) == (5e-5, 3, "cosine")
    assert sft.warmup_steps == 0 and sft.max_length == 2048 and sft.bf16
    assert sft.per_device_train_batch_size * sft.gradient_accumulation_steps * GPUS == 384

    script, dpo = TrlParser((HSDPOScriptArguments, HSDPOConfig)).parse_args_and_config(
        ["--config", str(root / f"hs_dpo_{size}.yaml"), "--use_cpu", "true"])
    assert script.model_name_or_path == f"runs/rsft-{size}" and script.ref_model_name_or_path is None
    assert (dpo.learning_rate, dpo.num_train_epochs, dpo.beta, dpo.pref_ftx) == (5e-6, 2, 0.01, 2.0)
    assert dpo.loss_type == ["sigmoid"] and dpo.bf16 and dpo.max_length == 2048
    assert dpo.per_device_train_batch_size * dpo.gradient_accumulation_steps * GPUS == 256
