"""Generation backends: transformers (default), vLLM (GPU, optional) and any OpenAI-compatible server."""

from .base import Backend, Generation, SamplingConfig, StreamChunk

__all__ = ["Backend", "Generation", "SamplingConfig", "StreamChunk"]
