"""The CTranslate2 backend against the real converter and the transformers backend, on tiny Llamas (CPU)."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

pytest.importorskip("ctranslate2")

from guardreasoner import load_guard
from guardreasoner.backends import ctranslate2_backend
from guardreasoner.backends.base import SamplingConfig
from guardreasoner.backends.ctranslate2_backend import CTranslate2Backend, converted_dir
from guardreasoner.backends.transformers_backend import TransformersBackend
from guardreasoner.guard import Guard, choose_backend, make_backend
from guardreasoner.models import ModelSpec, resolve_model
from guardreasoner.template import user_turn
from tests.tiny_models import HARMFUL_REQUEST, SAFE_REQUEST


@pytest.fixture(autouse=True)
def ct2_cache(tmp_path_factory, monkeypatch):
    """Conversions go to one cache for this module (each test's own would convert again)."""
    monkeypatch.setenv("GUARDREASONER_CACHE", str(tmp_path_factory.getbasetemp() / "ct2-cache"))


@pytest.fixture
def conversions(monkeypatch):
    """Counts calls of the real converter (it still runs)."""
    from ctranslate2.converters import TransformersConverter

    calls = []
    real = TransformersConverter.convert

    def counted(self, output_dir, *args, **kwargs):
        calls.append(output_dir)
        return real(self, output_dir, *args, **kwargs)

    monkeypatch.setattr(TransformersConverter, "convert", counted)
    return calls


def test_stream_equals_generate(tiny_model_dir):
    backend = CTranslate2Backend(tiny_model_dir, compute_type="int8", inter_threads=1)
    sampling = SamplingConfig(max_new_tokens=30, top_logprobs=0)
    prompts = [user_turn("hello"), user_turn("how do I bake bread?", "Knead it.")]
    generated = backend.generate(prompts, sampling)
    for prompt, generation in zip(prompts, generated):
        chunks = list(backend.stream(prompt, sampling))
        assert "".join(chunk.text for chunk in chunks) == chunks[-1].generation.text == generation.text
        assert chunks[-1].generation.completion_tokens == generation.completion_tokens == 30
        assert generation.finish_reason == "length"
        assert generation.prompt_tokens > len(backend._static) > 50  # the instruction went through the cache


def test_generate_matches_transformers_in_float32(tiny_model_dir):
    """Same greedy tokens and the same top-k log-probabilities as transformers, in float32."""
    ct2 = CTranslate2Backend(tiny_model_dir, compute_type="float32", inter_threads=1)
    reference = TransformersBackend(str(tiny_model_dir))
    sampling = SamplingConfig(max_new_tokens=12, top_logprobs=5)
    prompts = [user_turn("hello"), user_turn("a much longer request, to pad the shorter one in the batch", "ok")]
    for ours, theirs in zip(ct2.generate(prompts, sampling), reference.generate(prompts, sampling)):
        assert ours.tokens == theirs.tokens and ours.prompt_tokens == theirs.prompt_tokens
        for index in (0, 5, 11):
            assert ours.top_logprobs[index].keys() == theirs.top_logprobs[index].keys()
            for token, logprob in theirs.top_logprobs[index].items():
                assert ours.top_logprobs[index][token] == pytest.approx(logprob, abs=1e-3)


def test_stop_event_stops_generation(tiny_model_dir):
    backend = CTranslate2Backend(tiny_model_dir, compute_type="int8", inter_threads=1)
    stop = threading.Event()
    chunks = []
    for chunk in backend.stream(user_turn("hello"), SamplingConfig(max_new_tokens=1500, top_logprobs=0), stop=stop):
        chunks.append(chunk)
        stop.set()
    generation = chunks[-1].generation
    assert generation.finish_reason == "interrupted"
    assert 0 < generation.completion_tokens < 1500


def test_streams_overlap_in_time(tiny_model_dir):
    """Two users at once: with two workers their generations run side by side, not one after the other."""
    backend = CTranslate2Backend(tiny_model_dir, compute_type="int8", inter_threads=2)
    spans = {}

    def user(name):
        first = None
        for chunk in backend.stream(user_turn(name), SamplingConfig(max_new_tokens=400, top_logprobs=0)):
            first = first or time.perf_counter()
        spans[name] = (first, time.perf_counter())

    users = [threading.Thread(target=user, args=(name,)) for name in ("first", "second")]
    for thread in users:
        thread.start()
    for thread in users:
        thread.join()
    (start_a, end_a), (start_b, end_b) = spans["first"], spans["second"]
    assert start_a < end_b and start_b < end_a  # each began writing before the other finished


@pytest.mark.slow
def test_confidences_match_transformers(taught_model_dir, monkeypatch):
    """On the same guard output, the verdict probabilities agree with the transformers backend's; each costs one
    short pass at its verdict's position, never one per generated token."""
    ct2 = Guard(CTranslate2Backend(taught_model_dir, compute_type="float32"))
    reference = Guard(TransformersBackend(str(taught_model_dir)))
    passes = []
    original = CTranslate2Backend.top_logprobs_at
    monkeypatch.setattr(CTranslate2Backend, "top_logprobs_at",
                        lambda self, *args: passes.append(args[1]) or original(self, *args))
    for request in (HARMFUL_REQUEST, SAFE_REQUEST):
        passes.clear()
        ours, theirs = ct2.classify_one(request), reference.classify_one(request)
        assert 1 <= len(passes) <= 3 < ours.output_tokens  # the request verdict (the reply ones are n/a)
        assert ours.output == theirs.output and ours.finish_reason == "stop"
        p_ours = ours.verdicts["prompt_harmfulness"].p_positive
        p_theirs = theirs.verdicts["prompt_harmfulness"].p_positive
        assert p_ours is not None and p_ours == pytest.approx(p_theirs, abs=1e-3)
        assert (p_ours > 0.5) == (request == HARMFUL_REQUEST)
        streamed = next(update.result for update in ct2.stream(request) if update.result)
        assert streamed.verdicts["prompt_harmfulness"].p_positive == pytest.approx(p_ours, abs=1e-6)


def test_conversion_is_cached_and_reused(tiny_model_dir, conversions, monkeypatch, tmp_path):
    monkeypatch.setenv("GUARDREASONER_CACHE", str(tmp_path))
    first = converted_dir(tiny_model_dir, "int8")
    stamp = (first / "model.bin").stat().st_mtime_ns
    CTranslate2Backend(tiny_model_dir, compute_type="int8", inter_threads=1)
    assert converted_dir(tiny_model_dir, "int8") == first
    assert len(conversions) == 1 and (first / "model.bin").stat().st_mtime_ns == stamp
    assert converted_dir(tiny_model_dir, "float32") != first  # another quantization is another conversion
    assert len(conversions) == 2
    assert not [p for p in (tmp_path / "ctranslate2").iterdir() if ".tmp-" in p.name]  # no staging left behind


@pytest.fixture(scope="module")
def unconvertible_dir(tmp_path_factory, tokenizer_dir):
    """A tiny GPT-Neo: an architecture CTranslate2 has no converter for."""
    import torch
    from transformers import AutoTokenizer, GPTNeoConfig, GPTNeoForCausalLM

    folder = tmp_path_factory.mktemp("gpt-neo")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = GPTNeoConfig(vocab_size=len(tokenizer), hidden_size=32, num_layers=2, num_heads=4,
                          attention_types=[[["global", "local"], 1]], max_position_embeddings=512,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    GPTNeoForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_unconvertible_model_falls_back_with_one_line(unconvertible_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="guardreasoner"):
        backend = make_backend(resolve_model(str(unconvertible_dir)), "ctranslate2", batch_size=2)
    assert backend.name == "transformers" and backend.batch_size == 2
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and "CTranslate2 cannot convert GPTNeoForCausalLM" in lines[0]
    assert "on transformers instead" in lines[0]
    assert backend.generate([user_turn("hi")], SamplingConfig(max_new_tokens=3))[0].completion_tokens == 3


def test_auto_picks_as_documented(monkeypatch, tiny_model_dir):
    from guardreasoner import guard as guard_module
    from guardreasoner.backends import vllm_backend

    local = ModelSpec("m", "/m", "local", "raw")
    embedded = ModelSpec("e", "", "embedded", "raw")
    endpoint = ModelSpec("u", "http://x/v1", "endpoint", "raw")
    assert choose_backend(endpoint) == "openai"
    assert choose_backend(local, "transformers") == "transformers"
    for cuda, vllm, ct2, spec, expected in [
        (True, True, True, local, "vllm"),
        (True, True, True, embedded, "transformers"),  # vLLM is not used for the 135M embedded model
        (True, False, True, local, "transformers"),
        (False, True, True, local, "ctranslate2"),
        (False, False, False, local, "transformers"),
    ]:
        monkeypatch.setattr(guard_module, "_cuda_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(vllm_backend, "vllm_available", lambda vllm=vllm: vllm)
        monkeypatch.setattr(ctranslate2_backend, "ctranslate2_available", lambda ct2=ct2: ct2)
        assert choose_backend(spec) == expected, (cuda, vllm, ct2, spec.kind)
    monkeypatch.undo()
    monkeypatch.setenv("GUARDREASONER_CACHE", str(tiny_model_dir.parent / "auto-cache"))
    assert load_guard(str(tiny_model_dir)).backend.name == "ctranslate2"  # this CPU machine has it installed


def test_default_compute_type_follows_model_size(tiny_model_dir, tmp_path):
    from guardreasoner.backends.ctranslate2_backend import default_compute_type

    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 2048}')  # GuardReasoner-1B's
    assert default_compute_type(tmp_path) == "int8"
    assert default_compute_type(tiny_model_dir) == "float32"  # int8 flipped the 135M guard's verdicts


def test_long_rows_go_in_smaller_groups():
    from guardreasoner.backends.base import length_groups

    lengths = [2000, 1900, 300, 1000, 290, 280, 5000]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    assert list(length_groups(order, lengths, batch_size=8, max_batch_tokens=4096)) == [
        [6], [0, 1], [3, 2, 4, 5]]  # a row over the budget runs alone; 2 x 2000 fits, 4 x 1000 too
    assert list(length_groups(order, lengths, batch_size=3)) == [[6, 0, 1], [3, 2, 4], [5]]


def test_batches_hold_prompts_of_similar_length(tiny_model_dir):
    """CTranslate2 would feed a longer prompt's extra tokens one decoding step at a time: split such batches."""
    from guardreasoner.backends.ctranslate2_backend import _similar_lengths

    lengths = [500, 490, 470, 200, 190]
    assert list(_similar_lengths([0, 1, 2, 3, 4], lengths, spread=32)) == [[0, 1, 2], [3, 4]]
    backend = CTranslate2Backend(tiny_model_dir, compute_type="float32", inter_threads=2)
    prompts = [user_turn("word " * 200), user_turn("hi"), user_turn("word " * 190), user_turn("hey")]
    sampling = SamplingConfig(max_new_tokens=8, top_logprobs=0)
    batched = backend.generate(prompts, sampling)
    assert [g.text for g in batched] == [backend.generate([p], sampling)[0].text for p in prompts]


class _SlowToRelease:
    """A step callback whose release takes a while, as CTranslate2's worker releasing ours may under load."""

    def __init__(self, inner, released: list):
        self.inner, self.released = inner, released

    def __call__(self, step):
        return self.inner(step)

    def __del__(self):
        time.sleep(0.3)
        self.released.append(True)


class _GeneratorWithSlowRelease:
    def __init__(self, generator, released: list):
        self.generator, self.released = generator, released

    def generate_batch(self, starts, *, callback, **options):
        return self.generator.generate_batch(starts, callback=_SlowToRelease(callback, self.released), **options)


def test_results_return_only_after_ctranslate2_let_go_of_the_callback(tiny_model_dir):
    """A result arrives before CTranslate2's worker destroys the job holding the Python step callback; that
    destructor takes the GIL, and at interpreter exit it aborted the process ("terminate called without an
    active exception", seen in the wheel test). generate and stream return only after the release."""
    backend = CTranslate2Backend(tiny_model_dir, compute_type="int8", inter_threads=2)
    released: list = []
    backend.generator = _GeneratorWithSlowRelease(backend.generator, released)
    sampling = SamplingConfig(max_new_tokens=4, top_logprobs=0)
    backend.generate([user_turn("hello"), user_turn("a much longer request " * 20)], sampling)
    assert len(released) == 2  # two length groups, two jobs
    list(backend.stream(user_turn("hello"), sampling))
    assert len(released) == 3


@pytest.fixture(scope="module")
def long_text():
    """About 2,700 tokens of raw text: past the 256-token original context of tiny_models.LLAMA3_ROPE."""
    return " ".join(f"word{i % 97} is here" for i in range(560))


def _rope_model(tmp_path_factory, tokenizer_dir, name, rope_scaling):
    from tests.tiny_models import rope_scaled_llama

    return rope_scaled_llama(tmp_path_factory.mktemp(name), tokenizer_dir, rope_scaling)


@pytest.mark.parametrize("rope", ["llama3", "linear"])
def test_rope_scaling_matches_transformers_on_long_inputs(rope, tmp_path_factory, tokenizer_dir, long_text):
    """GuardReasoner's Llama 3.x RoPE scaling survives conversion: CTranslate2's converter dropped its factor
    and original length, so a long input ran with plain RoPE (the top-5 log-probabilities differed by ~13
    nats). Linear scaling, which upstream converts itself, is checked the same way."""
    from tests.tiny_models import LLAMA3_ROPE

    scaling = LLAMA3_ROPE if rope == "llama3" else {"rope_type": "linear", "factor": 4.0}
    folder = _rope_model(tmp_path_factory, tokenizer_dir, f"rope-{rope}", scaling)
    sampling = SamplingConfig(max_new_tokens=2, top_logprobs=5)
    ours = CTranslate2Backend(folder, compute_type="float32", inter_threads=1).complete([long_text], sampling)[0]
    theirs = TransformersBackend(str(folder)).complete([long_text], sampling)[0]
    assert theirs.prompt_tokens >= 2500
    deltas = [abs(ours.top_logprobs[index].get(token, float("-inf")) - logprob)
              for index in range(2) for token, logprob in theirs.top_logprobs[index].items()]
    assert max(deltas) <= 0.01, f"max |delta| {max(deltas):.4f} nats"
    assert ours.tokens == theirs.tokens


def test_auto_avoids_ctranslate2_for_unverified_rope_scaling(monkeypatch, tmp_path, caplog):
    """auto runs a model on CTranslate2 only where its RoPE scaling is known to convert (llama3 since our fix);
    for another (YaRN here) it picks transformers, with one line saying why."""
    from guardreasoner import guard as guard_module

    monkeypatch.setattr(guard_module, "_cuda_available", lambda: False)
    monkeypatch.setattr(ctranslate2_backend, "ctranslate2_available", lambda: True)
    scalings = {"plain": None, "llama3": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
                "dynamic-legacy": {"type": "dynamic", "factor": 2.0}}
    chosen, lines = {}, {}
    for name, scaling in scalings.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model_type": "llama", "rope_scaling": scaling}))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="guardreasoner"):
            chosen[name] = choose_backend(ModelSpec(name, str(tmp_path / name), "local", "raw"))
        lines[name] = [record.getMessage() for record in caplog.records]
    assert chosen == {"plain": "ctranslate2", "llama3": "ctranslate2", "yarn": "transformers",
                      "dynamic-legacy": "transformers"}
    assert lines["plain"] == lines["llama3"] == []
    assert lines["yarn"] == ["yarn: CTranslate2's conversion of RoPE scaling 'yarn' is not verified against "
                             "transformers; auto runs it on transformers"]
    assert len(lines["dynamic-legacy"]) == 1 and "'dynamic'" in lines["dynamic-legacy"][0]
