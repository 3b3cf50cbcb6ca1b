"""Shared fixtures: offline environment, ../shared data, and tiny Llama models with a real tokenizer."""

from __future__ import annotations

import os

for _name, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}.items():
    os.environ.setdefault(_name, _value)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from tests import tiny_models  # noqa: E402

SHARED = Path(os.environ.get("GUARDREASONER_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "README.md").is_file():
        pytest.skip(f"the shared test data is not at {SHARED} (set GUARDREASONER_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    return tiny_models.save_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A randomly initialised two-layer Llama: exercises the plumbing, writes nonsense."""
    return tiny_models.random_llama(tmp_path_factory.mktemp("tiny"), tokenizer_dir)


@pytest.fixture(scope="session")
def taught_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny Llama trained for a few seconds to answer two fixed requests in the GuardReasoner format.

    GUARDREASONER_TEST_CACHE (a folder) keeps it between runs on a busy machine; CI leaves it unset."""
    cache = os.environ.get("GUARDREASONER_TEST_CACHE")
    if cache and (Path(cache) / "taught" / "config.json").is_file():
        return Path(cache) / "taught"
    folder = tiny_models.taught_llama(tmp_path_factory.mktemp("taught"), tokenizer_dir)
    if cache:
        import shutil

        shutil.copytree(folder, Path(cache) / "taught")
    return folder


@pytest.fixture(scope="session")
def teacher_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny chat model taught to answer two synthesis prompts with reasoning traces (a stand-in teacher)."""
    return tiny_models.teacher_llama(tmp_path_factory.mktemp("teacher"), tokenizer_dir)


@pytest.fixture(scope="session")
def teacher_url(teacher_model_dir):
    """The teacher behind the tests' OpenAI-compatible server on 127.0.0.1, as synthesis would reach a real one."""
    from guardreasoner.backends.transformers_backend import TransformersBackend
    from tests.openai_server import openai_app
    from tests.servers import running

    with running(openai_app(TransformersBackend(str(teacher_model_dir), mode="chat"), "teacher")) as url:
        yield url + "/v1"


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory):
    """One cache folder for the embedded model's conversion (about 30 s), shared by the tests that load it."""
    folder = tmp_path_factory.mktemp("embedded-cache")
    previous = os.environ.get("GUARDREASONER_CACHE")
    os.environ["GUARDREASONER_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("GUARDREASONER_CACHE", None)
    else:
        os.environ["GUARDREASONER_CACHE"] = previous
