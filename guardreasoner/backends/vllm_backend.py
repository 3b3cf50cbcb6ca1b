"""vLLM backend for GPUs: the paper's evaluation engine. vLLM is imported only when this backend is built.

It drives vLLM's async engine (``AsyncLLMEngine``, the engine behind ``vllm serve``) from one event-loop thread,
so batch rows and any number of streams share the running batch instead of waiting in turn behind a lock.

What the real engine does and this backend plans for (read in vllm-project/vllm):
- ``v1/engine/input_processor.py`` rejects a prompt of ``max_model_len`` tokens or more with a ValueError. Each
  row is checked here first and a row that cannot fit fails alone (``finish_reason="error"``); the others run.
- The context (``max_model_len``) is sized from the request: the input budget plus the new tokens, capped by the
  length vLLM derives from the model's config.json (``config/model.py``, ``_get_and_verify_max_len``: the least
  of its length keys, a ``model_max_length`` there overriding them); each row's ``max_tokens`` is capped to the
  room its prompt leaves.
- ``SamplingParams`` allows at most 20 logprobs per token (``max_logprobs``); more is clamped.
- vLLM stops on the tokenizer's EOS and on the generation_config.json EOS ids (Llama 3's ``<|eot_id|>``). The stop
  token stays in ``token_ids`` with a logprob entry, but not in the text (``v1/engine/detokenizer.py``): it is
  dropped from ``tokens`` here so that the tokens join to the text, and counted in ``completion_tokens`` as the
  other backends count it.
- A second engine that does not fit the GPU fails inside vLLM's engine-core process; the caller gets only
  "Engine core initialization failed", so that becomes ``EngineStartFailed`` saying what to check.
"""

from __future__ import annotations

import asyncio
import gc
import queue
import threading
import time
import uuid
from collections.abc import Iterator

from ..errors import GuardReasonerError
from .base import Backend, Generation, ProgressCallback, SamplingConfig, StreamChunk

MAX_LOGPROBS = 20  # vLLM's default ModelConfig.max_logprobs: SamplingParams asking for more are rejected
DEFAULT_CONTEXT_TOKENS = 4096 + 2048 + 256  # the guard's default input budget + new tokens + chat-template room


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise ImportError(
            "the vllm backend needs vLLM on a CUDA machine: pip install -r requirements/gpu.txt "
            "-c requirements/constraints-gpu.txt (or use backend='transformers')"
        ) from error
    return vllm


# The config.json keys vLLM derives the longest context from (config/model.py, _get_and_verify_max_len).
_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
                "max_target_positions", "max_sequence_length", "max_seq_length", "seq_len")


def context_length(model: str, requested: int | None, needed: int) -> int:
    """``max_model_len`` for the engine: what the caller asked for, else what the request needs (input budget
    plus new tokens), never more than vLLM derives from the model's config (it refuses a longer one). RoPE
    scaling factors, which only raise vLLM's figure, are left out, so this may stay below it."""
    if requested is not None:
        return requested
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    config = getattr(config, "text_config", None) or config
    lengths = [value for key in _LENGTH_KEYS if (value := getattr(config, key, None)) is not None]
    limit = getattr(config, "model_max_length", None) or min(lengths, default=None)
    return min(needed, limit) if limit else needed


def free_gpu_memory() -> None:
    """What vLLM's docs and tests do between two engines in one process: tear down the distributed state,
    collect garbage, empty torch's CUDA cache."""
    try:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
    except ImportError:
        cleanup_dist_env_and_memory = None
    if cleanup_dist_env_and_memory is not None:
        cleanup_dist_env_and_memory()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


class RowTooLong(GuardReasonerError, ValueError):
    """A model input with no room left for one new token in the engine's context."""


class EngineStartFailed(GuardReasonerError, RuntimeError):
    """vLLM could not start an engine; the message says what to check (vLLM's own log names the cause)."""


def _free_gpu_note() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            return f" ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free now)"
    except (ImportError, RuntimeError):
        pass
    return ""


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        mode: str = "raw",
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        context_tokens: int = DEFAULT_CONTEXT_TOKENS,
        seed: int = 0,
        tokenizer=None,
        **engine_kwargs,
    ):
        """``context_tokens``: what one request needs (input budget + max new tokens); ``max_model_len``
        overrides it. ``load_guard`` passes the guard's own figures."""
        self._vllm = _import_vllm()
        from transformers import AutoTokenizer
        from vllm.inputs import TokensPrompt

        self._tokens_prompt = TokensPrompt  # vLLM's schema for a tokenized prompt (a TypedDict)

        super().__init__(model, mode, tokenizer or AutoTokenizer.from_pretrained(model))
        self.max_model_len = context_length(model, max_model_len, context_tokens)
        self._special_ids = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        args = self._vllm.AsyncEngineArgs(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=self.max_model_len,
            seed=seed,
            **engine_kwargs,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True)
        self._thread.start()
        try:
            self.engine = self._call(self._start(args))
        except RuntimeError as error:
            self._stop_loop()
            raise EngineStartFailed(
                f"vLLM could not start an engine for {model}: {error} Most often the GPU lacks the memory: "
                f"gpu_memory_utilization={gpu_memory_utilization} of it must be free{_free_gpu_note()}; close the "
                "model loaded before (another engine in this process or another process may hold it) or lower "
                "gpu_memory_utilization. vLLM's log above names the cause."
            ) from error
        except BaseException:
            self._stop_loop()
            raise

    async def _start(self, args):
        return self._vllm.AsyncLLMEngine.from_engine_args(args)

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # --- one request -------------------------------------------------------------------------------------

    def _token_ids(self, prompt: str) -> list[int]:
        if self.mode == "chat":  # the chat template writes its own BOS
            return self.tokenizer(self.render(prompt), add_special_tokens=False)["input_ids"]
        return self.tokenizer(prompt)["input_ids"]  # as vLLM tokenizes a text prompt

    def _request(self, prompt: str, sampling: SamplingConfig, offset: int = 0):
        """The engine's prompt and SamplingParams for one row; RowTooLong when it cannot fit the context."""
        ids = self._token_ids(prompt)
        room = self.max_model_len - len(ids)
        if room < 1:
            raise RowTooLong(
                f"the model input is {len(ids)} tokens and the context (max_model_len) holds {self.max_model_len}; "
                "lower max_input_tokens or raise max_model_len"
            )
        params = self._vllm.SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=min(sampling.max_new_tokens, room),
            logprobs=min(sampling.top_logprobs, MAX_LOGPROBS) or None,
            seed=None if sampling.seed is None else sampling.seed + offset,
        )
        return self._tokens_prompt(prompt_token_ids=ids), params

    async def _final(self, request, params):
        final = None
        async for output in self.engine.generate(request, params, f"guard-{uuid.uuid4().hex}"):
            final = output
        return final

    def _generation(self, request_output, latency_s: float) -> Generation:
        completion = request_output.outputs[0]
        token_ids = list(completion.token_ids)
        steps = list(completion.logprobs or [])
        # vLLM keeps the token it stopped on (the EOS, or a generation_config EOS such as <|eot_id|>, special or
        # not) in token_ids with a logprob entry, but not in the text; we pass no stop strings, so "stop" always
        # means such a token. Drop it, and trailing special tokens the text skips, so the tokens join to the text.
        kept = len(token_ids) - (1 if completion.finish_reason == "stop" and token_ids else 0)
        while kept and token_ids[kept - 1] in self._special_ids:
            kept -= 1
        tokens = top = None
        if steps:
            tokens, top = [], []
            for token_id, step in zip(token_ids[:kept], steps[:kept]):
                chosen = step.get(token_id)
                tokens.append(chosen.decoded_token if chosen is not None else "")
                top.append({item.decoded_token: item.logprob for item in step.values()})
        return Generation(
            text=completion.text,
            prompt_tokens=len(request_output.prompt_token_ids or []),
            completion_tokens=len(token_ids),
            latency_s=latency_s,
            finish_reason=completion.finish_reason,
            tokens=tokens,
            top_logprobs=top,
        )

    @staticmethod
    def _failed(error: BaseException, latency_s: float = 0.0) -> Generation:
        return Generation(text="", latency_s=latency_s, finish_reason="error", error=str(error))

    # --- the Backend interface ---------------------------------------------------------------------------

    def generate(self, prompts, sampling, on_progress: ProgressCallback | None = None):
        began = time.perf_counter()
        futures: list = []
        for offset, prompt in enumerate(prompts):
            # A seed per prompt: with one shared seed, repeated prompts (k samples for mining) would be identical.
            try:
                request, params = self._request(prompt, sampling, offset)
            except ValueError as error:  # too long, or parameters vLLM refuses: this row fails, the rest run
                futures.append(error)
                continue
            futures.append(asyncio.run_coroutine_threadsafe(self._final(request, params), self._loop))
        outputs: list = []
        for future in futures:
            if isinstance(future, BaseException):
                outputs.append(future)
            else:
                try:
                    outputs.append(future.result())
                except ValueError as error:  # the engine's own validation of one request
                    outputs.append(error)
            if on_progress:
                on_progress(1)
        share = (time.perf_counter() - began) / max(len(prompts), 1)
        return [self._failed(o, share) if isinstance(o, BaseException) else self._generation(o, share)
                for o in outputs]

    def stream(self, prompt, sampling, stop: threading.Event | None = None) -> Iterator[StreamChunk]:
        began = time.perf_counter()
        try:
            request, params = self._request(prompt, sampling)
        except ValueError as error:
            yield StreamChunk("", self._failed(error, time.perf_counter() - began))
            return
        updates: queue.Queue = queue.Queue()

        async def run():
            try:
                async for output in self.engine.generate(request, params, f"guard-{uuid.uuid4().hex}"):
                    updates.put(output)
            except BaseException as error:  # cancelled (Stop) or refused: handed to the reading thread
                updates.put(error)
                raise
            updates.put(None)

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        text, final = "", None
        try:
            while True:
                if stop is not None and stop.is_set():
                    break
                try:
                    update = updates.get(timeout=0.05)
                except queue.Empty:
                    continue
                if update is None:
                    break
                if isinstance(update, BaseException):
                    if isinstance(update, ValueError):
                        yield StreamChunk("", self._failed(update, time.perf_counter() - began))
                        return
                    raise update
                cumulative = update.outputs[0].text
                if len(cumulative) > len(text):
                    yield StreamChunk(cumulative[len(text):])
                    text = cumulative
                if update.finished:
                    final = update
        finally:
            if final is None:
                future.cancel()  # cancelling the engine's generate() aborts the request inside vLLM
        if final is None:
            yield StreamChunk("", Generation(text=text, finish_reason="interrupted",
                                             latency_s=time.perf_counter() - began))
            return
        yield StreamChunk("", self._generation(final, time.perf_counter() - began))

    @staticmethod
    async def _cancel_pending() -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._loop.is_running():
            self._loop.close()

    def close(self) -> None:
        """Shut the engine down and free its GPU memory, so that another model can load in this process."""
        engine = getattr(self, "engine", None)
        if engine is None:
            return
        self.engine = None
        self._call(self._cancel_pending())  # abort what still runs (an abandoned stream) inside the engine
        engine.shutdown()
        del engine
        self._stop_loop()
        free_gpu_memory()
