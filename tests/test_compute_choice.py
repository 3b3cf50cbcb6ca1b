"""The CTranslate2 compute type chosen at run time from an adapter's measured table (issue 30 part 2): the fastest
type that agrees with float32, by the speed measured on a CPU like this one; float32 where nothing applies."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("ctranslate2")

from guardreasoner.backends import ctranslate2_backend
from guardreasoner.backends.ctranslate2_backend import MEASURED_COMPUTE_TYPES, choose_measured, default_compute_type

AVX2 = frozenset({"sse4_2", "avx2", "fma"})
AMX = AVX2 | {"avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile"}
EVERY_TYPE = frozenset({"float32", "int8", "int8_float32", "bfloat16", "int8_bfloat16"})


def table(agreement: dict, speed: list[dict], weights: str = "w") -> dict:
    return {"weights": weights, "reference": "float32", "min_agreement": 0.98, "agreement": agreement,
            "speed": speed}


MEASURED = table(
    {"float32": 1.0, "int8": 0.66, "int8_float32": 0.985, "bfloat16": 0.99},
    [{"flags": sorted(AMX), "rows_per_s": {"float32": 0.20, "int8": 0.40, "int8_float32": 0.30, "bfloat16": 0.35}},
     {"flags": sorted(AVX2), "rows_per_s": {"float32": 0.10, "int8": 0.16, "int8_float32": 0.09, "bfloat16": 0.02}}],
)


def test_the_fastest_agreeing_type_measured_on_a_cpu_like_this_one():
    # int8 is fastest but flips verdicts (66%); bfloat16 beats int8_float32 on the AMX machine
    assert choose_measured(MEASURED, supported=EVERY_TYPE, flags=AMX) == "bfloat16"
    # on AVX2 the measured float32 beats the agreeing int8_float32 there, and bfloat16 is emulated
    assert choose_measured(MEASURED, supported=EVERY_TYPE, flags=AVX2) == "float32"


def test_a_type_ctranslate2_does_not_run_here_is_never_chosen():
    # CTranslate2 4.8.5 on CPU offers int8, int8_float32, int16 and float32 (it would run bfloat16 as float32)
    assert choose_measured(MEASURED, supported=frozenset({"float32", "int8", "int8_float32"}), flags=AMX) \
        == "int8_float32"


def test_speed_from_another_kind_of_cpu_says_nothing_here():
    only_amx = table(MEASURED["agreement"], MEASURED["speed"][:1])
    assert choose_measured(only_amx, supported=EVERY_TYPE, flags=AVX2) == "float32"
    assert choose_measured(only_amx, supported=EVERY_TYPE, flags=AVX2 | {"avx512f"}) == "float32"
    assert choose_measured(only_amx, supported=EVERY_TYPE, flags=frozenset()) == "float32"  # no /proc/cpuinfo


def test_bfloat16_needs_native_support_here_whatever_the_table_says():
    # a table whose speed entry carries no bf16 flags, yet lists bfloat16 as fastest: not trusted here
    odd = table({"float32": 1.0, "bfloat16": 1.0},
                [{"flags": sorted(AVX2), "rows_per_s": {"float32": 0.1, "bfloat16": 9.0}}])
    assert choose_measured(odd, supported=EVERY_TYPE, flags=AVX2) == "float32"


def test_nothing_agreeing_but_the_reference_keeps_float32():
    poor = table({"float32": 1.0, "int8": 0.97}, [{"flags": sorted(AMX), "rows_per_s": {"float32": 1, "int8": 2}}])
    assert choose_measured(poor, supported=EVERY_TYPE, flags=AMX) == "float32"


@pytest.fixture
def adapter(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"adapter weights")
    return folder


def write_table(adapter, weights: str) -> None:
    (adapter / MEASURED_COMPUTE_TYPES).write_text(json.dumps(table(MEASURED["agreement"], MEASURED["speed"],
                                                                   weights=weights)))


def test_the_default_reads_the_table_of_these_adapter_weights(adapter, tiny_model_dir, monkeypatch):
    from guardreasoner.models import adapter_weights_id

    monkeypatch.setattr(ctranslate2_backend, "cpu_flags", lambda: AMX)
    monkeypatch.setattr(ctranslate2_backend, "supported_compute_types", lambda: frozenset({"float32", "int8_float32"}))
    measured = adapter / MEASURED_COMPUTE_TYPES
    assert default_compute_type(tiny_model_dir, measured) == "float32"  # no table yet: by model size
    write_table(adapter, weights=adapter_weights_id(adapter))
    assert default_compute_type(tiny_model_dir, measured) == "int8_float32"
    write_table(adapter, weights="measured-for-an-older-adapter")  # retrained since: the figures are stale
    assert default_compute_type(tiny_model_dir, measured) == "float32"


def test_an_adapter_model_runs_in_its_measured_compute_type(tiny_model_dir, tmp_path, monkeypatch):
    """Through load_guard: the adapter's table picks the compute type CTranslate2 is built with."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from guardreasoner import load_guard
    from guardreasoner.models import adapter_weights_id

    monkeypatch.setenv("GUARDREASONER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ctranslate2_backend, "cpu_flags", lambda: AMX)
    monkeypatch.setattr(ctranslate2_backend, "supported_compute_types", lambda: frozenset({"float32", "int8_float32"}))
    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(base, LoraConfig(r=2, target_modules="all-linear", task_type="CAUSAL_LM")).save_pretrained(adapter)
    write_table(adapter, weights=adapter_weights_id(adapter))
    guard = load_guard(str(adapter), "ctranslate2", max_new_tokens=2)
    assert guard.backend.compute_type == "int8_float32"
    assert guard.backend.generator.compute_type == "int8_float32"  # what CTranslate2 itself runs
    assert load_guard(str(adapter), "ctranslate2", compute_type="float32").backend.compute_type == "float32"


def test_the_written_table_is_what_the_backend_reads_and_keeps_other_cpus_speeds():
    """eval/compute_agreement.py's table: this CPU's speeds replace its own earlier entry, not another CPU's."""
    from types import SimpleNamespace

    from eval.compute_agreement import table as measured_table

    args = SimpleNamespace(min_agreement=0.98, benchmarks=["ToxicChat"], sample=4, seed=0, max_new_tokens=512)
    figures = {"float32": {"agreement": 1.0, "at_most": 1.0, "verdicts": 16, "rows_per_s": 0.1},
               "int8_float32": {"agreement": 0.99, "at_most": 0.99, "verdicts": 16, "rows_per_s": 0.3}}
    on_avx2 = measured_table(figures, args, "w", AVX2, None)
    assert choose_measured(on_avx2, supported=EVERY_TYPE, flags=AVX2) == "int8_float32"
    assert choose_measured(on_avx2, supported=EVERY_TYPE, flags=AMX) == "float32"  # not measured there
    slower = {**figures, "int8_float32": {**figures["int8_float32"], "rows_per_s": 0.05}}
    both = measured_table(slower, args, "w", AMX, measured_table(figures, args, "w", AMX, on_avx2))
    assert len(both["speed"]) == 2  # the AMX entry replaced, the AVX2 one kept
    assert choose_measured(both, supported=EVERY_TYPE, flags=AMX) == "float32"
    assert choose_measured(both, supported=EVERY_TYPE, flags=AVX2) == "int8_float32"
    retrained = measured_table(figures, args, "other-weights", AMX, both)  # another adapter's speeds are dropped
    assert [entry["flags"] for entry in retrained["speed"]] == [sorted(AMX & ctranslate2_backend.SPEED_FLAGS)]


def test_a_type_out_of_reach_stops_early_and_is_never_chosen():
    """compute_agreement stops a type once even full agreement on the verdicts left cannot lift it to the bar (the
    embedded guard's int8: 27 of ToxicChat's 40 verdicts, at most 97.05% of the sample's 440); its partial
    figures are written and the faster type is still not chosen."""
    from types import SimpleNamespace

    from eval.compute_agreement import best_possible
    from eval.compute_agreement import table as measured_table

    assert best_possible({"agreed": 27, "verdicts": 40}, 440) == pytest.approx(427 / 440)
    assert best_possible({"agreed": 40, "verdicts": 40}, 440) == 1.0
    assert best_possible({"agreed": 32, "verdicts": 40}, 440) >= 0.98  # 8 misses of 440 still within reach
    args = SimpleNamespace(min_agreement=0.98, benchmarks=["ToxicChat"], sample=40, seed=0, max_new_tokens=512)
    figures = {"float32": {"agreement": 1.0, "at_most": 1.0, "verdicts": 40, "rows_per_s": 0.23},
               "int8": {"agreement": 0.675, "at_most": 427 / 440, "verdicts": 40, "rows_per_s": 0.27}}
    written = measured_table(figures, args, "w", AVX2, None)
    assert written["at_most"]["int8"] == 0.9705
    assert choose_measured(written, supported=EVERY_TYPE, flags=AVX2) == "float32"


def test_a_1b_model_runs_on_transformers_bfloat16_where_the_cpu_computes_it_natively(tmp_path, tiny_model_dir,
                                                                                     monkeypatch):
    """GuardReasoner-1B's shape on a CPU with AMX: transformers bfloat16 (measured faster than CTranslate2 int8,
    docs/engines-and-speed.md); on an AVX2-only CPU, or for a model under 1B, CTranslate2 as before."""
    from guardreasoner import guard as guard_module
    from guardreasoner.models import resolve_model

    one_b = tmp_path / "one-b"
    one_b.mkdir()
    (one_b / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 2048,
                                                   "rope_scaling": {"rope_type": "llama3", "factor": 32.0}}))
    monkeypatch.setattr(guard_module, "_cuda_available", lambda: False)
    monkeypatch.setattr(ctranslate2_backend, "cpu_flags", lambda: AMX)
    assert guard_module.choose_backend(resolve_model(str(one_b))) == "transformers"
    assert guard_module.choose_backend(resolve_model(str(tiny_model_dir))) == "ctranslate2"  # too small to gain
    monkeypatch.setattr(ctranslate2_backend, "cpu_flags", lambda: AVX2)
    assert guard_module.choose_backend(resolve_model(str(one_b))) == "ctranslate2"
    assert not guard_module.native_bfloat16_pays(one_b)
