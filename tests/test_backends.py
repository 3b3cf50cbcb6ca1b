import sys
import threading

import pytest

from guardreasoner.backends import SamplingConfig
from guardreasoner.backends.transformers_backend import TransformersBackend
from guardreasoner.guard import Guard
from guardreasoner.template import user_turn
from tests import fake_vllm
from tests.servers import running
from tests.tiny_models import HARMFUL_REQUEST, SAFE_REQUEST, TAUGHT

PROMPTS = ["short", "a somewhat longer prompt with more words in it", "mid length prompt here"]


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    return TransformersBackend(str(tiny_model_dir), batch_size=3)


@pytest.fixture(scope="module")
def taught_backend(taught_model_dir):
    return TransformersBackend(str(taught_model_dir), batch_size=2)


def test_left_padded_batch_equals_one_by_one(tiny_backend):
    sampling = SamplingConfig(max_new_tokens=12)
    batch = tiny_backend.generate(PROMPTS, sampling)
    singles = [tiny_backend.generate([p], sampling)[0] for p in PROMPTS]
    assert [g.text for g in batch] == [g.text for g in singles]
    assert [g.prompt_tokens for g in batch] == [g.prompt_tokens for g in singles]
    assert len({g.prompt_tokens for g in batch}) == 3
    assert all(g.completion_tokens == 12 and g.finish_reason == "length" for g in batch)
    assert all(len(g.tokens) == 12 and len(g.top_logprobs) == 12 for g in batch)


def test_batch_stops_each_row_at_its_own_end(taught_backend):
    sampling = SamplingConfig(max_new_tokens=200)
    out = taught_backend.generate([user_turn(HARMFUL_REQUEST), user_turn(SAFE_REQUEST)], sampling)
    assert [g.text for g in out] == [TAUGHT[HARMFUL_REQUEST], TAUGHT[SAFE_REQUEST]]
    assert all(g.finish_reason == "stop" for g in out)
    assert "".join(out[0].tokens) == out[0].text


def test_stream_yields_the_same_text_and_a_final_generation(taught_backend):
    chunks = list(taught_backend.stream(user_turn(HARMFUL_REQUEST), SamplingConfig(max_new_tokens=200)))
    assert len(chunks) > 10
    assert "".join(c.text for c in chunks) == TAUGHT[HARMFUL_REQUEST]
    final = chunks[-1].generation
    assert final.text == TAUGHT[HARMFUL_REQUEST] and final.finish_reason == "stop"
    assert all(c.generation is None for c in chunks[:-1])


def test_stop_event_ends_generation_early(taught_backend):
    stop = threading.Event()
    chunks = []
    for chunk in taught_backend.stream(user_turn(HARMFUL_REQUEST), SamplingConfig(max_new_tokens=400), stop=stop):
        chunks.append(chunk)
        if len(chunks) == 3:
            stop.set()
    final = chunks[-1].generation
    assert final.finish_reason == "interrupted"
    assert final.completion_tokens < 100  # the full answer is ~120 tokens; the stop lands within a few
    assert TAUGHT[HARMFUL_REQUEST].startswith(final.text)


def _vllm_backend(monkeypatch, model_dir, **options):
    fake = fake_vllm.install(monkeypatch, model_dir)
    from guardreasoner.backends.vllm_backend import VLLMBackend

    return fake, VLLMBackend(str(model_dir), **options)


# The tiny models' context (their config's max_position_embeddings). Tests about something other than the
# context's size pass it, so that each fails, on code without its fix, for its own reason.
CONTEXT = 2048


def test_vllm_backend_maps_paper_settings_outputs_and_streaming(taught_model_dir, monkeypatch):
    fake, backend = _vllm_backend(monkeypatch, taught_model_dir)
    guard = Guard(backend)
    result = guard.classify([HARMFUL_REQUEST])[0]
    prompt_length = fake.calls["prompt_lengths"][0]
    # The answer may take what the context leaves after the prompt (the tiny model's context is 2048).
    assert fake.calls["params"][0] == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 2048 - prompt_length,
                                       "logprobs": 5, "seed": None}
    assert fake.calls["engine_args"]["model"] == str(taught_model_dir)
    assert result.labels["prompt_harmfulness"] == "harmful" and result.status == "ok"
    assert result.verdicts["prompt_harmfulness"].p_positive > 0.5
    updates = list(guard.stream(SAFE_REQUEST))
    assert "".join(u.delta for u in updates) == TAUGHT[SAFE_REQUEST]
    assert updates[-1].result.labels["prompt_harmfulness"] == "unharmful"
    assert updates[-1].result.verdicts["prompt_harmfulness"].p_positive < 0.5
    backend.close()


def test_vllm_context_is_sized_from_the_model_config_and_the_request(taught_model_dir, monkeypatch):
    """vLLM refuses a max_model_len over the config's max_position_embeddings (2048 here), so a fixed 4096
    fails on this model; the guard asks for input budget + new tokens + the chat template's room."""
    fake, backend = _vllm_backend(monkeypatch, taught_model_dir)
    assert fake.calls["engine_args"]["max_model_len"] == backend.max_model_len == 2048  # capped by the config
    backend.close()
    from guardreasoner import load_guard

    guard = load_guard(str(taught_model_dir), "vllm", max_input_tokens=1000, max_new_tokens=300)
    assert fake.calls["engine_args"]["max_model_len"] == 1000 + 300 + 256
    guard.close()


def test_a_row_too_long_for_the_context_fails_alone(taught_model_dir, monkeypatch):
    """vLLM raises for a prompt at or over max_model_len; one such row must not fail the batch."""
    fake, backend = _vllm_backend(monkeypatch, taught_model_dir, max_model_len=600)
    long_prompt = "Tell me about bread. " * 150  # ~900 tokens
    untruncated = Guard(backend, max_input_tokens=None).classify([long_prompt, HARMFUL_REQUEST])
    assert untruncated[0].finish_reason == "error" and "generation_error" in untruncated[0].flags
    assert untruncated[1].labels["prompt_harmfulness"] == "harmful" and untruncated[1].status == "ok"
    # The guard's own truncation makes it fit: the row completes, marked as cut.
    truncated = Guard(backend, max_input_tokens=400).classify([long_prompt])[0]
    assert truncated.input_truncated and truncated.finish_reason in ("stop", "length")
    assert max(fake.calls["prompt_lengths"]) < 600
    stream = list(Guard(backend, max_input_tokens=None).stream(long_prompt))
    assert stream[-1].result.finish_reason == "error"
    backend.close()


def test_vllm_backend_clamps_logprobs_to_what_vllm_allows(taught_model_dir, monkeypatch):
    fake, backend = _vllm_backend(monkeypatch, taught_model_dir, max_model_len=CONTEXT)
    generation = backend.generate([user_turn(HARMFUL_REQUEST)], SamplingConfig(20, top_logprobs=50))[0]
    assert fake.calls["params"][-1]["logprobs"] == 20 and generation.finish_reason == "length"
    assert all(len(step) >= 20 for step in generation.top_logprobs)
    backend.close()


def test_vllm_backend_keeps_tokens_joined_to_the_text(taught_model_dir, monkeypatch):
    """vLLM's token_ids end with the stop token, whose logprob entry decodes to <|im_end|>; the backend drops
    it so the tokens join to the text and the verdict's place is found."""
    _, backend = _vllm_backend(monkeypatch, taught_model_dir, max_model_len=CONTEXT)
    generation = backend.generate([user_turn(HARMFUL_REQUEST)], SamplingConfig(200))[0]
    assert generation.finish_reason == "stop" and generation.text == TAUGHT[HARMFUL_REQUEST]
    assert "".join(generation.tokens) == generation.text
    assert generation.completion_tokens == len(generation.tokens) + 1  # the stop token counts as generated
    backend.close()


def _model_copy(source, folder, config=None, generation_config=None):
    """A copy of a model folder with some config.json or generation_config.json keys changed."""
    import json
    import shutil

    shutil.copytree(source, folder)
    for name, changes in (("config.json", config), ("generation_config.json", generation_config)):
        if changes:
            path = folder / name
            path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return folder


def test_vllm_stops_on_generation_config_eos_and_keeps_tokens_joined(taught_model_dir, tmp_path, monkeypatch):
    """vLLM also stops on generation_config.json's EOS ids (Llama 3 lists <|eot_id|> there): the token it stopped
    on stays in token_ids but not in the text, special or not. Here the model's own '---' is made such an id."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(taught_model_dir)
    (stop_id,) = tokenizer("---", add_special_tokens=False)["input_ids"]
    folder = _model_copy(taught_model_dir, tmp_path / "eot",
                         generation_config={"eos_token_id": [tokenizer.eos_token_id, stop_id]})
    _, backend = _vllm_backend(monkeypatch, folder, max_model_len=CONTEXT)
    generation = backend.generate([user_turn(HARMFUL_REQUEST)], SamplingConfig(200))[0]
    expected = TAUGHT[HARMFUL_REQUEST].split("---")[0]
    assert generation.finish_reason == "stop" and generation.text == expected
    assert "".join(generation.tokens) == generation.text and len(generation.top_logprobs) == len(generation.tokens)
    assert generation.completion_tokens == len(generation.tokens) + 1  # the stop token counts, as on other engines
    streamed = list(backend.stream(user_turn(HARMFUL_REQUEST), SamplingConfig(200)))
    assert "".join(chunk.text for chunk in streamed) == expected == streamed[-1].generation.text
    backend.close()


def test_vllm_context_follows_the_length_vllm_derives_from_the_config(tiny_model_dir, tmp_path, monkeypatch):
    """vLLM derives the longest context from several config.json keys, a model_max_length there overriding
    max_position_embeddings (Command-R's configs); asking for more is refused."""
    folder = _model_copy(tiny_model_dir, tmp_path / "short", config={"model_max_length": 1024})
    fake, backend = _vllm_backend(monkeypatch, folder)
    assert backend.max_model_len == fake.calls["engine_args"]["max_model_len"] == 1024
    assert backend.generate(["hello"], SamplingConfig(4))[0].completion_tokens == 4
    backend.close()


def test_closing_the_vllm_backend_frees_the_gpu_for_the_next_model(taught_model_dir, tiny_model_dir, monkeypatch):
    """Pooled mining and the app's model switcher load one model after another in one process: vLLM refuses
    a second engine while the first holds its share of GPU memory."""
    fake, first = _vllm_backend(monkeypatch, taught_model_dir, max_model_len=CONTEXT)
    from guardreasoner.backends.vllm_backend import EngineStartFailed, VLLMBackend

    # vLLM's engine core logs the cause in its own process; the caller sees only "Engine core initialization
    # failed", so the backend says what to check.
    with pytest.raises(EngineStartFailed, match="Engine core initialization failed") as refused:
        VLLMBackend(str(tiny_model_dir), max_model_len=CONTEXT)
    assert "gpu_memory_utilization=0.9" in str(refused.value) and "close the model loaded before" in str(refused.value)
    assert isinstance(refused.value, RuntimeError) and "Free memory" in fake.calls["engine_core_errors"][0]
    first.close()
    assert fake.device["used"] == 0 and fake.calls["cleanups"] == 1
    second = VLLMBackend(str(tiny_model_dir), max_model_len=CONTEXT)
    assert second.generate(["hello"], SamplingConfig(4))[0].completion_tokens > 0
    second.close()
    first.close()  # closing twice is harmless


def test_vllm_streams_run_concurrently(taught_model_dir, monkeypatch):
    """One app user's stream must not hold the engine: a second stream finishes while the first is open."""
    fake, backend = _vllm_backend(monkeypatch, taught_model_dir, max_model_len=CONTEXT)
    first = backend.stream(user_turn(HARMFUL_REQUEST), SamplingConfig(200))
    assert next(first).text  # the first stream is open, mid-answer
    done = {}
    worker = threading.Thread(target=lambda: done.update(
        chunks=list(backend.stream(user_turn(SAFE_REQUEST), SamplingConfig(200)))))
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the second stream waited for the first"
    assert done["chunks"][-1].generation.text == TAUGHT[SAFE_REQUEST]
    rest = list(first)
    assert rest[-1].generation.text == TAUGHT[HARMFUL_REQUEST]
    stop = threading.Event()
    stopped = backend.stream(user_turn(HARMFUL_REQUEST), SamplingConfig(200), stop=stop)
    next(stopped)
    stop.set()
    assert list(stopped)[-1].generation.finish_reason == "interrupted"
    backend.close()
    assert fake.calls["aborted"]  # the interrupted request was aborted inside the engine


def test_vllm_backend_gives_repeated_prompts_distinct_seeds(taught_model_dir, monkeypatch):
    """Mining samples each prompt k times in one call: one shared seed would make the k samples identical.
    (vLLM does not promise equal texts for equal seeds across batches, so nothing relies on that here.)"""
    fake, backend = _vllm_backend(monkeypatch, taught_model_dir, max_model_len=CONTEXT)
    texts = [g.text for g in backend.generate([user_turn(SAFE_REQUEST)] * 4, SamplingConfig(40, 1.5, seed=7))]
    assert [p["seed"] for p in fake.calls["params"]] == [7, 8, 9, 10]
    assert len(set(texts)) > 1
    backend.close()


def test_vllm_backend_says_how_to_install_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    from guardreasoner.backends.vllm_backend import VLLMBackend

    with pytest.raises(ImportError, match="requirements/gpu.txt"):
        VLLMBackend("any")


@pytest.fixture(scope="module")
def served(taught_model_dir):
    from tests.openai_server import openai_app

    with running(openai_app(TransformersBackend(str(taught_model_dir)), "taught")) as url:
        yield url


def test_openai_backend_raw_mode_matches_local_generation(served, taught_backend):
    from guardreasoner.backends.openai_backend import OpenAIBackend

    remote = Guard(OpenAIBackend(served + "/v1"))
    local = Guard(taught_backend)
    items = [HARMFUL_REQUEST, SAFE_REQUEST]
    remote_results, local_results = remote.classify(items), local.classify(items)
    assert remote.backend.model_id == "taught"  # discovered from /v1/models
    assert [r.output for r in remote_results] == [r.output for r in local_results]
    assert [r.labels for r in remote_results] == [{"prompt_harmfulness": "harmful", "response_refusal": None,
                                                   "response_harmfulness": None},
                                                   {"prompt_harmfulness": "unharmful", "response_refusal": None,
                                                    "response_harmfulness": None}]
    for remote_result, local_result in zip(remote_results, local_results):
        remote, local = remote_result.verdicts, local_result.verdicts
        assert remote["prompt_harmfulness"].p_positive == pytest.approx(local["prompt_harmfulness"].p_positive)
        assert remote_result.output_tokens == local_result.output_tokens


def test_openai_backend_streams_over_sse(served):
    from guardreasoner.backends.openai_backend import OpenAIBackend

    guard = Guard(OpenAIBackend(served + "/v1", "taught"))
    updates = list(guard.stream(HARMFUL_REQUEST))
    assert len(updates) > 10
    assert "".join(u.delta for u in updates) == TAUGHT[HARMFUL_REQUEST]
    result = updates[-1].result
    assert result.labels["prompt_harmfulness"] == "harmful" and result.output_tokens > 0
    verdict_events = [e for u in updates for e in u.events if e.kind == "verdict" and e.task == "prompt_harmfulness"]
    assert verdict_events and verdict_events[0].label == "harmful"


def test_openai_backend_chat_mode_uses_chat_completions(served, taught_model_dir):
    from transformers import AutoTokenizer

    from guardreasoner.backends.openai_backend import OpenAIBackend

    backend = OpenAIBackend(served + "/v1", "taught", mode="chat",
                            tokenizer=AutoTokenizer.from_pretrained(taught_model_dir))
    generation = backend.generate(["hello"], SamplingConfig(max_new_tokens=8))[0]
    # The server applied the chat template: same as generating from the templated text locally.
    local = TransformersBackend(str(taught_model_dir))
    local.mode = "chat"
    assert generation.text == local.generate(["hello"], SamplingConfig(max_new_tokens=8))[0].text
    assert generation.top_logprobs and len(generation.top_logprobs) == generation.completion_tokens or \
        generation.finish_reason == "stop"
    chunks = list(backend.stream("hello", SamplingConfig(max_new_tokens=8)))
    assert "".join(c.text for c in chunks) == generation.text


def test_openai_backend_retries_server_errors_with_backoff(taught_model_dir):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from guardreasoner.backends.openai_backend import OpenAIBackend
    from tests.openai_server import openai_app

    app = openai_app(TransformersBackend(str(taught_model_dir)), "taught")
    failures = {"left": 2, "seen": 0}

    @app.middleware("http")
    async def flaky(request, call_next):
        if request.url.path.endswith("/completions") and failures["left"] > 0:
            failures["left"] -= 1
            failures["seen"] += 1
            return JSONResponse({"error": "busy"}, status_code=503)
        return await call_next(request)

    assert isinstance(app, FastAPI)
    with running(app) as url:
        backend = OpenAIBackend(url + "/v1", "taught", max_retries=3)
        generation = backend.generate([user_turn(HARMFUL_REQUEST)], SamplingConfig(max_new_tokens=200))[0]
        assert generation.text == TAUGHT[HARMFUL_REQUEST]
        assert failures["seen"] == 2
        failures["left"] = 5
        with pytest.raises(Exception, match="503|busy"):
            OpenAIBackend(url + "/v1", "taught", max_retries=1).generate(["x"], SamplingConfig(max_new_tokens=4))


def test_openai_backend_times_out(tmp_path):
    import asyncio

    import openai
    from fastapi import FastAPI

    from guardreasoner.backends.openai_backend import OpenAIBackend

    app = FastAPI()

    @app.post("/v1/completions")
    async def slow():
        await asyncio.sleep(5)
        return {}

    with running(app) as url:
        backend = OpenAIBackend(url + "/v1", "m", timeout=0.5, max_retries=0)
        with pytest.raises(openai.APITimeoutError):
            backend.generate(["x"], SamplingConfig(max_new_tokens=4))



def test_openai_backend_never_sends_a_timed_out_request_again(taught_model_dir):
    """A timed-out answer may still be computing on the server: one retry policy, which retries busy statuses
    and connection errors but not timeouts (the client's own retries would send it again)."""
    import asyncio

    import openai
    from fastapi import FastAPI

    from guardreasoner.backends.openai_backend import OpenAIBackend

    app = FastAPI()
    seen = []

    @app.post("/v1/completions")
    async def slow():
        seen.append(1)
        await asyncio.sleep(3)
        return {}

    with running(app) as url:
        backend = OpenAIBackend(url + "/v1", "m", timeout=0.5, max_retries=3)
        with pytest.raises(openai.APITimeoutError):
            backend.generate(["x"], SamplingConfig(max_new_tokens=4))
        assert len(seen) == 1
    sized = OpenAIBackend(url + "/v1", "m", max_retries=0)
    assert sized.request_timeout(SamplingConfig(2048)) > 200 > sized.request_timeout(SamplingConfig(64))


def test_vllm_is_bounded_to_the_release_the_stand_in_was_checked_against():
    """tests/fake_vllm.py mirrors vLLM 0.19.1 (the constraints' pin); the extra and requirements/gpu.txt must not
    let pip take a later minor release, whose engine API may differ."""
    from pathlib import Path

    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    root = Path(__file__).resolve().parents[1]
    pinned = Version(next(line.split("==")[1].strip() for line in
                          (root / "requirements/constraints-gpu.txt").read_text().splitlines()
                          if line.startswith("vllm==")))
    extra = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    listed = [line for line in (root / "requirements/gpu.txt").read_text().splitlines() if line.startswith("vllm")]
    for requirement in (Requirement(spec) for spec in [*extra, *listed] if spec.startswith("vllm")):
        assert pinned in requirement.specifier
        assert Version(f"{pinned.major}.{pinned.minor + 1}") not in requirement.specifier, str(requirement)
