import sys
import threading
import types

import pytest

from guardreasoner.backends import SamplingConfig
from guardreasoner.backends.transformers_backend import TransformersBackend
from guardreasoner.guard import Guard
from guardreasoner.template import user_turn
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


class _FakeVLLM:
    """Stand-in for the vllm package with the API surface the backend uses, running transformers.

    It checks our adapter (parameters, output mapping, streaming through the engine), not vLLM itself; the
    real engine runs only on GPU machines."""

    @staticmethod
    def module(model_dir):
        from transformers import AutoTokenizer

        backend = TransformersBackend(str(model_dir))
        fake = types.ModuleType("vllm")
        calls = {}

        class SamplingParams:
            def __init__(self, temperature, top_p, max_tokens, logprobs, seed):
                calls["params"] = dict(temperature=temperature, top_p=top_p, max_tokens=max_tokens, logprobs=logprobs)
                self.config = SamplingConfig(max_tokens, temperature, top_p, logprobs or 0, seed)

        class Logprob:
            def __init__(self, logprob, decoded_token):
                self.logprob, self.decoded_token = logprob, decoded_token

        def request_output(request_id, prompt_ids, generation):
            tokenizer = backend.tokenizer
            ids = tokenizer(generation.text, add_special_tokens=False)["input_ids"] if generation.text else []
            steps = None
            if generation.top_logprobs:
                steps = [{tid: Logprob(top.get(tok, -1.0), tok)} | {-j - 1: Logprob(lp, t) for j, (t, lp) in enumerate(top.items())}
                         for tid, tok, top in zip(ids, generation.tokens, generation.top_logprobs)]
            completion = types.SimpleNamespace(text=generation.text, token_ids=ids, logprobs=steps,
                                               finish_reason=generation.finish_reason)
            return types.SimpleNamespace(request_id=request_id, prompt_token_ids=prompt_ids, outputs=[completion],
                                         finished=True)

        class Engine:
            def __init__(self):
                self.pending = {}

            def add_request(self, request_id, prompt, params):
                text = prompt if isinstance(prompt, str) else backend.tokenizer.decode(prompt["prompt_token_ids"])
                self.pending[request_id] = backend.complete_stream(text, params.config, templated=not isinstance(prompt, str))
                self.text = ""

            def step(self):
                outs = []
                for rid, stream in list(self.pending.items()):
                    chunk = next(stream)
                    if chunk.generation is not None:
                        del self.pending[rid]
                        outs.append(request_output(rid, [0] * chunk.generation.prompt_tokens, chunk.generation))
                    else:
                        self.text += chunk.text
                        partial = types.SimpleNamespace(text=self.text)
                        outs.append(types.SimpleNamespace(request_id=rid, outputs=[partial], finished=False))
                return outs

            def abort_request(self, ids):
                for rid in ids:
                    self.pending.pop(rid, None)

        class LLM:
            def __init__(self, model, **kwargs):
                calls["llm"] = dict(model=model, **kwargs)
                self.llm_engine = Engine()

            def get_tokenizer(self):
                return AutoTokenizer.from_pretrained(model_dir)

            def generate(self, prompts, params, use_tqdm=True):
                assert use_tqdm is False
                params = params if isinstance(params, list) else [params] * len(prompts)
                calls["seeds"] = [p.config.seed for p in params]
                outs = []
                for prompt, param in zip(prompts, params):
                    generation = backend.complete([prompt], param.config)[0]
                    outs.append(request_output("x", [0] * generation.prompt_tokens, generation))
                return outs

        fake.LLM, fake.SamplingParams, fake.calls = LLM, SamplingParams, calls
        return fake


def test_vllm_backend_maps_paper_settings_outputs_and_streaming(taught_model_dir, monkeypatch):
    fake = _FakeVLLM.module(taught_model_dir)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from guardreasoner.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(str(taught_model_dir))
    guard = Guard(backend)
    result = guard.classify([HARMFUL_REQUEST])[0]
    assert fake.calls["params"] == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 2048, "logprobs": 5}
    assert fake.calls["llm"]["model"] == str(taught_model_dir)
    assert result.labels["prompt_harmfulness"] == "harmful" and result.status == "ok"
    assert result.verdicts["prompt_harmfulness"].p_positive > 0.5
    updates = list(guard.stream(SAFE_REQUEST))
    assert "".join(u.delta for u in updates) == TAUGHT[SAFE_REQUEST]
    assert updates[-1].result.labels["prompt_harmfulness"] == "unharmful"


def test_vllm_backend_gives_repeated_prompts_distinct_seeds(taught_model_dir, monkeypatch):
    """Mining samples each prompt k times in one call: one shared seed would make the k samples identical."""
    fake = _FakeVLLM.module(taught_model_dir)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    from guardreasoner.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(str(taught_model_dir))
    texts = [g.text for g in backend.generate([user_turn(SAFE_REQUEST)] * 4, SamplingConfig(40, 1.5, seed=7))]
    assert fake.calls["seeds"] == [7, 8, 9, 10]
    assert len(set(texts)) > 1
    again = [g.text for g in backend.generate([user_turn(SAFE_REQUEST)] * 4, SamplingConfig(40, 1.5, seed=7))]
    assert again == texts  # still reproducible


def test_vllm_backend_says_how_to_install_when_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    from guardreasoner.backends.vllm_backend import VLLMBackend

    with pytest.raises(ImportError, match="requirements/gpu.txt"):
        VLLMBackend("any")


@pytest.fixture(scope="module")
def served(taught_model_dir):
    from guardreasoner.serve import create_app

    with running(create_app(TransformersBackend(str(taught_model_dir)), "taught")) as url:
        yield url


def test_openai_backend_raw_mode_matches_local_generation(served, taught_backend):
    from guardreasoner.backends.openai_backend import OpenAIBackend

    remote = Guard(OpenAIBackend(served + "/v1"))
    local = Guard(taught_backend)
    items = [HARMFUL_REQUEST, SAFE_REQUEST]
    remote_results, local_results = remote.classify(items), local.classify(items)
    assert remote.backend.model_id == "taught"  # discovered from /v1/models
    assert [r.output for r in remote_results] == [r.output for r in local_results]
    assert [r.labels for r in remote_results] == [{"prompt_harmfulness": "harmful", "response_refusal": None, "response_harmfulness": None},
                                                   {"prompt_harmfulness": "unharmful", "response_refusal": None, "response_harmfulness": None}]
    for remote_result, local_result in zip(remote_results, local_results):
        assert remote_result.verdicts["prompt_harmfulness"].p_positive == pytest.approx(local_result.verdicts["prompt_harmfulness"].p_positive)
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
    from guardreasoner.serve import create_app

    app = create_app(TransformersBackend(str(taught_model_dir)), "taught")
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
