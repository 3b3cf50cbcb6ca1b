"""The encoder screen: a small encoder fine-tuned end to end with three heads, one per verdict, in milliseconds.

It reads the request and the reply together as one cross-encoder pair (``[CLS] prompt [SEP] reply [SEP]``), up to
the encoder's full length; the mean of its last layer goes through one linear head per verdict, and each head's
logit through its own temperature (fitted on validation rows, so that ``p`` means what it says). It depends on no
reasoning model: the same folder serves as the screen of every guard. ``training.encoder`` makes the folder:

    screen.json          the card (format, ``features: "encoder"``, per head: temperature and thresholds; data,
                         settings, wall times and scores)
    model.safetensors    the encoder's and the heads' weights (``encoder.*``, ``heads.*``): matrices in int8 with a
                         float32 scale per row (``NAME.int8_scale``), the rest float16: a quarter of float32's bytes
    config.json, tokenizer files    the encoder's, as transformers saves them

Inference runs in bfloat16 where this CPU computes it natively (AVX-512 BF16 or AMX, read at run time) and in
float32 elsewhere (``GUARDREASONER_ENCODER_DTYPE`` forces one of ``DTYPES``). Chosen by measurement
(``training.encoder`` writes each dtype's verdict agreement with the trained float32 weights into the card):
bfloat16 agreed on every validation verdict, while torch's dynamic int8 flipped 6% of them per-tensor and 1.1%
per-channel for little speed, so int8 is only an explicit choice.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import GuardReasonerError
from .results import INPUT_TRUNCATED as TRUNCATED  # a probability row carries it where the item was cut
from .results import VERDICT_KEYS

FEATURES = "encoder"
WEIGHTS_FILE = "model.safetensors"
DTYPES = ("bfloat16", "float32", "int8")
DTYPE_VARIABLE = "GUARDREASONER_ENCODER_DTYPE"
BATCH_SIZE = 32
# A batch holds at most this many tokens (rows x its longest row): 32 rows of 512 tokens would keep 400 MB of
# attention scores alive at once; 8 of them, a quarter of that, and no slower per row.
BATCH_TOKENS = 4096
# bfloat16 pays from batches this large (measured: one short item took 10.6 ms in bfloat16 against 6.5 in float32,
# 64 512-token pairs ran at 32 rows/s against 14); both agree with the trained weights on every validation verdict.
BF16_MIN_TOKENS = 1024


class EncoderError(GuardReasonerError, ValueError):
    """An encoder folder that cannot be served; the message names the file and what is wrong."""


def keep_head_and_tail(ids: list[int], budget: int) -> list[int]:
    """At most ``budget`` ids: the first half and the last half of them, so that both how a text opens (a refusal,
    a request) and how it ends (the harmful part of a long reply, often) are read."""
    if len(ids) <= budget:
        return ids
    head = (budget + 1) // 2
    return ids[:head] + ids[len(ids) - (budget - head):] if budget > head else ids[:head]


def shares(prompt_length: int, reply_length: int, budget: int) -> tuple[int, int]:
    """How many of ``budget`` tokens the prompt and the reply keep: each may take at least half, and what one
    does not need the other may use."""
    if prompt_length + reply_length <= budget:
        return prompt_length, reply_length
    prompt = min(prompt_length, max(budget - reply_length, budget // 2))
    return prompt, min(reply_length, budget - prompt)


@dataclass
class PairIds:
    input_ids: list[int]
    token_type_ids: list[int]
    truncated: bool


def encode_pair(tokenizer, prompt: str, response: str | None, max_length: int) -> PairIds:
    """``[CLS] prompt [SEP] (reply [SEP])``, cut to ``max_length`` keeping each side's head and tail."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if response is None:
        kept = keep_head_and_tail(prompt_ids, max_length - 2)
        return PairIds([cls, *kept, sep], [0] * (len(kept) + 2), len(kept) < len(prompt_ids))
    reply_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    prompt_share, reply_share = shares(len(prompt_ids), len(reply_ids), max_length - 3)
    first, second = keep_head_and_tail(prompt_ids, prompt_share), keep_head_and_tail(reply_ids, reply_share)
    return PairIds([cls, *first, sep, *second, sep], [0] * (len(first) + 2) + [1] * (len(second) + 1),
                   len(first) < len(prompt_ids) or len(second) < len(reply_ids))


def length_batches(lengths: list[int], batch_size: int = BATCH_SIZE, tokens: int = BATCH_TOKENS) -> list[list[int]]:
    """Indices grouped shortest first, each group at most ``batch_size`` rows and ``tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda index: lengths[index])
    batches: list[list[int]] = []
    for index in order:
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * lengths[index] <= tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


def pad_batch(pairs: list[PairIds], pad_id: int):
    """Tensors of a batch, right-padded to its longest item."""
    import torch

    width = max(len(pair.input_ids) for pair in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    types = torch.zeros((len(pairs), width), dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, pair in enumerate(pairs):
        ids[row, : len(pair.input_ids)] = torch.tensor(pair.input_ids)
        types[row, : len(pair.token_type_ids)] = torch.tensor(pair.token_type_ids)
        mask[row, : len(pair.input_ids)] = 1
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


def multi_head_encoder(encoder, dropout: float = 0.1):
    """The encoder with one linear head per verdict on its mask-weighted mean last layer: ``forward`` gives
    logits, one column per ``VERDICT_KEYS`` entry."""
    from torch import nn

    class MultiHeadEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.dropout = nn.Dropout(dropout)
            self.heads = nn.Linear(encoder.config.hidden_size, len(VERDICT_KEYS))

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.heads(self.dropout(pooled))


    return MultiHeadEncoder()


def int8_available() -> bool:
    import torch

    quantization = getattr(getattr(torch, "ao", None), "quantization", None)  # deprecated in torch 2.13 (torchao
    return quantization is not None and hasattr(quantization, "quantize_dynamic") and any(  # is its successor)
        engine in torch.backends.quantized.supported_engines for engine in ("fbgemm", "x86", "onednn"))


def quantized(module):
    """Every linear layer in int8 with one weight scale per output channel (activations quantized per batch): an
    explicit option only, see the module's docstring for what it cost in agreement."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig

    with warnings.catch_warnings():  # torch 2.13 announces the quantized tensor API's removal
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                                      dtype=torch.qint8)


def computing(dtype: str):
    """The context a forward pass runs in: bfloat16 autocast, or nothing."""
    import contextlib

    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()


@dataclass
class EncoderHead:
    """One verdict's head as the cascade reads it: its thresholds and the temperature its logit is divided by."""

    key: str
    temperature: float
    thresholds: object  # screen.Thresholds
    view: str = "pair"

    @property
    def calibration(self) -> str:
        return f"temperature {self.temperature:.4g} on the head's logit, fitted on validation rows"


@dataclass
class EncoderScreen:
    """The screen interface (``heads``, ``probabilities``, ``timed_probabilities``, ``bind``) over a fine-tuned
    encoder. ``model`` is None: it serves every guard."""

    module: object
    tokenizer: object
    heads: dict[str, EncoderHead]
    max_length: int
    card: dict = field(default_factory=dict)
    folder: Path | None = None
    dtype: str = "float32"
    model: str | None = None
    feature_kind: str = FEATURES
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def bind(self, guard) -> EncoderScreen:
        return self  # reads the text, not the guard's model

    def read(self, items: list[tuple[str, str | None]], batch_size: int = BATCH_SIZE, layers: tuple[int, ...] = ()
             ) -> tuple[np.ndarray, list, np.ndarray | None]:
        """Raw logits (rows x verdicts), whether each item was cut, and, with ``layers`` (indices into the
        encoder's hidden states, 0 the embeddings), the mask-weighted mean of each of those layers side by side
        (rows x layers * hidden): the representation policies are fitted on, from the same forward pass as the
        verdicts. Items are batched by length, so a batch pads little."""
        import torch

        pairs = [encode_pair(self.tokenizer, prompt, response, self.max_length) for prompt, response in items]
        out = np.zeros((len(pairs), len(VERDICT_KEYS)), dtype=np.float32)
        features = None
        if layers:
            features = np.zeros((len(pairs), len(layers) * self.module.heads.in_features), dtype=np.float32)
        # One forward at a time: torch's threads are already all in use.
        with self._lock, torch.inference_mode():
            for chunk in length_batches([len(pair.input_ids) for pair in pairs], batch_size):
                batch = pad_batch([pairs[index] for index in chunk], self.tokenizer.pad_token_id or 0)
                tokens = batch["input_ids"].numel()
                with computing(self.dtype if tokens >= BF16_MIN_TOKENS else "float32"):
                    if not layers:
                        out[chunk] = self.module(**batch).float().numpy()
                        continue
                    hidden = self.module.encoder(**batch, output_hidden_states=True).hidden_states
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden[-1].dtype)
                    last = len(hidden) - 1
                    pooled = {layer: (hidden[layer] * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                              for layer in {*layers, last}}
                    out[chunk] = self.module.heads(pooled[last]).float().numpy()  # as forward: the last layer's mean
                    features[chunk] = torch.cat([pooled[layer] for layer in layers], dim=1).float().numpy()
        return out, [pair.truncated for pair in pairs], features

    def probabilities(self, items: list[tuple[str, str | None]]) -> list[dict[str, float | None]]:
        """Per item, each verdict's calibrated probability of its positive label (None for the reply's verdicts
        of an item without a reply), and ``input_truncated: True`` where the item was cut to fit."""
        return self.scored(items)[0]

    def scored(self, items: list[tuple[str, str | None]], layers: tuple[int, ...] = ()
               ) -> tuple[list[dict[str, float | None]], np.ndarray | None]:
        """``probabilities`` and, with ``layers``, the representation ``read`` gives, from one forward pass."""
        for index, (prompt, _) in enumerate(items):
            if not isinstance(prompt, str) or not prompt.strip():
                raise EncoderError(f"item {index}: the request is empty; the encoder needs some text to read")
        if not items:
            return [], None
        logits, truncated, features = self.read(items, layers=layers)
        out = []
        for row, (_, response) in enumerate(items):
            values: dict = {}
            for column, key in enumerate(VERDICT_KEYS):
                head = self.heads.get(key)
                wanted = head is not None and (column == 0 or response is not None)
                values[key] = float(1.0 / (1.0 + np.exp(-logits[row, column] / head.temperature))) if wanted else None
            if truncated[row]:
                values[TRUNCATED] = True
            out.append(values)
        return out, features

    def timed_probabilities(self, items) -> tuple[list[dict[str, float | None]], float]:
        began = time.perf_counter()
        probabilities = self.probabilities(items)
        return probabilities, time.perf_counter() - began


def chosen_dtype(requested: str | None = None) -> str:
    """``requested``, else ``GUARDREASONER_ENCODER_DTYPE``, else bfloat16 on a CPU that computes it natively and
    float32 elsewhere; int8 falls back to float32 on a torch without dynamic quantization."""
    from .cpu import native_bfloat16

    dtype = requested or os.environ.get(DTYPE_VARIABLE) or ("bfloat16" if native_bfloat16() else "float32")
    if dtype not in DTYPES:
        raise EncoderError(f"{DTYPE_VARIABLE}={dtype!r}: choose one of {', '.join(DTYPES)}")
    return "float32" if dtype == "int8" and not int8_available() else dtype


SCALE_SUFFIX = ".int8_scale"
PACK_MIN_ELEMENTS = 4096  # smaller matrices (the heads) stay float16: nothing to save, precision to keep


def pack_weights(state: dict) -> dict:
    """A state dict as stored: each large matrix as int8 rows with one float32 scale per row (absolute maximum /
    127), everything else float16."""
    import torch

    packed = {}
    for name, tensor in state.items():
        tensor = tensor.detach().float()
        if tensor.ndim == 2 and tensor.numel() >= PACK_MIN_ELEMENTS:
            scale = tensor.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            packed[name] = torch.round(tensor / scale[:, None]).to(torch.int8).contiguous()
            packed[name + SCALE_SUFFIX] = scale.contiguous()
        else:
            packed[name] = tensor.to(torch.float16).contiguous()
    return packed


def unpack_weights(packed: dict) -> dict:
    """The float32 state dict of ``pack_weights``' output (or of a plain float checkpoint)."""
    state = {}
    for name, tensor in packed.items():
        if name.endswith(SCALE_SUFFIX):
            continue
        scale = packed.get(name + SCALE_SUFFIX)
        state[name] = tensor.float() * scale[:, None] if scale is not None else tensor.float()
    return state


def load_module(folder: Path):
    """The multi-head encoder of a folder, in float32, in eval mode."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(folder)
    module = multi_head_encoder(AutoModel.from_config(config, add_pooling_layer=False)
                                if config.model_type == "bert" else AutoModel.from_config(config))
    state = unpack_weights(load_file(folder / WEIGHTS_FILE))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EncoderError(f"{folder / WEIGHTS_FILE}: weights do not fit the config (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    return module.eval()


_LOADED: dict[tuple, EncoderScreen] = {}
_LOADING = threading.Lock()


def load_encoder_screen(folder: str | Path, card: dict, dtype: str | None = None) -> EncoderScreen:
    """The encoder screen of a folder whose card ``screen.load_screen`` has read; loaded once per process and
    dtype (the app, the service and the CLI share it)."""
    from .screen import Thresholds

    folder = Path(folder)
    dtype = chosen_dtype(dtype)
    weights = folder / WEIGHTS_FILE
    key = (str(folder.resolve()), dtype, weights.stat().st_mtime_ns if weights.is_file() else 0)  # retrained: anew
    with _LOADING:
        if key in _LOADED:
            return _LOADED[key]
        if not (folder / WEIGHTS_FILE).is_file():
            raise EncoderError(f"{folder / WEIGHTS_FILE}: missing (an encoder screen folder holds the card, "
                               f"{WEIGHTS_FILE}, config.json and the tokenizer's files)")
        from transformers import AutoTokenizer

        module = load_module(folder)
        if dtype == "int8":
            module = quantized(module)
        heads = {}
        for entry in card["heads"]:
            position = entry.get("position")
            if not isinstance(position, int) or not 0 <= position < len(VERDICT_KEYS):
                raise EncoderError(f"{folder}/screen.json: a head has no valid position: {entry}")
            temperature = float(entry.get("temperature", 1.0))
            if not temperature > 0:
                raise EncoderError(f"{folder}/screen.json: the {VERDICT_KEYS[position]} head's temperature "
                                   f"{temperature} is not positive")
            heads[VERDICT_KEYS[position]] = EncoderHead(VERDICT_KEYS[position], temperature,
                                                        Thresholds(**entry.get("thresholds", {})))
        if VERDICT_KEYS[0] not in heads:
            raise EncoderError(f"{folder}/screen.json: no head for {VERDICT_KEYS[0]}")
        screen = EncoderScreen(module, AutoTokenizer.from_pretrained(folder), heads,
                               int(card.get("max_length", 512)), card, folder, dtype)
        _LOADED[key] = screen
        return screen

