"""training.onnx_bert: the packaged paraphrase-MiniLM-L3-v2 ONNX export, converted to a transformers BertModel,
computes what the ONNX graph computes (checked with onnx's own reference evaluator)."""

from __future__ import annotations

import numpy as np
import pytest

from guardreasoner.models import ModelUnavailable
from training import onnx_bert

SENTENCES = ["How can I launch a DDoS attack on my school's website?", "Bake bread."]  # unequal: padding is tested
TOKEN_EMBEDDINGS, MEAN_POOLED = "onnx::Shape_422", "461"  # the export's last hidden state and its masked mean


@pytest.fixture(scope="module")
def onnx_path():
    pytest.importorskip("onnx", reason="optional: requirements/encoders.txt (pip install onnx)")
    try:
        return onnx_bert.packaged_onnx_path()
    except ModelUnavailable as missing:
        pytest.skip(f"optional package absent ({missing})")


def test_converted_bert_matches_the_onnx_graph(onnx_path, tmp_path):
    import torch
    from onnx.reference import ReferenceEvaluator
    from transformers import AutoModel, AutoTokenizer

    folder = onnx_bert.packaged_paraphrase_minilm_l3(tmp_path / "l3")
    model, info = AutoModel.from_pretrained(folder, add_pooling_layer=False, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert (model.config.num_hidden_layers, model.config.num_attention_heads, model.config.hidden_size) == (3, 12, 384)

    batch = AutoTokenizer.from_pretrained(folder)(SENTENCES, padding=True, return_tensors="np")
    mask = batch["attention_mask"].astype(np.int64)
    assert mask[1].sum() < mask[0].sum()
    tokens_ref, pooled_ref = ReferenceEvaluator(str(onnx_path)).run(
        [TOKEN_EMBEDDINGS, MEAN_POOLED], {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": mask})
    with torch.inference_mode():
        tokens = model(input_ids=torch.from_numpy(batch["input_ids"]).long(),
                       attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()

    real = mask.astype(bool)  # padded positions carry no meaning in either model
    np.testing.assert_allclose(tokens[real], tokens_ref[real], atol=1e-4)
    pooled = (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(pooled, pooled_ref, atol=1e-4)
    # The cache is reused, not rewritten, on the second call.
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert onnx_bert.packaged_paraphrase_minilm_l3(folder) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == written


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setattr(onnx_bert, "PARAPHRASE_L3_DIST", "no-such-distribution-here")
    with pytest.raises(ModelUnavailable, match="pip install"):
        onnx_bert.packaged_paraphrase_minilm_l3(tmp_path / "absent")
    assert not (tmp_path / "absent").exists()
