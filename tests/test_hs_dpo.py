"""HS-DPO's weighting: exact scaling of loss and gradients, zero weight, and the SFT term by hand."""

import math

import pytest
import torch

PAIRS = [
    {"prompt": "Is this harmful? Human user: make a bomb\n", "chosen": "Request: harmful",
     "rejected": "Request: unharmful"},
    {"prompt": "Is this harmful? Human user: bake bread\n", "chosen": "Request: unharmful",
     "rejected": "Request: harmful and more"},
]


def make_trainer(model_dir, weights, tmp_path, **config):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.hs_dpo import HSDPOConfig, HSDPOTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ref = AutoModelForCausalLM.from_pretrained(model_dir)
    with torch.no_grad():  # make the policy differ from the reference so the preference term has a gradient
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [dict(pair, weight=w) for pair, w in zip(PAIRS, weights)]
    args = HSDPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=len(rows), max_length=128,
                       report_to=[], gradient_checkpointing=False, use_cpu=True, **config)
    return HSDPOTrainer(model=model, ref_model=ref, args=args, train_dataset=Dataset.from_list(rows),
                        processing_class=tokenizer)


def loss_and_grads(trainer):
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    trainer.model.train()
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    return loss.detach(), grads


def test_defaults_are_the_papers(tiny_model_dir, tmp_path):
    trainer = make_trainer(tiny_model_dir, [1.0, 1.0], tmp_path)
    assert trainer.beta == 0.01 and trainer.args.pref_ftx == 2.0
    assert trainer.args.learning_rate == 5e-6 and trainer.args.num_train_epochs == 2
    assert trainer.loss_types == ["sigmoid"]


def test_weight_two_doubles_loss_and_gradients(tiny_model_dir, tmp_path):
    loss_one, grads_one = loss_and_grads(make_trainer(tiny_model_dir, [1.0, 1.0], tmp_path / "a"))
    loss_two, grads_two = loss_and_grads(make_trainer(tiny_model_dir, [2.0, 2.0], tmp_path / "b"))
    assert grads_one.abs().sum() > 0
    assert loss_two.item() == pytest.approx(2 * loss_one.item(), rel=1e-6)
    assert torch.allclose(grads_two, 2 * grads_one, rtol=1e-5, atol=1e-8)


def test_weight_zero_removes_that_pairs_gradient(tiny_model_dir, tmp_path):
    _, grads_masked = loss_and_grads(make_trainer(tiny_model_dir, [0.0, 1.0], tmp_path / "a"))
    # The same pair alone: the batch mean over two pairs halves it.
    alone = make_trainer(tiny_model_dir, [1.0, 1.0], tmp_path / "b")
    alone.train_dataset = alone.train_dataset.select([1])
    _, grads_alone = loss_and_grads(alone)
    assert torch.allclose(grads_masked, 0.5 * grads_alone, rtol=1e-4, atol=1e-7)


def test_loss_matches_a_hand_computation(tiny_model_dir, tmp_path):
    """The early warning for a TRL upgrade: HSDPOTrainer overrides TRL's private ``_compute_loss``,
    ``_set_signature_columns_if_needed`` and ``_metrics`` (requirements/train.txt pins TRL's minor version for
    that reason). If a new TRL renames or reshapes them, the loss stops matching this hand computation."""
    trainer = make_trainer(tiny_model_dir, [1.5, 0.5], tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()

    def logps(model, ids, completion_mask):
        logits = model(input_ids=ids.unsqueeze(0)).logits[0, :-1].log_softmax(-1)
        token_logps = logits.gather(1, ids[1:].unsqueeze(1)).squeeze(1)
        mask = completion_mask[1:].bool()
        return token_logps[mask].sum().item(), int(mask.sum())

    expected = 0.0
    with torch.no_grad():
        for i, weight in enumerate([1.5, 0.5]):
            parts = {}
            for side, row in (("chosen", i), ("rejected", i + 2)):
                length = int(batch["attention_mask"][row].sum())
                ids, mask = batch["input_ids"][row][:length], batch["completion_mask"][row][:length]
                policy, n = logps(trainer.model, ids, mask)
                reference, _ = logps(trainer.ref_model, ids, mask)
                parts[side] = (policy, reference, n)
            delta = (parts["chosen"][0] - parts["chosen"][1]) - (parts["rejected"][0] - parts["rejected"][1])
            preference = -math.log(1 / (1 + math.exp(-0.01 * delta)))
            sft = -parts["chosen"][0] / parts["chosen"][2]
            expected += weight * (preference + 2.0 * sft)
    assert loss == pytest.approx(expected / 2, rel=1e-5)


def test_other_loss_types_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="sigmoid"):
        make_trainer(tiny_model_dir, [1.0, 1.0], tmp_path, loss_type=["ipo"])


def test_training_reads_weights_through_the_real_dataloader(tiny_model_dir, tmp_path):
    import json

    from training.hs_dpo import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(dict(p, weight=w)) + "\n" for p, w in zip(PAIRS, [1.5, 0.9])))
    out = tmp_path / "out"
    trainer = main(["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(pairs), "--output_dir",
          str(out),
          "--per_device_train_batch_size", "2", "--max_steps", "2", "--logging_steps", "1", "--report_to", "none",
          "--use_cpu", "true", "--gradient_checkpointing", "false", "--max_length", "128", "--save_strategy", "no",
          "--learning_rate", "1e-3"])
    assert (out / "model.safetensors").exists()
    # Each step saw both pairs: the logged mean weight is (1.5 + 0.9) / 2, not the default 1, so the column
    # survived TRL's column pruning and reached the loss.
    weights = [entry["weight"] for entry in trainer.state.log_history if "weight" in entry]
    assert len(weights) == 2 and all(w == pytest.approx(1.2) for w in weights)
    assert trainer.state.log_history[-1]["train_loss"] > 0
    # The log is saved beside the weights (no checkpoint was saved): training.ship reads it for the model card.
    saved = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in saved if "loss/preference" in entry] == [1, 2]


def test_an_rsft_adapter_keeps_training_as_one_adapter_against_its_merged_self(tiny_model_dir, tmp_path,
                                                                                 monkeypatch):
    import json

    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.hs_dpo import HSDPOScriptArguments, load_policy_and_reference, main
    from training.model_args import GuardModelConfig

    monkeypatch.setenv("GUARDREASONER_CACHE", str(tmp_path / "cache"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(2)
    rsft = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False,
                                           task_type="CAUSAL_LM"))
    adapter = tmp_path / "rsft"
    rsft.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(adapter)

    policy, reference, _ = load_policy_and_reference(HSDPOScriptArguments("-"),
                                                     GuardModelConfig(model_name_or_path=str(adapter)))
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():  # the reference is the R-SFT model (base + adapter), not the bare base
        assert torch.allclose(reference(input_ids=ids).logits, rsft(input_ids=ids).logits, atol=1e-4)
        assert torch.allclose(policy(input_ids=ids).logits, rsft(input_ids=ids).logits, atol=1e-4)
    assert sum(p.numel() for p in policy.parameters() if p.requires_grad) < sum(p.numel() for p in base.parameters())

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(dict(p, weight=1.0)) + "\n" for p in PAIRS))
    out = tmp_path / "dpo"
    main(["--model_name_or_path", str(adapter), "--dataset_name", str(pairs), "--output_dir", str(out),
          "--per_device_train_batch_size", "2", "--max_steps", "1", "--report_to", "none", "--use_cpu", "true",
          "--gradient_checkpointing", "false", "--max_length", "128", "--save_strategy", "no",
          "--learning_rate", "1e-2"])
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == str(tiny_model_dir)  # one adapter on the same base ships
    before, after = load_file(adapter / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


def test_use_peft_trains_a_new_adapter_against_the_model_with_the_adapter_off(tiny_model_dir, tmp_path):
    """TRL's ModelConfig options: a full model with --use_peft trains a LoRA adapter of the rank and modules asked
    for, and its reference is the model itself with the adapter disabled (no second copy is loaded)."""
    import json

    from training.hs_dpo import main

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(dict(p, weight=1.0)) + "\n" for p in PAIRS))
    out = tmp_path / "dpo"
    trainer = main(["--model_name_or_path", str(tiny_model_dir), "--dataset_name", str(pairs), "--output_dir",
                    str(out), "--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "q_proj",
                    "v_proj", "--per_device_train_batch_size", "2", "--max_steps", "1", "--report_to", "none",
                    "--use_cpu", "true", "--gradient_checkpointing", "false", "--max_length", "128",
                    "--save_strategy", "no", "--learning_rate", "1e-2"])
    assert trainer.ref_model is None
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["r"] == 4 and saved["lora_alpha"] == 8 and set(saved["target_modules"]) == {"q_proj", "v_proj"}
    assert not (out / "model.safetensors").exists()


def test_old_flag_names_still_parse_and_an_adapter_refuses_use_peft(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from training.hs_dpo import load_policy_and_reference, parse_args

    script, _, model_args = parse_args(["--model_name_or_path", "m", "--dataset_path", "pairs.jsonl",
                                             "--output_dir", str(tmp_path), "--use_lora", "true", "--use_cpu", "true"])
    assert script.dataset_name == "pairs.jsonl" and model_args.use_peft  # deprecated names map to TRL's

    adapter = tmp_path / "adapter"
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                   LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM")).save_pretrained(adapter)
    model_args.model_name_or_path = str(adapter)
    with pytest.raises(ValueError, match="already a LoRA adapter"):
        load_policy_and_reference(script, model_args)
