"""A stand-in for the ``vllm`` package that behaves as the real engine does wherever our backend depends on it.

The real engine needs a CUDA GPU, so tests run this one: a tiny transformers model behind vLLM's async API
(``AsyncEngineArgs``, ``AsyncLLMEngine.from_engine_args``, ``generate``, ``shutdown``, ``SamplingParams``). Each
behaviour below mirrors the upstream code named beside it (vllm-project/vllm, v1 engine):

- context length: ``max_model_len`` above the length derived from the model's config.json is refused with a
  ValueError (``config/model.py``, ``_get_and_verify_max_len``); unset, it is that length. The derived length is
  the smallest of the config's length keys (``max_position_embeddings``, ``n_positions``, ``max_seq_len``,
  ``seq_length``, ``model_max_length``, ...), a config ``model_max_length`` overriding them (Command-R). The
  tokenizer's ``model_max_length`` is not read for generative models: ``ModelConfig.get_and_verify_max_len``
  passes a tokenizer config only for pooling models with absolute position embeddings. RoPE scaling factors,
  which only raise the derived length, are left out. A prompt of ``max_model_len`` tokens or more raises a
  ValueError when the request is added (``v1/engine/input_processor.py``, ``_validate_prompt_len``), and
  generation stops at ``max_model_len`` (the scheduler caps it: "length").
- memory: an engine takes ``gpu_memory_utilization`` of the device until ``shutdown()``; a second engine that
  does not fit beside it fails in the engine-core process (``v1/worker/utils.py``, ``request_memory``: "Free
  memory on device ... is less than desired GPU memory utilization"), which the caller sees only as
  ``RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {}")``
  (``v1/engine/utils.py``, ``wait_for_engine_startup``).
- prompts: ``vllm.inputs.TokensPrompt`` / ``TextPrompt`` (TypedDicts, so plain dicts at run time), a text, or a
  list of ids (``inputs/api.py``).
- stopping: on the tokenizer's EOS and on every ``eos_token_id`` of the model's generation_config.json
  (``SamplingParams.update_from_generation_config`` adds them to ``stop_token_ids``; a Llama 3 checkpoint lists
  ``<|eot_id|>`` there); ``stop_reason`` is None for the tokenizer's EOS, the token id for the others
  (``v1/core/sched/utils.py``, ``check_stop``).
- outputs: ``token_ids`` are the sampled ids, the stop token included; ``logprobs`` has one entry per id (the
  stop token too), each alternative decoded alone with special tokens kept (``v1/engine/logprobs.py`` through
  ``tokenizers/detokenizer_utils.py``, ``convert_ids_list_to_tokens``: ``tokenizer.decode([token_id])``); the
  text leaves out the stop token whatever it is (``v1/engine/detokenizer.py``, ``update``: a stop-terminated
  request's last token is not detokenized) and skips special tokens (``SamplingParams.skip_special_tokens``).
- sampling: every request samples on its own (its own seed when given, else the shared generator), so two
  requests get distinct texts; without batch-invariant mode (``VLLM_BATCH_INVARIANT=1``, ``vllm/envs.py``) a
  seeded request's text also depends on what else is in the batch (reduction order changes with the batch), so
  equal seeds give equal texts only within the same batch; ``logprobs`` over ``max_logprobs`` (20) is
  refused (``sampling_params.py``, ``verify``); ``max_tokens`` < 1 is refused when the params are built
  (``_verify_args``).
- streaming: ``generate`` is an async generator of cumulative ``RequestOutput``s, one token per step, so
  concurrent requests interleave; cancelling it aborts the request (``v1/engine/async_llm.py``).
- the offline engine: ``LLM`` (``entrypoints/llm.py``) with the same engine underneath. ``generate`` adds every
  prompt before running any, and one that fails validation fails the whole call, the others aborted
  (``_render_and_add_requests``); ``llm_engine`` offers ``add_request``/``step``/``abort_request``
  (``v1/engine/llm_engine.py``), one token per step. Our backend no longer uses it; it is here so that the tests
  run against the backend's earlier ``LLM``-based code fail for the reasons real vLLM would give.

Checked against the vllm 0.19.1 sdist (the version ``requirements/constraints-gpu.txt`` resolves).
"""

from __future__ import annotations

import asyncio
import json
import os
import types
from pathlib import Path
from typing import TypedDict

MAX_LOGPROBS = 20
# The config.json keys vLLM derives the longest context from (config/model.py, _get_and_verify_max_len).
LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
               "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len")
ENGINE_START_FAILED = "Engine core initialization failed. See root cause above. Failed core proc(s): {}"


def derived_max_len(config) -> int:
    lengths = [value for key in LENGTH_KEYS if (value := getattr(config, key, None)) is not None]
    return getattr(config, "model_max_length", None) or min(lengths, default=2048)  # vLLM assumes 2048


def generation_config_eos(model: str) -> set[int]:
    path = Path(model) / "generation_config.json"
    eos = json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


class TokensPrompt(TypedDict, total=False):
    prompt_token_ids: list[int]
    prompt: str


class TextPrompt(TypedDict, total=False):
    prompt: str


def module(model_dir, total_memory: float = 1.0) -> types.ModuleType:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    fake = types.ModuleType("vllm")
    calls: dict = {"params": [], "prompt_lengths": [], "aborted": [], "cleanups": 0, "engines": 0,
                   "engine_core_errors": []}
    device = {"used": 0.0}
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    class SamplingParams:
        def __init__(self, temperature=1.0, top_p=1.0, max_tokens=16, logprobs=None, seed=None):
            if max_tokens is not None and max_tokens < 1:
                raise ValueError(f"max_tokens must be at least 1, got {max_tokens}.")
            if not 0.0 < top_p <= 1.0:
                raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
            self.temperature, self.top_p, self.max_tokens, self.logprobs, self.seed = (
                temperature, top_p, max_tokens, logprobs, seed)
            calls["params"].append({"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                                    "logprobs": logprobs, "seed": seed})

    def _output(request_id, ids, new, steps, reason, count, stop_reason=None):
        """The cumulative ``RequestOutput`` after ``count`` of the ``new`` tokens."""
        done = count == len(new)
        shown = count - 1 if done and reason == "stop" else count  # the stop token is never detokenized
        completion = types.SimpleNamespace(
            index=0, text=tokenizer.decode(new[:shown], skip_special_tokens=True), token_ids=new[:count],
            logprobs=steps[:count] if steps is not None else None, finish_reason=reason if done else None,
            stop_reason=stop_reason if done else None)
        return types.SimpleNamespace(request_id=request_id, prompt_token_ids=ids, outputs=[completion], finished=done)

    def _prompt_ids(prompt) -> list[int]:
        """A TokensPrompt's ids; a TextPrompt, text or list of ids as vLLM reads them (inputs/api.py)."""
        if isinstance(prompt, list):
            return prompt
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                return prompt["prompt_token_ids"]
            prompt = prompt["prompt"]
        return tokenizer(prompt)["input_ids"]

    class AsyncEngineArgs:
        def __init__(self, model, max_model_len=None, gpu_memory_utilization=0.9, seed=0, **kwargs):
            self.model, self.max_model_len, self.gpu_memory_utilization, self.seed = (
                model, max_model_len, gpu_memory_utilization, seed)
            self.kwargs = kwargs

    class Logprob:
        def __init__(self, logprob, rank, decoded_token):
            self.logprob, self.rank, self.decoded_token = logprob, rank, decoded_token

    class AsyncLLMEngine:
        @classmethod
        def from_engine_args(cls, args):
            return cls(args)

        def __init__(self, args):
            derived = derived_max_len(AutoConfig.from_pretrained(args.model))
            if args.max_model_len is not None and args.max_model_len > derived:
                raise ValueError(f"User-specified max_model_len ({args.max_model_len}) is greater than the derived "
                                 f"max_model_len ({derived} in model's config.json).")
            free = total_memory - device["used"]
            if args.gpu_memory_utilization > free + 1e-9:
                # Raised in the engine-core process, which logs it; the caller gets only this.
                calls["engine_core_errors"].append(
                    f"ValueError: Free memory on device ({free:.2f}/{total_memory:.2f}) on startup is less than "
                    f"desired GPU memory utilization ({args.gpu_memory_utilization}).")
                raise RuntimeError(ENGINE_START_FAILED)
            self.eos_id = tokenizer.eos_token_id
            self.stop_ids = {self.eos_id} | generation_config_eos(args.model)
            device["used"] += args.gpu_memory_utilization
            self.memory = args.gpu_memory_utilization
            self.max_model_len = args.max_model_len or derived
            self.running = 0  # requests in flight: what a seeded sample depends on without batch invariance
            self.model = AutoModelForCausalLM.from_pretrained(args.model).eval()
            calls["engine_args"] = {"model": args.model, "max_model_len": args.max_model_len,
                                    "gpu_memory_utilization": args.gpu_memory_utilization, "seed": args.seed}
            calls["engines"] += 1

        def shutdown(self):
            device["used"] -= self.memory
            self.memory = 0.0

        def _validate(self, ids, params):
            if not ids:
                raise ValueError("The decoder prompt cannot be empty")
            if len(ids) > self.max_model_len:
                raise ValueError(f"The decoder prompt (length {len(ids)}) is longer than the maximum model length "
                                 f"of {self.max_model_len}.")
            if len(ids) == self.max_model_len:
                raise ValueError(f"The decoder prompt (length {len(ids)}) plus the number of requested output "
                                 f"tokens (at least 1) is longer than the maximum model length of "
                                 f"{self.max_model_len}.")
            if params.logprobs is not None and params.logprobs > MAX_LOGPROBS:
                raise ValueError(f"Requested sample logprobs of {params.logprobs}, which is greater than max "
                                 f"allowed: {MAX_LOGPROBS}")

        def _sample(self, ids, params, batch):
            if params.seed is not None:
                invariant = os.environ.get("VLLM_BATCH_INVARIANT") == "1"
                torch.manual_seed(params.seed + (0 if invariant else 7919 * batch))
            sample = params.temperature > 0
            room = self.max_model_len - len(ids)
            with torch.inference_mode():
                out = self.model.generate(
                    torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=min(params.max_tokens or room, room), do_sample=sample,
                    temperature=params.temperature if sample else None, top_p=params.top_p if sample else None,
                    top_k=None, eos_token_id=sorted(self.stop_ids), pad_token_id=tokenizer.eos_token_id,
                    output_logits=True, return_dict_in_generate=True,
                )
            new = out.sequences[0, len(ids):].tolist()
            steps = None
            if params.logprobs is not None:
                steps = []
                for token_id, logits in zip(new, out.logits):
                    logprobs = logits[0].float().log_softmax(-1)
                    values, indices = logprobs.topk(params.logprobs)
                    order = logprobs.argsort(descending=True).tolist()
                    step = {token_id: Logprob(float(logprobs[token_id]), order.index(token_id) + 1,
                                              tokenizer.decode([token_id]))}
                    for rank, (value, index) in enumerate(zip(values.tolist(), indices.tolist()), start=1):
                        step.setdefault(index, Logprob(value, rank, tokenizer.decode([index])))
                    steps.append(step)
            if new and new[-1] in self.stop_ids:
                return new, steps, "stop", None if new[-1] == self.eos_id else new[-1]
            return new, steps, "length", None

        async def generate(self, prompt, params, request_id):
            ids = _prompt_ids(prompt)
            self._validate(ids, params)
            calls["prompt_lengths"].append(len(ids))
            new, steps, reason, stop_reason = self._sample(ids, params, self.running)
            self.running += 1
            try:
                for count in range(1, len(new) + 1):
                    yield _output(request_id, ids, new, steps, reason, count, stop_reason)
                    await asyncio.sleep(0.002)  # one engine step: other requests advance meanwhile
            except (asyncio.CancelledError, GeneratorExit):
                calls["aborted"].append(request_id)
                raise
            finally:
                self.running -= 1

    class LLMEngine:
        """The offline engine's step loop: requests advance one token per ``step()``."""

        def __init__(self, core):
            self.core, self.requests = core, {}

        def add_request(self, request_id, prompt, params):
            ids = _prompt_ids(prompt)
            self.core._validate(ids, params)
            calls["prompt_lengths"].append(len(ids))
            new, steps, reason, stop_reason = self.core._sample(ids, params, len(self.requests))
            self.requests[request_id] = {"ids": ids, "new": new, "steps": steps, "reason": reason,
                                         "stop_reason": stop_reason, "count": 0}

        def abort_request(self, request_ids, internal=False):
            for request_id in request_ids:
                if self.requests.pop(request_id, None) is not None:
                    calls["aborted"].append(request_id)

        def step(self):
            outputs = []
            for request_id, request in list(self.requests.items()):
                request["count"] += 1
                outputs.append(_output(request_id, request["ids"], request["new"], request["steps"],
                                       request["reason"], request["count"], request["stop_reason"]))
                if outputs[-1].finished:
                    del self.requests[request_id]
            return outputs

    class LLM:
        def __init__(self, model, tensor_parallel_size=1, gpu_memory_utilization=0.9, max_model_len=None, seed=0,
                     **kwargs):
            core = AsyncLLMEngine(AsyncEngineArgs(model, max_model_len, gpu_memory_utilization, seed, **kwargs))
            self.llm_engine = LLMEngine(core)

        def get_tokenizer(self):
            return tokenizer

        def generate(self, prompts, sampling_params=None, use_tqdm=True):
            prompts = prompts if isinstance(prompts, list) else [prompts]
            params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
            engine, added = self.llm_engine, []
            try:
                for number, (prompt, param) in enumerate(zip(prompts, params)):
                    engine.add_request(str(number), prompt, param)
                    added.append(str(number))
            except Exception:
                engine.abort_request(added, internal=True)
                raise
            finals = {}
            while engine.requests:
                finals.update((output.request_id, output) for output in engine.step() if output.finished)
            return [finals[request_id] for request_id in added]

    def cleanup_dist_env_and_memory():
        calls["cleanups"] += 1

    parallel_state = types.ModuleType("vllm.distributed.parallel_state")
    parallel_state.cleanup_dist_env_and_memory = cleanup_dist_env_and_memory
    distributed = types.ModuleType("vllm.distributed")
    distributed.parallel_state = parallel_state
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt, inputs.TextPrompt = TokensPrompt, TextPrompt
    fake.AsyncEngineArgs, fake.AsyncLLMEngine, fake.SamplingParams = AsyncEngineArgs, AsyncLLMEngine, SamplingParams
    fake.LLM = LLM
    fake.distributed, fake.inputs, fake.calls, fake.device = distributed, inputs, calls, device
    fake.submodules = {"vllm.distributed": distributed, "vllm.distributed.parallel_state": parallel_state,
                       "vllm.inputs": inputs}
    return fake


def install(monkeypatch, model_dir, **options) -> types.ModuleType:
    """Put a fake vllm in ``sys.modules`` for one test."""
    import sys

    fake = module(model_dir, **options)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    for name, submodule in fake.submodules.items():
        monkeypatch.setitem(sys.modules, name, submodule)
    return fake
