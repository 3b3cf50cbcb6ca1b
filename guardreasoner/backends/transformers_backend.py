"""Hugging Face transformers backend: batched generation with left padding, streaming through a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from .base import Backend, Generation, ProgressCallback, SamplingConfig, StreamChunk, length_groups
from .heap import bound_heap_growth


def _torch():
    import torch

    return torch


class _TopLogprobsRecorder:
    """A logits processor that keeps the top-k log-probabilities of every step and changes nothing.

    Custom processors run before temperature and top-p, so these are the model's own probabilities.
    """

    def __init__(self, k: int):
        self.k = k
        self.steps: list[tuple] = []  # (values [batch, k], indices [batch, k]) per generated token

    def __call__(self, input_ids, scores):
        logprobs = scores.float().log_softmax(dim=-1)
        values, indices = logprobs.topk(self.k, dim=-1)
        self.steps.append((values.cpu(), indices.cpu()))
        return scores


class _StopOnEvent:
    """A stopping criterion that ends generation when the caller sets an event (the app's Stop button)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        torch = _torch()
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(
        self,
        model,
        tokenizer=None,
        *,
        mode: str = "raw",
        device: str | None = None,
        dtype=None,
        batch_size: int = 8,
        max_batch_tokens: int | None = 4096,
        model_id: str | None = None,
    ):
        """``model`` is a hub id, a local folder, or an already loaded ``PreTrainedModel``."""
        torch = _torch()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model, str):
            model_id = model_id or model
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            if dtype is None:
                dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device)
        elif tokenizer is None:
            raise ValueError("pass the tokenizer along with a loaded model")
        model.eval()
        super().__init__(model_id or getattr(model, "name_or_path", "model"), mode, tokenizer)
        self.model = model
        self.device = model.device
        if self.device.type == "cpu":
            bound_heap_growth()  # the growing key/value cache would otherwise fragment the heap (see heap.py)
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens  # long rows go in smaller groups (see length_groups)
        # Left padding keeps every prompt's last token next to its first generated token.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        # Public: the ids that end a generation (a benchmark replaces them with an unreachable id to force N tokens).
        self.eos_ids = self._end_token_ids()
        self._token_text: dict[int, str] = {}
        self._lock = threading.Lock()

    def _end_token_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def _token(self, token_id: int) -> str:
        text = self._token_text.get(token_id)
        if text is None:
            text = self._token_text[token_id] = self.tokenizer.decode([token_id])
        return text

    def _generation_kwargs(self, sampling: SamplingConfig) -> dict:
        from transformers import GenerationConfig

        sample = sampling.temperature > 0
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=sample,
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids),
        )
        if sampling.seed is not None:
            _torch().manual_seed(sampling.seed)
        return {"generation_config": config}

    def _encode(self, texts: list[str], templated: bool):
        # A chat template already writes the BOS token; a raw prompt gets it from the tokenizer, as vLLM does.
        return self.tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=not templated
        ).to(self.device)

    def _finish(
        self, prompt_tokens: int, new_ids, recorder, row: int, latency_s: float, interrupted: bool = False
    ) -> Generation:
        ids = new_ids.tolist()
        end = next((i for i, token in enumerate(ids) if token in self.eos_ids), None)
        stopped = end is not None
        if stopped:
            ids = ids[:end]  # what follows is padding from rows that ran longer
        reason = "stop" if stopped else ("interrupted" if interrupted else "length")
        top = None
        if recorder is not None:
            top = []
            for values, indices in recorder.steps[: len(ids)]:
                top.append({self._token(int(i)): float(v) for v, i in zip(values[row], indices[row])})
        return Generation(
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            prompt_tokens=prompt_tokens,
            completion_tokens=len(ids) + (1 if stopped else 0),
            latency_s=latency_s,
            finish_reason=reason,
            tokens=[self._token(t) for t in ids],
            top_logprobs=top,
        )

    def complete(
        self,
        texts: list[str],
        sampling: SamplingConfig,
        *,
        templated: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> list[Generation]:
        """Generate for model-ready texts (already rendered), batching prompts of similar length together."""
        if not texts:  # the tokenizer fails on an empty batch (a cascade may leave nothing to reason about)
            return []
        torch = _torch()
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=not templated)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: lengths[i], reverse=True)
        results: list[Generation | None] = [None] * len(texts)
        for batch in length_groups(order, lengths, self.batch_size, self.max_batch_tokens):
            encoded = self._encode([texts[i] for i in batch], templated)
            recorder = _TopLogprobsRecorder(sampling.top_logprobs) if sampling.top_logprobs else None
            began = time.perf_counter()
            with self._lock, torch.inference_mode():
                output = self.model.generate(
                    **encoded,
                    **self._generation_kwargs(sampling),
                    logits_processor=[recorder] if recorder else None,
                )
            latency = (time.perf_counter() - began) / len(batch)
            width = encoded["input_ids"].shape[1]
            for row, index in enumerate(batch):
                prompt_tokens = int(encoded["attention_mask"][row].sum())
                results[index] = self._finish(prompt_tokens, output[row, width:], recorder, row, latency)
            if on_progress:
                on_progress(len(batch))
        return results  # type: ignore[return-value]

    def complete_stream(
        self,
        text: str,
        sampling: SamplingConfig,
        *,
        templated: bool = False,
        stop: threading.Event | None = None,
    ) -> Iterator[StreamChunk]:
        from transformers import TextIteratorStreamer

        torch = _torch()
        stop = stop or threading.Event()
        encoded = self._encode([text], templated)
        recorder = _TopLogprobsRecorder(sampling.top_logprobs) if sampling.top_logprobs else None
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        outcome: dict = {}

        def run():
            try:
                with self._lock, torch.inference_mode():
                    outcome["output"] = self.model.generate(
                        **encoded,
                        **self._generation_kwargs(sampling),
                        logits_processor=[recorder] if recorder else None,
                        stopping_criteria=[_StopOnEvent(stop)],
                        streamer=streamer,
                    )
            except BaseException as error:  # surfaced in the caller's thread below
                outcome["error"] = error
                streamer.end()

        began = time.perf_counter()
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        finished = False
        try:
            for piece in streamer:
                if piece:
                    yield StreamChunk(piece)
            finished = True
        finally:
            if not finished:  # the consumer stopped listening: stop the model rather than leave it busy
                stop.set()
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        width = encoded["input_ids"].shape[1]
        generation = self._finish(
            int(encoded["attention_mask"][0].sum()), outcome["output"][0, width:], recorder, 0,
            time.perf_counter() - began, interrupted=stop.is_set(),
        )
        yield StreamChunk("", generation)

    def generate(self, prompts, sampling, on_progress=None):
        rendered = [self.render(p) for p in prompts]
        return self.complete(rendered, sampling, templated=self.mode == "chat", on_progress=on_progress)

    def stream(self, prompt, sampling, stop=None):
        return self.complete_stream(self.render(prompt), sampling, templated=self.mode == "chat", stop=stop)
