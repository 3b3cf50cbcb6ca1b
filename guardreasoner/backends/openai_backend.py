"""Any OpenAI-compatible server (``vllm serve``, hosted APIs; the tests' ``tests/openai_server.py``).

Raw mode uses the completions endpoint with the exact prompt text; chat mode sends one user message.

One retry policy, ours (the client's own retries are off): a request is sent again after a connection error or
a "busy" status (429, 502, 503, 504), with exponential backoff; never after a timeout, since the server may still
be writing that answer and asking again would compute it twice. The timeout is sized to the request: a fixed
allowance plus the new tokens at a slow server's pace, unless ``timeout`` fixes it.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from .base import Backend, Generation, ProgressCallback, SamplingConfig, StreamChunk

RETRY_STATUSES = frozenset({429, 502, 503, 504})  # the server is busy or restarting: nothing was computed
CONNECT_SECONDS = 30.0  # fixed allowance per request (connection, queueing, the prompt)
SLOW_TOKENS_PER_SECOND = 10.0  # a busy server's pace per stream; a request may take its new tokens at this pace
BACKOFF_SECONDS = 0.5  # first wait between tries; doubles each time, capped at 8 s, with jitter


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        mode: str = "raw",
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int = 3,
        concurrency: int = 8,
        tokenizer=None,
    ):
        from openai import OpenAI

        self.client = OpenAI(
            base_url=base_url.rstrip("/"),
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=timeout if timeout is not None else CONNECT_SECONDS,
            max_retries=0,  # retries are ours (send): the client would also retry timeouts
        )
        self.timeout = timeout
        self.max_retries = max_retries
        if model is None:
            models = self.client.models.list().data
            if not models:
                raise RuntimeError(f"{base_url} serves no models; pass model=")
            model = models[0].id
        super().__init__(model, mode, tokenizer)
        self.base_url = base_url
        self.concurrency = concurrency

    def render(self, prompt: str) -> str:
        return prompt  # the server applies its own chat template in chat mode

    def request_timeout(self, sampling: SamplingConfig) -> float:
        """Seconds one request may take: ``timeout`` if given, else sized to its new tokens."""
        if self.timeout is not None:
            return self.timeout
        return CONNECT_SECONDS + sampling.max_new_tokens / SLOW_TOKENS_PER_SECOND

    def send(self, create):
        """Call ``create()`` under the retry policy above."""
        import openai

        for attempt in range(self.max_retries + 1):
            try:
                return create()
            except openai.APITimeoutError:
                raise  # the server may still be generating: a second request would compute the answer twice
            except openai.APIConnectionError as error:
                failure = error
            except openai.APIStatusError as error:
                if error.status_code not in RETRY_STATUSES:
                    raise
                failure = error
            if attempt == self.max_retries:
                raise failure
            time.sleep(min(BACKOFF_SECONDS * 2**attempt, 8.0) * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable")

    def _request(self, prompt: str, sampling: SamplingConfig, stream: bool):
        return self.send(lambda: self._create(prompt, sampling, stream))

    def _create(self, prompt: str, sampling: SamplingConfig, stream: bool):
        common = dict(
            model=self.model_id,
            timeout=self.request_timeout(sampling),
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            stream=stream,
        )
        if sampling.seed is not None:
            common["seed"] = sampling.seed
        if stream:
            common["stream_options"] = {"include_usage": True}
        if self.mode == "raw":
            if sampling.top_logprobs:
                common["logprobs"] = sampling.top_logprobs
            return self.client.completions.create(prompt=prompt, **common)
        if sampling.top_logprobs:
            common.update(logprobs=True, top_logprobs=sampling.top_logprobs)
        return self.client.chat.completions.create(messages=[{"role": "user", "content": prompt}], **common)

    @staticmethod
    def _logprobs(choice) -> tuple[list[str] | None, list[dict[str, float]] | None]:
        logprobs = getattr(choice, "logprobs", None)
        if not logprobs:
            return None, None
        if getattr(logprobs, "content", None) is not None:  # chat format
            tokens = [item.token for item in logprobs.content]
            top = [{alt.token: alt.logprob for alt in item.top_logprobs or []} for item in logprobs.content]
            return tokens, top
        return list(logprobs.tokens or []), [dict(step or {}) for step in (logprobs.top_logprobs or [])]

    def _one(self, prompt: str, sampling: SamplingConfig) -> Generation:
        began = time.perf_counter()
        reply = self._request(prompt, sampling, stream=False)
        choice = reply.choices[0]
        text = choice.text if self.mode == "raw" else (choice.message.content or "")
        tokens, top = self._logprobs(choice)
        usage = reply.usage
        return Generation(
            text=text,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_s=time.perf_counter() - began,
            finish_reason=choice.finish_reason,
            tokens=tokens,
            top_logprobs=top,
        )

    def generate(self, prompts, sampling, on_progress: ProgressCallback | None = None):
        began = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(prompts)))) as pool:
            futures = [pool.submit(self._one, prompt, sampling) for prompt in prompts]
            results = []
            for future in futures:
                results.append(future.result())
                if on_progress:
                    on_progress(1)
        # Requests overlap, so the per-row figure is the wall time shared out, as for a local batch.
        shared = (time.perf_counter() - began) / max(len(prompts), 1)
        for generation in results:
            generation.latency_s = shared
        return results

    def stream(self, prompt, sampling, stop: threading.Event | None = None) -> Iterator[StreamChunk]:
        began = time.perf_counter()
        response = self._request(prompt, sampling, stream=True)
        parts: list[str] = []
        tokens: list[str] = []
        top: list[dict[str, float]] = []
        finish_reason = None
        usage = None
        try:
            for event in response:
                if event.usage:
                    usage = event.usage
                for choice in event.choices:
                    piece = choice.text if self.mode == "raw" else (choice.delta.content or "")
                    step_tokens, step_top = self._logprobs(choice)
                    tokens += step_tokens or []
                    top += step_top or []
                    finish_reason = choice.finish_reason or finish_reason
                    if piece:
                        parts.append(piece)
                        yield StreamChunk(piece)
                if stop is not None and stop.is_set():
                    finish_reason = "interrupted"
                    break
        finally:
            response.close()
        yield StreamChunk(
            "",
            Generation(
                text="".join(parts),
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else len(tokens),
                latency_s=time.perf_counter() - began,
                finish_reason=finish_reason,
                tokens=tokens or None,
                top_logprobs=top or None,
            ),
        )

    def close(self) -> None:
        self.client.close()
