"""vLLM backend for GPUs: the paper's evaluation engine. vLLM is imported only when this backend is built."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

from .base import Backend, Generation, ProgressCallback, SamplingConfig, StreamChunk


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "the vllm backend needs vLLM on a CUDA machine: pip install -r requirements/gpu.txt "
            "(or use backend='transformers')"
        ) from error
    return vllm


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        mode: str = "raw",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = 4096,
        seed: int = 0,
        **llm_kwargs,
    ):
        self._vllm = _import_vllm()
        self.llm = self._vllm.LLM(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            **llm_kwargs,
        )
        super().__init__(model, mode, self.llm.get_tokenizer())
        self._lock = threading.Lock()

    def _params(self, sampling: SamplingConfig, offset: int = 0):
        return self._vllm.SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            logprobs=sampling.top_logprobs or None,
            seed=None if sampling.seed is None else sampling.seed + offset,
        )

    def _input(self, prompt: str):
        if self.mode == "chat":
            # The chat template writes its own BOS; token ids keep vLLM from adding a second one.
            return {"prompt_token_ids": self.tokenizer(self.render(prompt), add_special_tokens=False)["input_ids"]}
        return prompt

    @staticmethod
    def _generation(request_output, latency_s: float) -> Generation:
        completion = request_output.outputs[0]
        tokens = top = None
        if completion.logprobs:
            tokens, top = [], []
            for token_id, step in zip(completion.token_ids, completion.logprobs):
                chosen = step.get(token_id)
                tokens.append(chosen.decoded_token if chosen is not None else "")
                top.append({item.decoded_token: item.logprob for item in step.values()})
        return Generation(
            text=completion.text,
            prompt_tokens=len(request_output.prompt_token_ids or []),
            completion_tokens=len(completion.token_ids),
            latency_s=latency_s,
            finish_reason=completion.finish_reason,
            tokens=tokens,
            top_logprobs=top,
        )

    def generate(self, prompts, sampling, on_progress: ProgressCallback | None = None):
        began = time.perf_counter()
        with self._lock:
            # A seed per prompt: with one shared seed, repeated prompts (k samples for mining) would be identical.
            params = [self._params(sampling, offset) for offset in range(len(prompts))]
            outputs = self.llm.generate([self._input(p) for p in prompts], params, use_tqdm=False)
        share = (time.perf_counter() - began) / max(len(prompts), 1)
        if on_progress:
            on_progress(len(prompts))
        return [self._generation(output, share) for output in outputs]

    def stream(self, prompt, sampling, stop: threading.Event | None = None) -> Iterator[StreamChunk]:
        engine = self.llm.llm_engine
        request_id = f"guard-{uuid.uuid4().hex}"
        began = time.perf_counter()
        text = ""
        final = None
        with self._lock:
            engine.add_request(request_id, self._input(prompt), self._params(sampling))
            try:
                while final is None:
                    if stop is not None and stop.is_set():
                        engine.abort_request([request_id])
                        break
                    for output in engine.step():
                        if output.request_id != request_id:
                            continue
                        cumulative = output.outputs[0].text
                        if len(cumulative) > len(text):
                            yield StreamChunk(cumulative[len(text):])
                            text = cumulative
                        if output.finished:
                            final = output
            finally:
                if final is None:
                    engine.abort_request([request_id])
        if final is None:
            yield StreamChunk("", Generation(text=text, finish_reason="interrupted", latency_s=time.perf_counter() - began))
            return
        yield StreamChunk("", self._generation(final, time.perf_counter() - began))
