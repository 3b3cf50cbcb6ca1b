"""The app on a ZeroGPU Space, with a stand-in ``spaces`` package that behaves like the real one where the app
depends on it (spaces 0.51.3):

- ``spaces.GPU`` runs the decorated function, generator or not, in a forked worker process (``spaces/zero/
  wrappers.py``); the worker is forked at the first call and reused for the later ones, so its copy of the app's
  memory is the one at that first call (a model loaded later is not in it, a lock another thread held then is
  held there for good). Arguments go to the worker and each value comes back pickled; when the caller closes a
  generator, the wrapper sets the worker's stop event and the worker closes the task's generator after its next
  item.
- ``torch.cuda.is_available()`` is True everywhere, but the CUDA emulation is entered on the thread that
  imported spaces only (``spaces/zero/torch/patching.py``): a model moved to "cuda" on another thread of the
  app's process fails. Here "cuda" stands for the CPU: a move on the importing thread or in the worker leaves
  the model where it is.

Hugging Face's ZeroGPU docs: the GPU is lent only inside functions decorated with ``spaces.GPU`` (default 60 s,
``duration=`` a number or a callable taking the function's inputs); models load at start-up, outside them."""

import functools
import importlib
import inspect
import json
import multiprocessing
import os
import sys
import threading
import time
import types

import gradio as gr
import pytest

from tests.tiny_models import HARMFUL_REQUEST, SAFE_REQUEST

CUDA_OFF_THREAD = "Low-level CUDA init reached outside the thread that imported spaces"


class Worker:
    """One forked worker per GPU function, forked at its first call and reused (as spaces does)."""

    def __init__(self, function, log):
        context = multiprocessing.get_context("fork")
        # Pipes written synchronously (spaces uses its own SimpleQueue): nothing is lost when the worker exits.
        self.tasks, self.results, self.stop_event = context.SimpleQueue(), context.SimpleQueue(), context.Event()
        self.process = context.Process(target=self.serve, args=(function,), daemon=True)
        self.process.start()
        self.busy = threading.Lock()  # one task at a time; a closed generator's leftovers are drained first
        log.append(self.process)

    def serve(self, function):
        while True:
            args, kwargs = self.tasks.get()
            try:
                if inspect.isgeneratorfunction(function):
                    generator = function(*args, **kwargs)
                    for value in generator:
                        if self.stop_event.is_set():
                            generator.close()
                            break
                        self.results.put(("ok", value))
                else:
                    self.results.put(("ok", function(*args, **kwargs)))
            except BaseException as error:  # noqa: BLE001 (sent to the caller, as spaces does; never a silent hang)
                self.results.put(("error", repr(error)))
            self.results.put(("end", None))

    def run(self, args, kwargs):
        self.busy.acquire()
        self.stop_event.clear()
        self.tasks.put((args, kwargs))
        while True:
            kind, value = self.results.get()
            if kind == "end":
                self.busy.release()
                return
            if kind == "error":
                self.drain()
                raise RuntimeError(f"ZeroGPU worker error: {value}")
            try:
                yield value
            except GeneratorExit:
                self.stop_event.set()
                # Keep reading what the worker still sends, so that it never blocks on a full pipe.
                threading.Thread(target=self.drain, daemon=True).start()
                raise

    def drain(self):
        for _ in iter(self.results.get, ("end", None)):
            pass
        self.busy.release()


def emulate_cuda(monkeypatch):
    """torch.cuda.is_available() True everywhere; a move to "cuda" allowed on this thread or in a worker only."""
    import torch

    importing_thread, app_process = threading.current_thread(), os.getpid()
    move = torch.nn.Module.to

    def to(self, *args, **kwargs):
        device = args[0] if args else kwargs.get("device")
        if str(device).startswith("cuda"):
            if os.getpid() == app_process and threading.current_thread() is not importing_thread:
                raise RuntimeError(CUDA_OFF_THREAD)
            return self
        return move(self, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.nn.Module, "to", to)


@pytest.fixture
def zerogpu(monkeypatch):
    """The app's modules imported with the stand-in spaces; what spaces.GPU wrapped, and each call's duration."""
    seen = {"durations": {}, "calls": [], "workers": [], "abort_call": None}

    def gpu(duration=60):
        def decorate(function):
            seen["durations"][function.__name__] = duration
            worker = None

            @functools.wraps(function)
            def call(*args, **kwargs):
                nonlocal worker
                asked = duration(*args, **kwargs) if callable(duration) else duration
                seen["calls"].append((function.__name__, asked))
                if len(seen["calls"]) == seen["abort_call"]:
                    raise gr.Error("GPU task aborted")  # what spaces raises when a call outlives its duration
                if worker is None:
                    worker = Worker(function, seen["workers"])
                results = worker.run(args, kwargs)
                if inspect.isgeneratorfunction(function):
                    return results
                (value,) = list(results)
                return value

            if inspect.isgeneratorfunction(function):
                @functools.wraps(function)
                def call_generator(*args, **kwargs):
                    yield from call(*args, **kwargs)

                return call_generator
            return call

        return decorate

    fake = types.ModuleType("spaces")
    fake.GPU = gpu
    fake.config = types.SimpleNamespace(Config=types.SimpleNamespace(zero_gpu=True))
    emulate_cuda(monkeypatch)
    monkeypatch.setitem(sys.modules, "spaces", fake)
    forget_app_modules()
    modules = types.SimpleNamespace(state=importlib.import_module("webapp.state"),
                                    handlers=importlib.import_module("webapp.handlers"),
                                    gpu=importlib.import_module("webapp.gpu"),
                                    settings=importlib.import_module("webapp.settings"))
    yield modules, seen
    forget_app_modules()  # other tests import the app without spaces


def forget_app_modules():
    """So that the app's modules are imported again, with or without the stand-in (``from . import gpu`` reads
    the package's attribute when there is one, so that goes too)."""
    import webapp

    for name in ("gpu", "runner", "state", "handlers", "layout"):
        sys.modules.pop(f"webapp.{name}", None)
        if hasattr(webapp, name):
            delattr(webapp, name)
    sys.modules.pop("app", None)


def in_a_thread(function, timeout=120):
    """Run ``function`` as Gradio runs a handler, on a worker thread; its value, or what it raised."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as error:  # noqa: BLE001 (handed to the test)
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_every_generating_function_runs_under_spaces_gpu_sized_from_what_it_runs(zerogpu, taught_model_dir):
    modules, seen = zerogpu
    RunSettings = modules.settings.RunSettings
    state = modules.state.build_state(str(taught_model_dir))
    durations = seen["durations"]
    assert {"stream", "classify", "batch"} <= set(durations)
    # Durations grow with the answer's length: 2048 new tokens of an 8B model do not fit the default 60 s.
    long_answer = durations["stream"]("q", "", RunSettings(max_new_tokens=2048))
    assert long_answer > 60 and long_answer > durations["stream"]("q", "", RunSettings(max_new_tokens=64))
    # The API runs with the page's defaults, so it asks for the same time as the page's first run.
    assert durations["classify"]("q", "", state.defaults) == durations["stream"]("q", "", state.defaults)
    # Rows are generated one after another: a chunk asks for each of its rows' time, never past the maximum.
    per_row = 512 / modules.gpu.GPU_TOKENS_PER_SECOND
    rows = modules.gpu.rows_per_call(512)
    assert durations["batch"]([None] * rows, RunSettings(max_new_tokens=512)) >= rows * per_row
    for tokens in range(32, 2049, 32):
        assert durations["batch"]([None] * modules.gpu.rows_per_call(tokens), RunSettings(max_new_tokens=tokens)) \
            <= modules.gpu.GPU_SECONDS_MAX


def test_every_model_offered_on_zerogpu_loads_at_start_up_and_the_others_are_refused_with_a_message(
        zerogpu, taught_model_dir, tiny_model_dir, tmp_path, monkeypatch):
    """Loading in a handler (a Gradio worker thread) moved the model to "cuda" off the emulated thread, and the
    GPU worker, forked before, never saw it. Offered models load at start-up; others are refused with words."""
    modules, seen = zerogpu
    RunSettings = modules.settings.RunSettings
    monkeypatch.setenv("GUARDREASONER_ZEROGPU_MODELS", str(tiny_model_dir))
    state = modules.state.build_state(str(taught_model_dir))
    first = list(in_a_thread(lambda: list(modules.handlers.analyze(state, HARMFUL_REQUEST, "", state.defaults))))
    assert 'data-state="done"' in first[-1][6]  # the worker is forked now, with both models in its copy
    switched = RunSettings(model=str(tiny_model_dir), max_new_tokens=8)
    frames = in_a_thread(lambda: list(modules.handlers.analyze(state, SAFE_REQUEST, "", switched)))
    result = frames[-1][9]
    assert result["model"] == str(tiny_model_dir) and result["output_tokens"] <= 8
    offered = state.pool.offered_choices(modules.settings.MODEL_CHOICES)
    assert offered == [modules.settings.ENDPOINT_CHOICE]  # neither released model nor embedded was loaded
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(gr.Error, match="GUARDREASONER_ZEROGPU_MODELS"):
        in_a_thread(lambda: list(modules.handlers.analyze(state, SAFE_REQUEST, "", RunSettings(model=str(other)))))


def test_a_pool_lock_held_when_the_gpu_worker_forks_does_not_hang_classify(zerogpu, taught_model_dir):
    """The worker is forked while another thread holds the pool's lock (e.g. loading an endpoint): the worker's
    copy of the lock stays held, so a lookup that takes it would wait for ever."""
    modules, seen = zerogpu
    state = modules.state.build_state(str(taught_model_dir))
    holding, release = threading.Event(), threading.Event()

    def hold():
        with state.pool._lock:
            holding.set()
            release.wait(60)

    threading.Thread(target=hold, daemon=True).start()
    holding.wait(10)
    try:
        result = in_a_thread(lambda: modules.handlers.classify(state, HARMFUL_REQUEST), timeout=60)
    finally:
        release.set()
    assert result["labels"]["prompt_harmfulness"] == "harmful" and seen["workers"], seen


def rows_file(tmp_path, count):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"prompt": [HARMFUL_REQUEST, SAFE_REQUEST][i % 2]}) + "\n"
                            for i in range(count)) + "not json\n")
    return path


def test_a_batch_runs_in_chunks_that_each_fit_the_gpu_maximum_and_keeps_the_results(zerogpu, taught_model_dir,
                                                                                   tmp_path, monkeypatch):
    modules, seen = zerogpu
    RunSettings = modules.settings.RunSettings
    # Two 64-token rows fit one call of at most 36 s (30 s to start, 2.56 s a row).
    monkeypatch.setattr(modules.gpu, "GPU_SECONDS_MAX", 36)
    state = modules.state.build_state(str(taught_model_dir))
    settings = RunSettings(max_new_tokens=64)
    frames = in_a_thread(lambda: list(modules.handlers.run_batch(state, str(rows_file(tmp_path, 5)), settings)))
    calls = [asked for name, asked in seen["calls"] if name == "batch"]
    assert calls == [35, 35, 32]  # 2 + 2 + 1 rows, each call within the maximum
    assert frames[0][3].startswith("Checking… 0 of 5 rows done.") and "1 rows could not be read" in frames[0][3]
    table, files, _, message, _ = frames[-1]
    # The table is an update: its headers follow the policies the rows were answered for (#33).
    assert message.startswith("5 rows checked.") and [row[0] for row in table["value"]["data"]] == [1, 2, 3, 4, 5]
    jsonl = next(path for path in files["value"] if path.endswith(".jsonl"))
    assert [json.loads(line)["labels"]["prompt_harmfulness"] for line in open(jsonl)] == \
        ["harmful", "unharmful", "harmful", "unharmful", "harmful"]
    assert len(seen["workers"]) == 1  # one worker, reused by the three chunks


def test_an_aborted_chunk_keeps_the_rows_done_and_offers_their_download(zerogpu, taught_model_dir, tmp_path,
                                                                       monkeypatch):
    modules, seen = zerogpu
    monkeypatch.setattr(modules.gpu, "GPU_SECONDS_MAX", 36)
    state = modules.state.build_state(str(taught_model_dir))
    seen["abort_call"] = 2  # the second chunk is aborted by the scheduler
    settings = modules.settings.RunSettings(max_new_tokens=64)
    frames = in_a_thread(lambda: list(modules.handlers.run_batch(state, str(rows_file(tmp_path, 5)), settings)))
    table, files, _, message, stop_button = frames[-1]
    assert message.startswith("Stopped after 2 of 5 rows: GPU task aborted; the rows checked so far are ready")
    assert [row[0] for row in table["value"]["data"]] == [1, 2] and files["visible"]
    csv_file = next(path for path in files["value"] if path.endswith(".csv"))
    assert len(open(csv_file).read().splitlines()) == 3  # the header and the two rows done
    assert stop_button["interactive"] is False


def test_the_pool_shuts_a_vllm_engine_down_before_another_local_model_loads():
    """vLLM refuses a second engine while the first holds its share of the GPU (see test_backends)."""
    from webapp.settings import ENDPOINT_CHOICE, RunSettings
    from webapp.state import GuardPool

    closed = []

    class Loaded:
        def __init__(self, model):
            self.model = model
            self.backend = types.SimpleNamespace(name="openai" if model.startswith("http") else "vllm")

        def close(self):
            closed.append(self.model)

    pool = GuardPool("/models/a", loader=Loaded)
    first = pool.get()
    pool.get(RunSettings(model=ENDPOINT_CHOICE, endpoint="http://127.0.0.1:8000/v1"))
    assert closed == []  # an endpoint takes no GPU memory here
    pool.get(RunSettings(model="/models/b"))
    assert closed == ["/models/a"]
    assert pool.get() is not first  # switching back loads it again
    assert closed == ["/models/a", "/models/b"]


def test_stop_reaches_a_generation_running_in_the_zerogpu_worker(zerogpu, taught_model_dir, tmp_path, monkeypatch):
    """On ZeroGPU the answer is generated in a forked worker: a Stop event set in the app's process never reaches
    it there. The app must stop it through the wrapper (closing the GPU generator), and show "stopped"."""
    from guardreasoner.backends.transformers_backend import TransformersBackend

    modules, seen = zerogpu
    # Each piece of the answer 50 ms apart, and written to a file: the worker's memory is not ours to read.
    pieces = tmp_path / "pieces.txt"

    def slow_stream(self, prompt, sampling, stop=None, original=TransformersBackend.stream):
        for chunk in original(self, prompt, sampling, stop=stop):
            with pieces.open("a") as record:
                record.write("piece\n")
            time.sleep(0.05)
            yield chunk

    monkeypatch.setattr(TransformersBackend, "stream", slow_stream)
    state = modules.state.build_state(str(taught_model_dir))
    settings = modules.settings.RunSettings(max_new_tokens=512)
    frames = modules.handlers.analyze(state, HARMFUL_REQUEST, "", settings, "visitor")
    for _ in range(4):
        next(frames)
    modules.handlers.stop(state, "visitor")
    rest = list(frames)
    assert 'data-state="stopped"' in rest[-1][6]  # the run's status
    time.sleep(2)
    made = len(pieces.read_text().splitlines())
    time.sleep(1)
    assert len(pieces.read_text().splitlines()) == made, "the worker kept generating after Stop"
    assert made < 40, f"the worker made {made} pieces of a ~120-token answer: the stop did not reach it"
