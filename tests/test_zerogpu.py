"""The app on a ZeroGPU Space, with a stand-in ``spaces`` package that records what ``spaces.GPU`` wraps.

Hugging Face's ZeroGPU docs: the GPU is lent only inside functions decorated with ``spaces.GPU`` (default 60 s,
``duration=`` a number or a callable taking the function's inputs); models load at start-up, outside them.

Like the real package (spaces 0.51.3, ``spaces/zero/wrappers.py``, ``generator_function_wrapper``), the stand-in
runs a decorated generator in a forked worker process: each yielded value comes back pickled through a queue;
when the caller closes the generator (``GeneratorExit`` at its yield), the wrapper sets the worker's stop event,
and the worker closes the task's generator after its next item. State the app keeps in its own process (such as
a Stop button's event) is a copy in the worker, frozen at the fork."""

import functools
import importlib
import inspect
import multiprocessing
import sys
import threading
import time
import types

import pytest

from tests.tiny_models import HARMFUL_REQUEST


def run_in_worker(function, args, kwargs, workers):
    context = multiprocessing.get_context("fork")
    # A pipe written synchronously (spaces uses its own SimpleQueue): nothing is lost when the worker exits.
    results, stop_event = context.SimpleQueue(), context.Event()

    def iterate():
        generator = function(*args, **kwargs)
        try:
            for value in generator:
                if stop_event.is_set():
                    generator.close()
                    break
                results.put(("ok", value))
        except BaseException as error:  # noqa: BLE001 (sent to the caller, as spaces does; never a silent hang)
            results.put(("error", repr(error)))
        results.put(("end", None))

    worker = context.Process(target=iterate, daemon=True)
    worker.start()
    workers.append(worker)
    while True:
        kind, value = results.get()
        if kind == "end":
            return
        if kind == "error":
            raise RuntimeError(f"ZeroGPU worker error: {value}")
        try:
            yield value
        except GeneratorExit:
            stop_event.set()
            # Keep reading what the worker still sends, so that it never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in iter(results.get, ("end", None))], daemon=True).start()
            raise


@pytest.fixture
def zerogpu_app(monkeypatch):
    state = {"wrapped": {}, "inside": False, "workers": []}

    def gpu(duration=60):
        def decorate(function):
            state["wrapped"][function.__name__] = duration

            @functools.wraps(function)  # gr.api reads the signature
            def call(*args, **kwargs):
                state["inside"] = True
                try:
                    return function(*args, **kwargs)
                finally:
                    state["inside"] = False

            @functools.wraps(function)
            def call_generator(*args, **kwargs):
                yield from run_in_worker(function, args, kwargs, state["workers"])

            return call_generator if inspect.isgeneratorfunction(function) else call

        return decorate

    fake = types.ModuleType("spaces")
    fake.GPU = gpu
    # A ZeroGPU Space has CUDA, so `auto` generates with transformers there (here on CPU), not CTranslate2.
    from guardreasoner.backends import ctranslate2_backend

    monkeypatch.setattr(ctranslate2_backend, "ctranslate2_available", lambda: False)
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


def test_stop_reaches_a_generation_running_in_the_zerogpu_worker(zerogpu_app, taught_model_dir, tmp_path,
                                                                monkeypatch):
    """On ZeroGPU the answer is generated in a forked worker: a Stop event set in the app's process never reaches
    it there. The app must stop it through the wrapper (closing the GPU generator), and show "stopped"."""
    from guardreasoner.backends.transformers_backend import TransformersBackend

    app, state = zerogpu_app
    # Each piece of the answer 50 ms apart, and written to a file: the worker's memory is not ours to read.
    pieces = tmp_path / "pieces.txt"

    def slow_stream(self, prompt, sampling, stop=None, original=TransformersBackend.stream):
        for chunk in original(self, prompt, sampling, stop=stop):
            with pieces.open("a") as record:
                record.write("piece\n")
            time.sleep(0.05)
            yield chunk

    monkeypatch.setattr(TransformersBackend, "stream", slow_stream)
    demo = app.build_app(str(taught_model_dir))
    functions = {block.fn.__name__: block.fn for block in demo.fns.values() if block.fn is not None}
    request = types.SimpleNamespace(session_hash="visitor")
    frames = functions["analyze"](HARMFUL_REQUEST, "", None, "", 512, 0.0, "full", request)
    for _ in range(4):
        next(frames)
    functions["stop_run"](request)
    rest = list(frames)
    assert 'data-state="stopped"' in rest[-1][6]  # the run's status
    (worker,) = state["workers"]
    worker.join(timeout=10)
    assert not worker.is_alive(), "the worker kept generating after Stop"
    made = len(pieces.read_text().splitlines())
    assert made < 40, f"the worker made {made} pieces of a ~120-token answer: the stop did not reach it"
