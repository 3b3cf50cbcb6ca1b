"""ZeroGPU: the GPU is lent per call to functions wrapped by ``spaces.GPU``, for at most ``duration`` seconds.

Hugging Face's docs ("Spaces ZeroGPU"): the default duration is 60 s, ``duration=`` may be a number or a
callable taking the function's inputs, and a shorter duration queues sooner. The largest duration a call may ask
for is not in those docs; the ZeroGPU team gives it as 5 minutes ("5 minutes is the maximum time that can be
requested at once", huggingface.co/spaces/zero-gpu-explorers/README/discussions/7), and larger requests are
refused before the function runs ("ZeroGPU illegal duration ... larger than the maximum allowed"). Every call
here asks for what it really runs, and no call asks for more than that maximum: the Batch tab splits a file into
chunks that each fit it (``rows_per_call``).

Two properties of spaces that the app is built around (spaces 0.51.3):
- its CUDA emulation is entered on the thread that imported spaces only (``spaces/zero/torch/patching.py``),
  so a model moved to "cuda" in a Gradio worker thread fails ("Low-level CUDA init reached"): every model the
  Space offers loads at start-up, on the main thread (``state.GuardPool.preload``);
- a GPU function runs in a forked worker that is reused across calls, so its copy of the app's memory is the
  one at the first call: a model loaded later is not there, and a lock held by another thread at that moment
  stays held there forever (the pool's lookups take no lock).
"""

from __future__ import annotations

import os

try:
    import spaces
except ImportError:
    spaces = None

GPU_TOKENS_PER_SECOND = float(os.environ.get("GUARDREASONER_GPU_TOKENS_PER_SECOND", "25"))  # 8B bf16, one stream
GPU_SECONDS_MIN = 30  # start-up of a GPU call (the worker, moving the weights) before the first token
GPU_SECONDS_MAX = int(os.environ.get("GUARDREASONER_GPU_MAX_SECONDS", "300"))


def on_zerogpu() -> bool:
    """Whether GPU functions run on ZeroGPU (spaces installed and its ZeroGPU mode on; spaces is effect-free
    elsewhere, including on the other Space hardware where it is also installed)."""
    if spaces is None:
        return False
    config = getattr(getattr(spaces, "config", None), "Config", None)
    if config is not None and hasattr(config, "zero_gpu"):
        return bool(config.zero_gpu)
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def on_gpu(duration):
    """``spaces.GPU(duration=...)`` where spaces is installed, else the function itself."""
    if spaces is None:
        return lambda function: function
    return spaces.GPU(duration=duration)


def gpu_seconds(max_new_tokens: int, answers: int = 1) -> int:
    """GPU time for ``answers`` answers generated one after another, each of up to ``max_new_tokens``, at a
    conservative speed; never more than a call may ask for."""
    return min(GPU_SECONDS_MAX, int(GPU_SECONDS_MIN + answers * int(max_new_tokens) / GPU_TOKENS_PER_SECOND))


def rows_per_call(max_new_tokens: int) -> int:
    """How many rows, answered one at a time, fit one GPU call of the maximum duration (at least one: a single
    answer longer than that is cut by the scheduler, whatever we ask)."""
    per_row = int(max_new_tokens) / GPU_TOKENS_PER_SECOND
    return max(1, int((GPU_SECONDS_MAX - GPU_SECONDS_MIN) // per_row))
