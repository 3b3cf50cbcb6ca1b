"""The reasoning guard: load a model once, then ``classify(items)`` or ``stream(prompt, response)``.

``Guard`` runs the reasoning model on every item, in three public steps: ``prepare`` (the prompts the model
reads), the backend's ``generate``, and ``read`` (a ``GuardResult`` from one generation). ``cascade.Cascade`` puts
a screen in front of it (reasoning ``auto`` or ``off``); both are ``Classifier``s, and ``loading.load_guard``
returns the one asked for.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from .backends.base import Backend, Generation, SamplingConfig
from .confidence import attach_confidences, cut_verdict
from .models import ModelSpec, logger, model_folder
from .parser import parse_for
from .recalibration import PlattMap
from .results import (
    INPUT_TRUNCATED,
    POSITIVE,
    PROMPT_HARMFULNESS,
    RESPONSE_HARMFULNESS,
    VERDICT_KEYS,
    GuardResult,
    StreamUpdate,
)
from .stream_parser import StreamParser
from .template import GuardPrompt, build_prompt

DEFAULT_MAX_INPUT_TOKENS = 4096


@runtime_checkable
class Classifier(Protocol):
    """What the app, CLI, service and eval call: a ``Guard`` or a ``Cascade``."""

    def classify(self, items: Iterable, *, progress: bool = False) -> list[GuardResult]: ...

    def stream(self, prompt: str, response: str | None = None, *, stop: threading.Event | None = None
               ) -> Iterator[StreamUpdate]: ...

    def close(self) -> None: ...


def item_pair(item) -> tuple[str, str | None]:
    """``(prompt, response)`` of one item: a dict with ``prompt`` and optional ``response``, a plain prompt string,
    or a ``(prompt, response)`` tuple; an empty response is no response."""
    if isinstance(item, str):
        return item, None
    if isinstance(item, tuple) and len(item) == 2:
        prompt, response = item
    elif isinstance(item, dict) and "prompt" in item:
        prompt, response = item["prompt"], item.get("response")
    else:
        raise ValueError(f"each item needs a 'prompt' (and optionally a 'response'); got {item!r:.80}")
    return prompt, (response if response not in ("", None) else None)


class Guard:
    """The reasoning model on every item (reasoning ``full``)."""

    reasoning = "full"
    screen = None  # a Guard reasons on everything; a Cascade holds a screen

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
        operating_point: str | None = None,
        calibrations: dict[str, PlattMap] | None = None,
    ):
        """``fail_closed`` maps an unknown request or reply verdict to harmful (flagged as such);
        ``thresholds`` (e.g. ``{"prompt_harmfulness": 0.3}``) pick the positive label at that probability
        instead of 0.5; ``operating_point`` names where they came from (each result carries the name);
        ``calibrations`` are its Platt maps, each verdict's probability put through its map before the threshold
        cuts it (so a threshold always cuts the probability a result reports)."""
        self.backend = backend
        self.model_name = model_name or backend.model_id
        self.sampling = sampling or SamplingConfig()
        self.max_input_tokens = max_input_tokens
        self.fail_closed = fail_closed
        self.thresholds = checked_thresholds(thresholds)
        self.fallback_reason = fallback_reason
        self.operating_point = operating_point
        self.calibrations = dict(calibrations or {})

    @property
    def mode(self) -> str:
        """The prompt mode (``chat`` or ``raw``), the backend's."""
        return self.backend.mode

    def _copy(self, **changes) -> Guard:
        other = copy.copy(self)
        other.__dict__.update(changes)
        return other

    def with_sampling(self, **changes) -> Guard:
        """The same guard and loaded model with other decoding settings (e.g. ``max_new_tokens=256``)."""
        return self._copy(sampling=replace(self.sampling, **changes))

    def with_thresholds(self, thresholds: dict[str, float] | None) -> Guard:
        """The same guard and loaded model with these thresholds in place of its own (its results name its
        operating point only while that point's thresholds are the ones in force)."""
        thresholds = checked_thresholds(thresholds)
        point = self.operating_point if thresholds == self.thresholds else None
        return self._copy(thresholds=thresholds, operating_point=point)

    def with_operating_point(self, name: str | None, thresholds: dict[str, float],
                             calibrations: dict[str, PlattMap] | None = None) -> Guard:
        """The same guard and loaded model mapping and cutting by an operating point's maps and thresholds, its
        results naming it (``None`` and ``{}``: no operating point, the labels at 0.5 or the screen's cut)."""
        return self._copy(thresholds=checked_thresholds(thresholds), operating_point=name,
                          calibrations=dict(calibrations or {}))

    def with_backend(self, backend: Backend) -> Guard:
        """The same settings on another backend (eval's replay wraps the loaded one)."""
        return self._copy(backend=backend)

    def with_reasoning(self, reasoning: str) -> Guard:
        """This guard (``full``); the other modes need a screen, which a ``Cascade`` holds."""
        if reasoning != "full":
            raise ValueError(f"reasoning={reasoning!r} needs a screen (load_guard(..., screen=FOLDER)); "
                             "this guard reasons on everything")
        return self

    def build(self, prompt: str, response: str | None = None) -> GuardPrompt:
        return build_prompt(
            prompt, response, tokenizer=self.backend.tokenizer, max_input_tokens=self.max_input_tokens
        )

    def model_input(self, prompt: str, response: str | None = None) -> str:
        """Exactly what the model reads for this item (after the chat template in chat mode)."""
        return self.backend.render(self.build(prompt, response).text)

    def prepare(self, items: Iterable) -> list[GuardPrompt]:
        """Step 1: the prompt for each item (see ``item_pair``); their ``text`` goes to ``backend.generate``.
        Raises ValueError for an item no prompt can be built from."""
        return [self.build(*item_pair(item)) for item in items]

    def read(self, prepared: GuardPrompt, generation: Generation) -> GuardResult:
        """Step 3: the result of one generation for its prepared prompt: parsed verdicts, confidences,
        thresholds, fail-closed, flags and the generation's figures."""
        has_response = prepared.response is not None
        parsed = parse_for(generation.text, prepared.prompt, prepared.response)
        verdicts = parsed.verdicts
        if generation.tokens and generation.top_logprobs:
            attach_confidences(generation.text, verdicts, generation.tokens, generation.top_logprobs)
        for key, verdict in verdicts.items():
            cut_verdict(verdict, self.thresholds.get(key), self.calibrations.get(key))
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
        if prepared.truncated:
            flags.append(INPUT_TRUNCATED)
        return GuardResult(
            prompt=prepared.given_prompt,
            response=prepared.given_response,
            model_input=prepared.text,
            output=generation.text,
            verdicts=verdicts,
            reasoning=parsed.reasoning,
            flags=sorted(set(flags)),
            model=self.model_name,
            input_truncated=prepared.truncated,
            input_tokens=generation.prompt_tokens,
            output_tokens=generation.completion_tokens,
            latency_s=generation.latency_s,
            finish_reason=generation.finish_reason,
            operating_point=self.operating_point,
        )

    def classify(self, items: Iterable, *, progress: bool = False) -> list[GuardResult]:
        """Classify dicts with ``prompt`` and optional ``response`` (or plain prompt strings), in order."""
        prepared = self.prepare(items)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(prepared), desc="classify", unit="row")
        try:
            generations = self.backend.generate(
                [p.text for p in prepared], self.sampling, on_progress=bar.update if bar else None
            )
        finally:
            if bar:
                bar.close()
        return [self.read(p, g) for p, g in zip(prepared, generations)]

    def classify_one(self, prompt: str, response: str | None = None) -> GuardResult:
        return self.classify([{"prompt": prompt, "response": response}])[0]

    def stream(
        self, prompt: str, response: str | None = None, *, stop: threading.Event | None = None
    ) -> Iterator[StreamUpdate]:
        """Yield updates as the model writes; the last one carries the complete ``GuardResult``."""
        prepared = self.build(prompt, response)
        parser = StreamParser((prepared.prompt, prepared.response or ""), has_response=prepared.response is not None)
        began = time.perf_counter()
        for chunk in self.backend.stream(prepared.text, self.sampling, stop=stop):
            if chunk.generation is not None:
                events, _ = parser.finish()
                yield StreamUpdate("", parser.text, events, time.perf_counter() - began,
                                   self.read(prepared, chunk.generation))
                return
            yield StreamUpdate(chunk.text, parser.text + chunk.text, parser.feed(chunk.text),
                               time.perf_counter() - began)

    def close(self) -> None:
        self.backend.close()


def checked_thresholds(thresholds: dict[str, float] | None) -> dict[str, float]:
    thresholds = dict(thresholds or {})
    unknown = set(thresholds) - set(POSITIVE)
    if unknown:
        raise ValueError(f"thresholds for unknown verdicts {sorted(unknown)}; use {', '.join(VERDICT_KEYS)}")
    return thresholds


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


CT2_OPTIONS = ("compute_type", "inter_threads", "intra_threads", "static_prompt")  # CTranslate2's own settings


# From GuardReasoner-1B's size up, transformers in bfloat16 beats CTranslate2 int8 on a CPU that computes bfloat16
# natively (docs/engines-and-speed.md, 2 vCPUs with AMX: a 290-token trace in 46 s against 59 s, 15.6 against
# 6.6 tokens/s for 8 requests), and bfloat16 is the precision the released checkpoints ship in. Elsewhere bfloat16
# is emulated, slower than float32, and CTranslate2 stays the CPU engine.
BF16_MIN_HIDDEN_SIZE = 1024


def native_bfloat16_pays(folder: str | Path) -> bool:
    """Whether a model is best run on this CPU by transformers in bfloat16: the CPU has AVX-512 BF16 or AMX and
    the model's hidden size is at least ``BF16_MIN_HIDDEN_SIZE`` (small models gain nothing; the 135M embedded
    guard's verdicts were checked in float32)."""
    import json

    from .backends.ctranslate2_backend import NATIVE_BF16_FLAGS, cpu_flags

    config = Path(folder) / "config.json"
    if not (cpu_flags() & NATIVE_BF16_FLAGS) or not config.is_file():
        return False
    return int(json.loads(config.read_text()).get("hidden_size", 0)) >= BF16_MIN_HIDDEN_SIZE


def choose_backend(spec: ModelSpec, backend: str = "auto") -> str:
    """``auto``: openai for URLs; vLLM on CUDA where installed (not for the embedded model); on machines without
    CUDA, transformers in bfloat16 for a model from 1B up on a CPU that computes bfloat16 natively
    (``native_bfloat16_pays``), else CTranslate2 where it is installed and converts the model verifiably;
    transformers otherwise."""
    from .backends.ctranslate2_backend import ctranslate2_available, why_not_ctranslate2
    from .backends.vllm_backend import vllm_available

    if backend != "auto":
        return backend
    if spec.kind == "endpoint":
        return "openai"
    cuda = _cuda_available()
    if cuda and spec.kind != "embedded" and vllm_available():
        return "vllm"
    if not cuda and spec.kind != "embedded" and native_bfloat16_pays(model_folder(spec)):
        return "transformers"
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
        from .backends.ctranslate2_backend import MEASURED_COMPUTE_TYPES, ConversionUnsupported, CTranslate2Backend

        if "batch_size" in options:
            ct2_options["batch_size"] = options["batch_size"]
        if spec.kind in ("embedded", "adapter") and spec.location:  # an adapter's measured compute types
            ct2_options["measured_compute_types"] = Path(spec.location) / MEASURED_COMPUTE_TYPES
        try:
            return CTranslate2Backend(model_folder(spec), mode=mode, model_id=spec.name, **ct2_options)
        except ConversionUnsupported as error:
            logger.warning("%s; running %s on transformers instead", error, spec.name)
            backend = "transformers"
    if backend == "transformers":
        from .backends.transformers_backend import TransformersBackend

        folder = model_folder(spec)
        if "dtype" not in options and spec.kind != "embedded" and not _cuda_available() and native_bfloat16_pays(
                folder):
            options["dtype"] = "bfloat16"
        return TransformersBackend(folder, mode=mode, model_id=spec.name, **options)
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
