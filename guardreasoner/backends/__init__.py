"""Generation backends: CTranslate2 (fast CPU), transformers, vLLM (GPU, optional) and any OpenAI-compatible server."""

from .base import Backend, Generation, SamplingConfig, StreamChunk

__all__ = ["Backend", "Generation", "SamplingConfig", "StreamChunk"]
