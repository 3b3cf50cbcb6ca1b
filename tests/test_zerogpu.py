"""The app on a ZeroGPU Space, with a stand-in ``spaces`` package that records what ``spaces.GPU`` wraps.

Hugging Face's ZeroGPU docs: the GPU is lent only inside functions decorated with ``spaces.GPU`` (default 60 s,
``duration=`` a number or a callable taking the function's inputs); models load at start-up, outside them."""

import functools
import importlib
import sys
import types

import pytest

from tests.tiny_models import HARMFUL_REQUEST


@pytest.fixture
def zerogpu_app(monkeypatch):
    state = {"wrapped": {}, "inside": False}

    def gpu(duration=60):
        def decorate(function):
            state["wrapped"][function.__name__] = duration

            @functools.wraps(function)  # gr.api reads the signature
            def call(*args, **kwargs):
                state["inside"] = True
                try:
                    result = function(*args, **kwargs)
                    if isinstance(result, types.GeneratorType):
                        result = list(result)
                    return result
                finally:
                    state["inside"] = False

            return call

        return decorate

    fake = types.ModuleType("spaces")
    fake.GPU = gpu
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.delitem(sys.modules, "app", raising=False)
    app = importlib.import_module("app")
    yield app, state
    sys.modules.pop("app", None)  # other tests import the app without spaces


def test_every_generating_function_runs_under_spaces_gpu_sized_from_its_tokens(zerogpu_app, taught_model_dir,
                                                                              tiny_model_dir, tmp_path, monkeypatch):
    app, state = zerogpu_app
    loads = []
    real_load = app.load_guard
    monkeypatch.setattr(app, "load_guard", lambda *a, **k: loads.append(state["inside"]) or real_load(*a, **k))
    demo = app.build_app(str(taught_model_dir))
    wrapped = state["wrapped"]
    assert {"analyze_on_gpu", "run_batch_on_gpu", "classify", "classify_stream"} <= set(wrapped)
    # Durations grow with the answer's length: 2048 new tokens of an 8B model do not fit the default 60 s.
    long_answer = wrapped["analyze_on_gpu"]("q", "", None, "", 2048, 0.0)
    assert long_answer > 60 and long_answer > wrapped["analyze_on_gpu"]("q", "", None, "", 64, 0.0)
    assert wrapped["classify"] == long_answer  # the default guard answers up to 2048 tokens
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"prompt": "q{i}"}}\n' for i in range(40)))
    assert wrapped["run_batch_on_gpu"](str(rows), None, "", 512, 0.0) > wrapped["analyze_on_gpu"](
        "q", "", None, "", 512, 0.0)

    functions = {block.fn.__name__: block.fn for block in demo.fns.values() if block.fn is not None}
    # Switching to a model not loaded yet loads it outside the GPU call.
    updates = list(functions["analyze"](HARMFUL_REQUEST, "", str(tiny_model_dir), "", 8, 0.0))
    assert updates and loads == [False, False]  # the start-up model, then the switched-to one


def test_the_pool_shuts_a_vllm_engine_down_before_another_local_model_loads(monkeypatch):
    """vLLM refuses a second engine while the first holds its share of the GPU (see test_backends)."""
    import app

    closed = []

    class Loaded:
        def __init__(self, model):
            self.model = model
            self.backend = types.SimpleNamespace(name="openai" if model.startswith("http") else "vllm")

        def close(self):
            closed.append(self.model)

    monkeypatch.setattr(app, "load_guard", lambda model, **options: Loaded(model))
    pool = app.GuardPool("/models/a")
    first = pool.get()
    pool.get(app.ENDPOINT_CHOICE, "http://127.0.0.1:8000/v1")
    assert closed == []  # an endpoint takes no GPU memory here
    pool.get("/models/b")
    assert closed == ["/models/a"]
    assert pool.get() is not first  # switching back loads it again
    assert closed == ["/models/a", "/models/b"]
