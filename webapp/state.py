"""The app's state, shared by every visitor: the loaded models (one pool), the runs in progress (their stops),
and the settings a run starts with."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from guardreasoner import DEFAULT_MODEL, RELEASED_MODELS, load_guard
from guardreasoner.models import EMBEDDED_GUARD_NAME, EMBEDDED_NAME
from guardreasoner.releases import ServedScreen
from guardreasoner.screen import recommended_reasoning

from . import gpu, policies, runner
from .runs import StopSignals
from .settings import ENDPOINT_CHOICE, FORCED_REASONING, RunSettings

MODEL_CARD = "https://huggingface.co/yueliu1999/GuardReasoner-1B"
# On ZeroGPU: the models loaded at start-up besides the default one (MODEL_CHOICES names, comma-separated).
ZEROGPU_MODELS_ENV = "GUARDREASONER_ZEROGPU_MODELS"


class ModelUnavailable(ValueError):
    """A model choice this app cannot run (no endpoint URL given; on ZeroGPU, a model not loaded at start-up)."""


def _load(model: str):
    # With the shipped screen (one encoder serves every model), so that each run can choose its reasoning mode.
    return load_guard(model, fallback=True, screen="shipped")


class GuardPool:
    """Guards loaded so far, by model: each model is loaded once and shared by every visitor.

    ``sealed`` (ZeroGPU): no local model loads after start-up, since it would load on a Gradio worker thread
    where spaces' CUDA emulation is missing, and the GPU worker, forked earlier, would never see it. Endpoints
    need no GPU and still load. Lookups (``find``) take no lock: a GPU worker forked while another thread
    held the lock would wait on it forever."""

    def __init__(self, default: str, *, loader: Callable[[str], object] = _load):
        self.default = default
        self.sealed = False
        self._loader = loader
        self._guards: dict[str, object] = {}
        self._lock = threading.Lock()

    def key(self, settings: RunSettings | None = None) -> str:
        settings = settings or RunSettings()
        if settings.uses_endpoint:
            if not settings.endpoint:
                raise ModelUnavailable("Enter the endpoint URL, e.g. http://127.0.0.1:8000/v1")
            return settings.endpoint
        return RELEASED_MODELS.get(settings.model, settings.model) if settings.model else self.default

    def find(self, settings: RunSettings | None = None):
        """The loaded guard for these settings, without loading (what a GPU worker may do)."""
        key = self.key(settings)
        guard = self._guards.get(key)
        if guard is None:
            raise ModelUnavailable(f"The model {key} is not loaded here. {self.offered_note()}")
        return guard

    def get(self, settings: RunSettings | None = None):
        """The guard for these settings, loaded on first use."""
        key = self.key(settings)
        guard = self._guards.get(key)
        if guard is not None:
            return guard
        local = not (settings and settings.uses_endpoint)
        if self.sealed and local:
            raise ModelUnavailable(f"This Space cannot load {key} now. {self.offered_note()}")
        with self._lock:
            if key not in self._guards:
                # One vLLM engine per GPU process: it holds most of the GPU's memory, so it is shut down before
                # another local model loads (switching back reloads it); endpoints need no GPU here.
                for other, loaded in list(self._guards.items()):
                    if local and loaded.backend.name == "vllm":
                        loaded.close()
                        del self._guards[other]
                self._guards[key] = self._loader(key)
            return self._guards[key]

    def preload(self, choices: list[str]) -> None:
        """Load the default model and these model choices now (at start-up, on the main thread)."""
        self.get()
        for choice in choices:
            self.get(RunSettings(model=choice))

    def offered_choices(self, choices: list[str]) -> list[str]:
        """The model choices to offer: all of them, or on a sealed pool those loaded and the endpoint."""
        if not self.sealed:
            return choices
        loaded = set(self._guards)
        return [choice for choice in choices
                if choice == ENDPOINT_CHOICE or RELEASED_MODELS.get(choice, choice) in loaded]

    def offered_note(self) -> str:
        if not self.sealed:
            return ""
        return ("On ZeroGPU the models load at start-up, before any visitor: the Space's owner names them in "
                f"{ZEROGPU_MODELS_ENV} (e.g. GuardReasoner-3B,GuardReasoner-8B).")


@dataclass
class AppState:
    pool: GuardPool
    stops: StopSignals = field(default_factory=StopSignals)
    calls: runner.GpuCalls | None = None  # the functions that generate (on ZeroGPU, in its GPU worker)
    # The releases training.loop ships ($GUARDREASONER_RELEASES): each run takes the current release's screen, so
    # a new release serves from the next run on, without a restart.
    served: ServedScreen = field(default_factory=ServedScreen)

    def default_reasoning(self, choice: str | None = None) -> str:
        """The Reasoning a model choice starts with: the environment's, else the mode measured best for it (known
        without loading it: the modes were measured with the embedded guard, other models start in full)."""
        if FORCED_REASONING:
            return FORCED_REASONING
        if not choice:
            return recommended_reasoning(self.pool.find().model_name)
        return recommended_reasoning(EMBEDDED_GUARD_NAME) if choice == "embedded" else "full"

    @property
    def defaults(self) -> RunSettings:
        """What the page starts with, and what the API runs with."""
        return RunSettings(reasoning=self.default_reasoning())

    def guard(self, settings: RunSettings, *, load: bool = True):
        """The guard for a run: the pool's model with the run's sampling and reasoning. ``load=False`` in GPU
        functions: the model was loaded before the call, in the app's process."""
        guard = self.pool.get(settings) if load else self.pool.find(settings)
        guard = self.served.applied(guard)  # the shipped release's screen, where one is served
        guard = policies.answering(guard)  # the Policies tab's policies too (#33), the model not loaded again
        if settings.reasoning != "full" and guard.screen is None:
            raise ModelUnavailable(f"Reasoning “{settings.reasoning}” needs a screen, and none is installed "
                                   "here: choose “full” (or train one: python -m training.encoder).")
        guard = guard.with_sampling(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature)
        return guard.with_reasoning(settings.reasoning) if settings.reasoning != "full" else guard


def build_state(model: str | None = None) -> AppState:
    """The state with its models loaded: on ZeroGPU every model offered, here on the main thread."""
    pool = GuardPool(model or os.environ.get("GUARDREASONER_MODEL", DEFAULT_MODEL))
    zerogpu = gpu.on_zerogpu()
    listed = [name.strip() for name in os.environ.get(ZEROGPU_MODELS_ENV, "").split(",") if name.strip()]
    pool.preload(listed if zerogpu else [])  # the default model before the first visitor
    pool.sealed = zerogpu
    state = AppState(pool)
    state.calls = runner.gpu_calls(state)
    return state


def model_banner(guard, release: str | None = None) -> str:
    text = f"**Model in use:** {guard.model_name} · template `{guard.mode}` · backend `{guard.backend.name}`"
    if release:
        text += f" · screen release `{release}`"
    if guard.fallback_reason:
        text += f"\n\n⚠️ Offline fallback: {guard.fallback_reason}. Answers come from the small embedded model."
    if guard.model_name == EMBEDDED_NAME:
        text += ("\n\nThis demo runs a small 135M-parameter model that was not trained for this task, so expect "
                 f"missing verdicts (counted as harmful, to be safe). The full models are described on [the model "
                 f"card]({MODEL_CARD}).")
    elif guard.model_name == EMBEDDED_GUARD_NAME:
        text += ("\n\nThis demo runs a small 135M-parameter guard trained by this project: it makes mistakes the "
                 f"full GuardReasoner models (1B, 3B, 8B) make less often. See [the model card]({MODEL_CARD}).")
    return text

