"""CTranslate2 backend: the fast CPU engine (compute type as measured for an adapter, else int8 or float32 by model
size), converted once per model into the cache.

Verdict confidences need the top alternatives at the few positions where a verdict word was written.
Keeping the whole vocabulary's logits for every generated token (``return_logits_vocab``) would hold
steps x vocabulary floats per row (400 MB for a 2048-token answer of the 135M model), so the backend keeps
only the chosen token's log-probability and computes a position's top-k when someone reads it: one extra
one-token pass over the prompt and the text before that position (``_LazyTopLogprobs``).

A generation's result arrives before CTranslate2's worker thread has destroyed the job holding our Python step
callback; that destructor takes the GIL. If the interpreter is finalizing by then, Python ends the worker thread
inside a noexcept C++ destructor and the process aborts ("terminate called without an active exception") after
its work is done. So every generation waits until the worker has let go of its callback (``_Submitted``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..cpu import NATIVE_BF16_FLAGS, cpu_flags  # noqa: F401  (cpu_flags: read here, patched in tests)
from ..errors import GuardReasonerError
from ..models import adapter_weights_id, cache_dir, write_folder_atomically
from ..template import render, user_turn
from .base import Backend, Generation, ProgressCallback, SamplingConfig, StreamChunk, length_groups
from .heap import bound_heap_growth

logger = logging.getLogger("guardreasoner")

COMPUTE_TYPES = ("int8", "int8_float32", "float32", "int8_bfloat16", "bfloat16", "float16", "int8_float16")
DEFAULT_INTRA_THREADS = 1  # one thread per generation measured fastest on a 2-core machine (docs/engines-and-speed.md)
# int8 flipped verdicts of the 135M embedded guard (docs/engines-and-speed.md), so models this small default to float32;
# larger ones (GuardReasoner-1B has 2048) default to int8, CTranslate2's usual CPU choice.
INT8_MIN_HIDDEN_SIZE = 1024


# Beside an adapter (the embedded guard's: assets/embedded-guard/): each compute type's verdict agreement with
# float32 on held-out rows and its measured speed, written by eval/compute_agreement.py for those adapter weights.
MEASURED_COMPUTE_TYPES = "compute-types.json"
# The CPU features the speed of CTranslate2's kernels hangs on: a speed measured on a CPU with another set of them
# says nothing about this one (int8 without VNNI, bfloat16 without AVX-512 BF16 or AMX run other code paths).
SPEED_FLAGS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8"}) | NATIVE_BF16_FLAGS


def supported_compute_types() -> frozenset[str]:
    """The compute types CTranslate2 runs on this CPU (it silently substitutes another for the rest)."""
    import ctranslate2

    return frozenset(ctranslate2.get_supported_compute_types("cpu"))


def choose_measured(table: dict, *, supported: frozenset[str], flags: frozenset[str]) -> str:
    """The fastest compute type whose verdicts agreed with the reference's on at least ``min_agreement`` of the
    measured rows, by the speed measured on a CPU with this one's SPEED_FLAGS, among those CTranslate2 runs here;
    the reference (float32) where no speed was measured on such a CPU. bfloat16 types are never chosen without
    native bfloat16 here, whatever the table says."""
    reference = table["reference"]
    here = flags & SPEED_FLAGS
    speeds = next((m["rows_per_s"] for m in table.get("speed", []) if set(m["flags"]) & SPEED_FLAGS == here), None)
    if speeds is None:
        return reference
    agreeing = [kind for kind, share in table["agreement"].items()
                if share >= table["min_agreement"] and kind in supported and kind in speeds
                and ("bfloat16" not in kind or flags & NATIVE_BF16_FLAGS)]
    return max(agreeing, key=speeds.get, default=reference)


def default_compute_type(folder: str | Path, measured: str | Path | None = None) -> str:
    """The choice of ``measured`` (a MEASURED_COMPUTE_TYPES table beside an adapter: ``choose_measured``) where it
    was measured for that adapter's weights; otherwise int8 for models with a hidden size of at least
    INT8_MIN_HIDDEN_SIZE and float32 for smaller ones."""
    if measured is not None and Path(measured).is_file():
        measured = Path(measured)
        table = json.loads(measured.read_text())
        if table.get("weights") == adapter_weights_id(measured.parent):
            chosen = choose_measured(table, supported=supported_compute_types(), flags=cpu_flags())
            logger.info("CTranslate2 compute type %s, chosen for this CPU from %s", chosen, measured)
            return chosen
        logger.info("%s was measured for other adapter weights; compute type by model size", measured)
    config = json.loads((Path(folder) / "config.json").read_text())
    hidden = config.get("hidden_size") or config.get("n_embd") or config.get("d_model") or 0
    return "int8" if hidden >= INT8_MIN_HIDDEN_SIZE else "float32"


# Part of every conversion's cache key: bumped when our conversion changes what it writes, so that a stale copy
# (before revision 2, Llama 3 models were cached with plain RoPE) is converted again rather than reused.
CONVERSION_REVISION = 2
# RoPE scalings whose conversion is checked against transformers (tests/test_ctranslate2.py: long inputs in
# float32). CTranslate2's converter accepts others (longrope) that nobody here has checked, and refuses the rest.
VERIFIED_ROPE_TYPES = ("default", "linear", "llama3")


def rope_scaling(config: dict) -> dict | None:
    """A config.json's RoPE scaling: ``rope_scaling`` (transformers 4.x) or ``rope_parameters`` (5.x)."""
    return config.get("rope_scaling") or config.get("rope_parameters") or None


def rope_type(config: dict) -> str:
    """The config's RoPE scaling type: "default" for none, "per-layer-type" for a dict of them (Gemma 3)."""
    scaling = rope_scaling(config)
    if not scaling:
        return "default"
    named = scaling.get("rope_type") or scaling.get("type")
    if named:
        return named
    return "per-layer-type" if any(isinstance(value, dict) for value in scaling.values()) else "default"


def why_not_ctranslate2(folder: str | Path) -> str | None:
    """Why CTranslate2 may run the model in ``folder`` otherwise than transformers does, or None where its
    conversion is verified. A folder without config.json gets None: loading it will say what is missing."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    kind = rope_type(json.loads(path.read_text()))
    if kind not in VERIFIED_ROPE_TYPES:
        return f"CTranslate2's conversion of RoPE scaling {kind!r} is not verified against transformers"
    return None


def _complete_llama3_rope(spec, scaling: dict) -> None:
    """Write the llama3 RoPE scaling's factor and original context length into a converted decoder spec.

    CTranslate2 4.8.5's converter drops both: converters/transformers.py, ``LlamaLoader.get_model_spec``, passes
    the factor to ``TransformerDecoderModelSpec.from_config``, but ``MultiHeadAttentionSpec.__init__``
    (specs/attention_spec.py) keeps ``rotary_scaling_factor`` for linear scaling only, and no loader passes
    ``original_max_position_embeddings`` for Llama; only the low/high frequency factors are set (after
    ``from_config``, "set extra RoPE parameters for Llama-3.1"). The C++ side reads all four
    (layers/attention_layer.cc, ``make_rotary_embeddings``), so without the two it runs factor 1 over an
    original length of 0, and the llama3 scaling becomes plain RoPE. Remove this once upstream writes both."""
    import numpy as np
    from ctranslate2.specs.attention_spec import RotaryScalingType

    fields = {"rotary_scaling_factor": np.float32(scaling["factor"]),
              "original_max_position_embeddings": np.int32(scaling["original_max_position_embeddings"]),
              "rotary_low_freq_factor": np.float32(scaling["low_freq_factor"]),
              "rotary_high_freq_factor": np.float32(scaling["high_freq_factor"])}
    for layer in getattr(getattr(spec, "decoder", None), "layer", []):
        attention = layer.self_attention
        if getattr(attention, "rotary_scaling_type", None) == RotaryScalingType.Llama3:
            for name, value in fields.items():
                # Specs refuse attributes their __init__ did not declare (FrozenAttr); the C++ reads these.
                object.__setattr__(attention, name, value)


def _converter(folder: Path, config: dict):
    """CTranslate2's transformers converter, with the RoPE fields it drops written in (``_complete_llama3_rope``).

    The one place our conversion differs from upstream's."""
    from ctranslate2.converters import TransformersConverter

    class Converter(TransformersConverter):
        def _load(self):
            spec = super()._load()
            if rope_type(config) == "llama3":
                _complete_llama3_rope(spec, rope_scaling(config))
            return spec

    return Converter(str(folder))


class ConversionUnsupported(GuardReasonerError, RuntimeError):
    """CTranslate2 has no converter for this model's architecture; the message names it."""


def ctranslate2_available() -> bool:
    return importlib.util.find_spec("ctranslate2") is not None


def _conversion_key(folder: Path, quantization: str) -> str:
    """What a conversion depends on: the folder, its files' sizes and times, and the quantization."""
    digest = hashlib.sha256(f"{folder.resolve()}|{quantization}|{CONVERSION_REVISION}".encode())
    for path in sorted(folder.iterdir()):
        if path.is_file():
            stat = path.stat()
            digest.update(f"|{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def converted_dir(folder: str | Path, quantization: str = "int8") -> Path:
    """The CTranslate2 copy of a transformers model folder, converted once (atomically) and cached.

    Raises ConversionUnsupported for an architecture CTranslate2 cannot convert."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    target = cache_dir() / "ctranslate2" / f"{folder.name}-{quantization}-{_conversion_key(folder, quantization)}"
    if (target / "model.bin").is_file():
        return target
    logger.info("converting %s to CTranslate2 %s in %s (once)", folder, quantization, target)
    try:
        write_folder_atomically(
            target, lambda staging: _converter(folder, config).convert(str(staging), quantization=quantization)
        )
    except (ValueError, NotImplementedError, KeyError) as error:
        architecture = (config.get("architectures") or [config.get("model_type", "?")])[0]
        raise ConversionUnsupported(
            f"CTranslate2 cannot convert {architecture} ({str(error).splitlines()[0][:100]})"
        ) from error
    return target


def _end_token_ids(folder: Path, tokenizer) -> list[int]:
    ids: set[int] = set()
    generation_config = folder / "generation_config.json"
    if generation_config.is_file():
        eos = json.loads(generation_config.read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def _similar_lengths(group: list[int], lengths: list[int], spread: int) -> Iterator[list[int]]:
    """Split a group (longest first) where a prompt is more than ``spread`` tokens shorter than the first.

    CTranslate2 forwards a batch's prompts at once only up to the shortest one; a longer prompt's remaining
    tokens go through the decoding loop one step each, as slow as generating them (8 OpenAIModeration rows
    of mixed lengths ran at 1.2x transformers' rows/s for 3.5x its tokens/s)."""
    part: list[int] = []
    for index in group:
        if part and lengths[part[0]] - lengths[index] > spread:
            yield part
            part = []
        part.append(index)
    if part:
        yield part


class _LazyTopLogprobs(Sequence):
    """Per generated token: the chosen token's log-probability, or the top-k alternatives once read.

    Reading position i runs the model once over the prompt and the first i generated tokens (the guard reads
    only the verdict positions, so a row costs up to three short passes, not the vocabulary at every step)."""

    def __init__(self, backend: CTranslate2Backend, prompt: list[str], ids: list[int], chosen: list[float], k: int):
        self._backend = backend
        self._prompt = prompt
        self._ids = ids
        self._chosen = chosen
        self._k = k
        self._computed: dict[int, dict[str, float]] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        if index not in self._computed:
            self._computed[index] = self._backend.top_logprobs_at(self._prompt, self._ids[:index], self._k)
        return self._computed[index]

    def chosen(self, index: int) -> float:
        return self._chosen[index]


class _Submitted:
    """One ``generate_batch`` call in flight: its per-row results, the rows the step callback fills, and a signal
    that CTranslate2 has dropped the callback (see the module docstring)."""

    def __init__(self, results: list, rows: list[dict], callback):
        self.results, self.rows = results, rows
        self._released: queue.SimpleQueue = queue.SimpleQueue()
        # SimpleQueue.put is C code called straight from the callback's deallocation: between this signal and
        # the worker letting go of the GIL no Python bytecode runs, so the caller cannot get ahead of it.
        self._watch = weakref.ref(callback, self._released.put)

    def wait(self, timeout_s: float = 10.0) -> None:
        for item in self.results:
            item.result()
        try:  # bounded: a CTranslate2 that kept the callback would only leave the exit race open
            self._released.get(timeout=timeout_s)
        except queue.Empty:
            logger.debug("CTranslate2 still holds a step callback after %.0f s", timeout_s)


class CTranslate2Backend(Backend):
    name = "ctranslate2"

    def __init__(
        self,
        folder: str | Path,
        *,
        mode: str = "raw",
        compute_type: str | None = None,
        inter_threads: int | None = None,
        intra_threads: int = DEFAULT_INTRA_THREADS,
        batch_size: int = 8,
        max_batch_tokens: int | None = 4096,
        length_spread: int = 32,
        static_prompt: bool = True,
        model_id: str | None = None,
        measured_compute_types: str | Path | None = None,
    ):
        """``folder`` is a transformers model folder (converted on first use); ``compute_type`` defaults to the
        choice of ``measured_compute_types`` (a table beside the model's adapter), else by model size
        (``default_compute_type``). ``inter_threads`` generations run at once (default: the CPU count, at
        most 4), each on ``intra_threads`` threads."""
        import ctranslate2
        from transformers import AutoTokenizer

        compute_type = compute_type or default_compute_type(folder, measured_compute_types)
        if compute_type not in COMPUTE_TYPES:
            raise ValueError(f"unknown compute_type {compute_type!r}; choose one of {COMPUTE_TYPES}")
        self.folder = folder = Path(folder)
        if doubt := why_not_ctranslate2(folder):
            logger.warning("%s; its outputs may differ from transformers'", doubt)
        self.converted = converted_dir(folder, compute_type)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        super().__init__(model_id or str(folder), mode, tokenizer)
        self.compute_type = compute_type
        self.inter_threads = inter_threads or max(1, min(4, os.cpu_count() or 1))
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens  # long rows go in smaller groups (see length_groups)
        self.length_spread = length_spread  # prompts batched together differ by at most this many tokens
        bound_heap_growth()  # CTranslate2's buffers come from the same malloc (see heap.py)
        self.generator = ctranslate2.Generator(
            str(self.converted), device="cpu", compute_type=compute_type,
            inter_threads=self.inter_threads, intra_threads=intra_threads,
        )
        # Public: the ids that end a generation (a benchmark sets an id past the vocabulary to force N tokens).
        self.eos_ids = _end_token_ids(folder, tokenizer)
        self._token_text: dict[int, str] = {}
        self._static = self._static_prefix() if static_prompt else []

    # -- tokens -------------------------------------------------------------------------------------------

    def _tokens(self, text: str, templated: bool) -> list[str]:
        # A chat template already writes the BOS token; a raw prompt gets it from the tokenizer, as elsewhere.
        ids = self.tokenizer(text, add_special_tokens=not templated)["input_ids"]
        return self.tokenizer.convert_ids_to_tokens(ids)

    def _static_prefix(self) -> list[str]:
        """The tokens every guard prompt starts with (the instruction), whose model state CTranslate2 caches.

        Found as the common token prefix of two different rendered inputs, less one token in case the
        boundary token merges with what follows."""
        templated = self.mode == "chat"
        first = self._tokens(render(user_turn("a"), self.mode, self.tokenizer), templated)
        second = self._tokens(render(user_turn("Zq", "x"), self.mode, self.tokenizer), templated)
        shared = 0
        while shared < min(len(first), len(second)) and first[shared] == second[shared]:
            shared += 1
        return first[: max(shared - 1, 0)] if shared > 8 else []

    def _split(self, tokens: list[str]) -> tuple[list[str] | None, list[str]]:
        """(static prompt, the rest) when ``tokens`` starts with the cached prefix and has more after it."""
        n = len(self._static)
        if n and len(tokens) > n and tokens[:n] == self._static:
            return self._static, tokens[n:]
        return None, tokens

    def _token(self, token_id: int) -> str:
        text = self._token_text.get(token_id)
        if text is None:
            text = self._token_text[token_id] = self.tokenizer.decode([token_id])
        return text

    # -- generation ---------------------------------------------------------------------------------------

    def _options(self, sampling: SamplingConfig, static: list[str] | None) -> dict:
        sample = sampling.temperature > 0
        options = {
            "max_length": sampling.max_new_tokens, "include_prompt_in_result": False, "return_scores": True,
            "end_token": self.eos_ids, "sampling_topk": 0 if sample else 1,
            "sampling_temperature": sampling.temperature if sample else 1.0,
            "sampling_topp": sampling.top_p if sample else 1.0,
        }
        if static:
            options["static_prompt"] = static
        return options

    def _finish(self, prompt: list[str], ids: list[int], logprobs: list[float], stopped: bool,
                sampling: SamplingConfig, latency_s: float, interrupted: bool = False) -> Generation:
        reason = "stop" if stopped else ("interrupted" if interrupted else "length")
        top = _LazyTopLogprobs(self, prompt, ids, logprobs, sampling.top_logprobs) if sampling.top_logprobs else None
        return Generation(
            text=self.tokenizer.decode(ids, skip_special_tokens=True),
            prompt_tokens=len(prompt),
            completion_tokens=len(ids) + (1 if stopped else 0),
            latency_s=latency_s,
            finish_reason=reason,
            tokens=[self._token(t) for t in ids],
            top_logprobs=top,
        )

    def _submit(self, starts: list[list[str]], options: dict, stop: threading.Event | None = None,
                on_token=None) -> _Submitted:
        """Start generating for ``starts``; a step callback gathers each row's token ids and log-probabilities.

        The callback is referenced only by CTranslate2 once this returns, so its release marks the job's end."""
        rows = [{"ids": [], "logprobs": [], "stopped": False} for _ in range(len(starts))]
        end = set(self.eos_ids)

        def callback(step) -> bool:
            row = rows[step.batch_id]
            if step.token_id in end:
                row["stopped"] = True
            else:
                row["ids"].append(step.token_id)
                row["logprobs"].append(step.log_prob)
                if on_token:
                    on_token(row["ids"])
            return stop is not None and stop.is_set()

        results = self.generator.generate_batch(starts, asynchronous=True, callback=callback, **options)
        return _Submitted(results, rows, callback)

    def complete(
        self,
        texts: list[str],
        sampling: SamplingConfig,
        *,
        templated: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> list[Generation]:
        """Generate for model-ready texts: groups of ``batch_size`` similar lengths, ``inter_threads`` at once."""
        if not texts:
            return []
        if sampling.seed is not None:
            import ctranslate2

            ctranslate2.set_random_seed(sampling.seed)
        tokens = [self._tokens(text, templated) for text in texts]
        lengths = [len(t) for t in tokens]
        order = sorted(range(len(texts)), key=lambda i: lengths[i], reverse=True)
        began = time.perf_counter()
        submitted = []
        groups = length_groups(order, lengths, self.batch_size, self.max_batch_tokens)
        for batch in (part for group in groups for part in _similar_lengths(group, lengths, self.length_spread)):
            split = [self._split(tokens[i]) for i in batch]
            # A static prompt is shared by the whole batch: use it only when every row starts with it.
            static = split[0][0] if all(s[0] is not None for s in split) else None
            starts = [rest for _, rest in split] if static else [tokens[i] for i in batch]
            submitted.append((batch, self._submit(starts, self._options(sampling, static))))
        results: list[Generation | None] = [None] * len(texts)
        for batch, pending in submitted:  # the groups run in parallel; report them in order
            pending.wait()
            if on_progress:
                on_progress(len(batch))
        latency = (time.perf_counter() - began) / max(len(texts), 1)
        for batch, pending in submitted:
            for index, row in zip(batch, pending.rows):
                results[index] = self._finish(tokens[index], row["ids"], row["logprobs"], row["stopped"],
                                              sampling, latency)
        return results  # type: ignore[return-value]

    def complete_stream(
        self,
        text: str,
        sampling: SamplingConfig,
        *,
        templated: bool = False,
        stop: threading.Event | None = None,
    ) -> Iterator[StreamChunk]:
        stop = stop or threading.Event()
        tokens = self._tokens(text, templated)
        static, rest = self._split(tokens)
        updates: queue.Queue = queue.Queue()
        began = time.perf_counter()
        pending = self._submit([rest], self._options(sampling, static), stop,
                               on_token=lambda ids: updates.put(len(ids)))

        def wait():
            try:
                pending.wait()
            except Exception as error:  # noqa: BLE001 (surfaced in the caller's thread below)
                updates.put(error)
            updates.put(None)

        worker = threading.Thread(target=wait, daemon=True)
        worker.start()
        row = pending.rows[0]
        ids = row["ids"]
        sent = ""
        finished = False
        try:
            while (update := updates.get()) is not None:
                if isinstance(update, BaseException):
                    raise update
                decoded = self.tokenizer.decode(ids[:update], skip_special_tokens=True)
                # Hold back a split multi-byte character until its last byte arrives.
                if decoded.endswith("\ufffd") or len(decoded) <= len(sent) or not decoded.startswith(sent):
                    continue
                yield StreamChunk(decoded[len(sent):])
                sent = decoded
            finished = True
        finally:
            if not finished:  # the consumer stopped listening: stop the model rather than leave it busy
                stop.set()
            worker.join()
        generation = self._finish(tokens, ids, row["logprobs"], row["stopped"], sampling,
                                  time.perf_counter() - began, interrupted=stop.is_set())
        if generation.text.startswith(sent) and len(generation.text) > len(sent):
            yield StreamChunk(generation.text[len(sent):])
        yield StreamChunk("", generation)

    def top_logprobs_at(self, prompt: list[str], generated: list[int], k: int) -> dict[str, float]:
        """The k most likely next tokens (text -> log p) after ``prompt`` and the ``generated`` ids."""
        import numpy as np

        static, rest = self._split(prompt + self.tokenizer.convert_ids_to_tokens(generated))
        result = self.generator.generate_batch(
            [rest], max_length=1, include_prompt_in_result=False, return_logits_vocab=True,
            static_prompt=static, end_token=self.eos_ids,
        )[0]
        logits = np.asarray(result.logits[0], dtype=np.float32).reshape(-1)
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        best = np.argpartition(-logprobs, k)[:k] if k < len(logprobs) else np.arange(len(logprobs))
        best = best[np.argsort(-logprobs[best])]
        return {self._token(int(i)): float(logprobs[i]) for i in best}

    def generate(self, prompts, sampling, on_progress=None):
        rendered = [self.render(p) for p in prompts]
        return self.complete(rendered, sampling, templated=self.mode == "chat", on_progress=on_progress)

    def stream(self, prompt, sampling, stop=None):
        return self.complete_stream(self.render(prompt), sampling, templated=self.mode == "chat", stop=stop)

    def close(self) -> None:
        self.generator = None
