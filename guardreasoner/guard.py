"""The guard: load a model once, then ``classify(items)`` or ``stream(prompt, response)``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from . import cascade
from .backends.base import Backend, SamplingConfig
from .cascade import RECOMMENDED, check_mode
from .confidence import apply_threshold, attach_confidences
from .models import ModelSpec, logger, model_folder, resolve_model
from .parser import parse_for
from .results import POSITIVE, PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, VERDICT_KEYS, GuardResult
from .stream_parser import ParseEvent, StreamParser
from .template import GuardPrompt, build_prompt

DEFAULT_MAX_INPUT_TOKENS = 4096
CHAT_TEMPLATE_ROOM = 256  # tokens a chat template adds around the user turn (Llama 3's header and date)


@dataclass
class StreamUpdate:
    """One step of a stream: the new text, what it settled, and (on the last update) the full result."""

    delta: str
    text: str
    events: list[ParseEvent] = field(default_factory=list)
    elapsed_s: float = 0.0
    result: GuardResult | None = None
    screen: GuardResult | None = None  # reasoning="auto"/"off": the screen's verdicts, before any reasoning


def _item(item) -> tuple[str, str | None]:
    if isinstance(item, str):
        return item, None
    if not isinstance(item, dict) or "prompt" not in item:
        raise ValueError(f"each item needs a 'prompt' (and optionally a 'response'); got {item!r:.80}")
    response = item.get("response")
    return item["prompt"], (response if response not in ("", None) else None)


class Guard:
    def __init__(
        self,
        backend: Backend,
        *,
        model_name: str | None = None,
        sampling: SamplingConfig | None = None,
        max_input_tokens: int | None = DEFAULT_MAX_INPUT_TOKENS,
        fail_closed: bool = True,
        thresholds: dict[str, float] | None = None,
        fallback_reason: str | None = None,
        screen=None,
        reasoning: str = "full",
    ):
        """``fail_closed`` maps an unknown request or reply verdict to harmful (flagged as such);
        ``thresholds`` (e.g. ``{"prompt_harmfulness": 0.3}``) pick the positive label at that probability
        instead of 0.5; ``reasoning`` is full, off or auto, the last two with a bound ``screen`` (see cascade.py)."""
        check_mode(reasoning, has_screen=screen is not None)
        self.screen = screen
        self.reasoning = reasoning
        self.backend = backend
        self.model_name = model_name or backend.model_id
        self.sampling = sampling or SamplingConfig()
        self.max_input_tokens = max_input_tokens
        self.fail_closed = fail_closed
        self.thresholds = dict(thresholds or {})
        unknown = set(self.thresholds) - set(POSITIVE)
        if unknown:
            raise ValueError(f"thresholds for unknown verdicts {sorted(unknown)}; use {', '.join(VERDICT_KEYS)}")
        self.fallback_reason = fallback_reason

    @property
    def mode(self) -> str:
        return self.backend.mode

    def with_sampling(self, **changes) -> Guard:
        """The same guard and loaded model with other decoding settings (e.g. ``max_new_tokens=256``)."""
        copy = Guard.__new__(Guard)
        copy.__dict__.update(self.__dict__)
        copy.sampling = replace(self.sampling, **changes)
        return copy

    def with_reasoning(self, reasoning: str) -> Guard:
        """The same guard, model and screen in another reasoning mode (full, auto, off)."""
        check_mode(reasoning, has_screen=self.screen is not None)
        copy = Guard.__new__(Guard)
        copy.__dict__.update(self.__dict__)
        copy.reasoning = reasoning
        return copy

    def build(self, prompt: str, response: str | None = None) -> GuardPrompt:
        return build_prompt(
            prompt, response, tokenizer=self.backend.tokenizer, max_input_tokens=self.max_input_tokens
        )

    def model_input(self, prompt: str, response: str | None = None) -> str:
        """Exactly what the model reads for this item (after the chat template in chat mode)."""
        return self.backend.render(self.build(prompt, response).text)

    def _result(self, built: GuardPrompt, generation) -> GuardResult:
        has_response = built.response is not None
        parsed = parse_for(generation.text, built.prompt, built.response)
        verdicts = parsed.verdicts
        if generation.tokens and generation.top_logprobs:
            attach_confidences(generation.text, verdicts, generation.tokens, generation.top_logprobs)
        for key, threshold in self.thresholds.items():
            apply_threshold(verdicts[key], threshold)
        if self.fail_closed:
            for key in (PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS) if has_response else (PROMPT_HARMFULNESS,):
                if verdicts[key].label is None:
                    verdicts[key].label = "harmful"
                    verdicts[key].fail_closed = True
        flags = list(parsed.flags)
        if generation.finish_reason == "length":
            flags.append("truncated")
        if generation.finish_reason == "error":
            flags.append("generation_error")  # the backend could not run this row (e.g. over the context)
        if built.truncated:
            flags.append("input_truncated")
        return GuardResult(
            prompt=built.given_prompt,
            response=built.given_response,
            model_input=built.text,
            output=generation.text,
            verdicts=verdicts,
            reasoning=parsed.reasoning,
            flags=sorted(set(flags)),
            model=self.model_name,
            input_truncated=built.truncated,
            input_tokens=generation.prompt_tokens,
            output_tokens=generation.completion_tokens,
            latency_s=generation.latency_s,
            finish_reason=generation.finish_reason,
        )

    def classify(self, items: Iterable, *, progress: bool = False) -> list[GuardResult]:
        """Classify dicts with ``prompt`` and optional ``response`` (or plain prompt strings), in order."""
        if self.reasoning != "full":
            return cascade.classify(self, [_item(item) for item in items], progress=progress)
        return self._reason(items, progress=progress)

    def _reason(self, items: Iterable, *, progress: bool = False) -> list[GuardResult]:
        """The reasoning guard on every item."""
        built = [self.build(*_item(item)) for item in items]
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(built), desc="classify", unit="row")
        try:
            generations = self.backend.generate(
                [b.text for b in built], self.sampling, on_progress=bar.update if bar else None
            )
        finally:
            if bar:
                bar.close()
        return [self._result(b, g) for b, g in zip(built, generations)]

    def classify_one(self, prompt: str, response: str | None = None) -> GuardResult:
        return self.classify([{"prompt": prompt, "response": response}])[0]

    def stream(
        self, prompt: str, response: str | None = None, *, stop: threading.Event | None = None
    ) -> Iterator[StreamUpdate]:
        """Yield updates as the model writes; the last one carries the complete ``GuardResult``."""
        if self.reasoning != "full":
            yield from cascade.stream(self, prompt, response, stop)
            return
        yield from self._stream(prompt, response, stop=stop)

    def _stream(self, prompt: str, response: str | None = None, *, stop: threading.Event | None = None
                ) -> Iterator[StreamUpdate]:
        built = self.build(prompt, response)
        parser = StreamParser((built.prompt, built.response or ""), has_response=built.response is not None)
        began = time.perf_counter()
        for chunk in self.backend.stream(built.text, self.sampling, stop=stop):
            if chunk.generation is not None:
                events, _ = parser.finish()
                yield StreamUpdate("", parser.text, events, time.perf_counter() - began,
                                   self._result(built, chunk.generation))
                return
            yield StreamUpdate(chunk.text, parser.text + chunk.text, parser.feed(chunk.text),
                               time.perf_counter() - began)

    def close(self) -> None:
        self.backend.close()


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


CT2_OPTIONS = ("compute_type", "inter_threads", "intra_threads", "static_prompt")  # CTranslate2's own settings


def choose_backend(spec: ModelSpec, backend: str = "auto") -> str:
    """``auto``: openai for URLs; vLLM on CUDA where installed (not for the embedded model); CTranslate2 on
    machines without CUDA where it is installed and converts the model verifiably; transformers otherwise."""
    from .backends.ctranslate2_backend import ctranslate2_available, why_not_ctranslate2
    from .backends.vllm_backend import vllm_available

    if backend != "auto":
        return backend
    if spec.kind == "endpoint":
        return "openai"
    cuda = _cuda_available()
    if cuda and spec.kind != "embedded" and vllm_available():
        return "vllm"
    if not cuda and ctranslate2_available():
        if (doubt := why_not_ctranslate2(model_folder(spec))) is None:
            return "ctranslate2"
        logger.warning("%s: %s; auto runs it on transformers", spec.name, doubt)
    return "transformers"


def make_backend(spec: ModelSpec, backend: str = "auto", *, mode: str | None = None, batch_size: int | None = None,
                 context_tokens: int | None = None, **options) -> Backend:
    """Build the backend for a resolved model (``auto``: see ``choose_backend``). ``batch_size`` is the
    transformers and CTranslate2 backends'; vLLM and endpoints batch by themselves. A model CTranslate2 cannot
    convert runs on transformers, with one log line saying so. ``context_tokens`` (input budget + new tokens)
    sizes vLLM's context."""
    mode = mode or spec.default_mode
    backend = choose_backend(spec, backend)
    ct2_options = {name: value for name in CT2_OPTIONS if (value := options.pop(name, None)) is not None}
    if backend in ("transformers", "ctranslate2") and batch_size is not None:
        options["batch_size"] = batch_size
    if backend == "ctranslate2":
        from .backends.ctranslate2_backend import ConversionUnsupported, CTranslate2Backend

        if "batch_size" in options:
            ct2_options["batch_size"] = options["batch_size"]
        try:
            return CTranslate2Backend(model_folder(spec), mode=mode, model_id=spec.name, **ct2_options)
        except ConversionUnsupported as error:
            logger.warning("%s; running %s on transformers instead", error, spec.name)
            backend = "transformers"
    if backend == "transformers":
        from .backends.transformers_backend import TransformersBackend

        return TransformersBackend(model_folder(spec), mode=mode, model_id=spec.name, **options)
    if backend == "vllm":
        from .backends.vllm_backend import VLLMBackend

        if context_tokens is not None:
            options.setdefault("context_tokens", context_tokens)
        return VLLMBackend(model_folder(spec), mode=mode, **options)
    if backend == "openai":
        from .backends.openai_backend import OpenAIBackend

        if spec.kind != "endpoint":
            raise ValueError("the openai backend needs an http(s) endpoint URL as the model")
        return OpenAIBackend(spec.location, options.pop("served_model", None), mode=mode, **options)
    raise ValueError(f"unknown backend {backend!r}; choose auto, transformers, ctranslate2, vllm or openai")


def load_guard(
    model: str | None = None,
    backend: str = "auto",
    *,
    mode: str | None = None,
    fallback: bool = False,
    fail_closed: bool = True,
    max_new_tokens: int = 2048,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_logprobs: int = 5,
    max_input_tokens: int | None = DEFAULT_MAX_INPUT_TOKENS,
    thresholds: dict[str, float] | None = None,
    reasoning: str = "full",
    screen: str | None = None,
    **backend_options,
) -> Guard:
    """Load a guard. ``model``: a released name (GuardReasoner-1B/3B/8B or its hub id; default 1B), a local
    folder, ``embedded`` (SmolLM2-135M-Instruct, offline), or an OpenAI-compatible URL. ``fallback=True``
    replaces a model the hub cannot deliver with the embedded one (the app and CLI do this). ``backend``: auto,
    ctranslate2, transformers, vllm or openai (see ``choose_backend``); ``backend_options`` go to it (e.g.
    ``compute_type="int8"`` for CTranslate2, ``batch_size``).
    ``reasoning``: full (reason on every item), off (the screen alone) or auto (the screen where it is sure,
    reasoning for the rest); ``screen`` is a screen folder (default: the one shipped for the model). With
    ``reasoning="full"`` a ``screen`` given is loaded too, so that ``with_reasoning`` can switch modes later;
    ``screen="shipped"`` loads the model's shipped screen where there is one (the app does this).
    ``reasoning="recommended"`` takes the mode measured best for the model (``off`` for the embedded guard,
    ``full`` for models without a screen; see ``screen.recommended_reasoning``): the CLI's and the service's
    default."""
    if reasoning != RECOMMENDED:
        check_mode(reasoning)  # before loading anything; the screen is found below
    spec = resolve_model(model, fallback=fallback)
    if reasoning == RECOMMENDED:
        from .screen import recommended_reasoning

        reasoning = recommended_reasoning(spec.name)
    chosen_screen = None
    if screen == "shipped":
        from .screen import shipped_screen_folder

        screen = shipped_screen_folder(spec.name)
        screen = str(screen) if screen else None
    if reasoning != "full" or screen:
        from .models import weights_id
        from .screen import default_screen_folder, load_screen

        chosen_screen = load_screen(screen or default_screen_folder(spec.name), model=spec.name,
                                    weights=lambda: weights_id(spec))
        if chosen_screen.feature_kind == "guard-state" and backend == "auto":
            backend = "transformers"  # the screen reads the model's hidden states, which only transformers exposes
    # vLLM's context must hold the longest input plus the answer (and the chat template's few tokens).
    context_tokens = (max_input_tokens or DEFAULT_MAX_INPUT_TOKENS) + max_new_tokens + CHAT_TEMPLATE_ROOM
    built = make_backend(spec, backend, mode=mode, context_tokens=context_tokens, **backend_options)
    guard = Guard(
        built,
        model_name=spec.name,
        sampling=SamplingConfig(max_new_tokens, temperature, top_p, top_logprobs),
        max_input_tokens=max_input_tokens,
        fail_closed=fail_closed,
        thresholds=thresholds,
        fallback_reason=spec.fallback_reason,
    )
    if chosen_screen is not None:
        guard.screen = chosen_screen.bind(guard)
        guard.reasoning = reasoning
    return guard
