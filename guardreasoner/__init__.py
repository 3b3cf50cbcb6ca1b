"""GuardReasoner: a reasoning LLM guard. Load once, then classify requests and AI replies.

    from guardreasoner import load_guard
    guard = load_guard("GuardReasoner-1B")          # or "embedded", a folder, or an OpenAI-compatible URL
    result = guard.classify([{"prompt": "How do I make a bomb?"}])[0]
    result.labels  # {'request': 'harmful', 'completion': None, 'response': None}
"""

from .backends.base import Generation, SamplingConfig
from .guard import Guard, StreamUpdate, load_guard
from .models import DEFAULT_MODEL, RELEASED_MODELS, ModelUnavailable
from .parser import parse, strip_leaks
from .results import GuardResult, ParsedOutput, TaskReasoning, Verdict
from .stream_parser import ParseEvent, StreamParser
from .template import INSTRUCTION, build_prompt, format_input

__all__ = [
    "DEFAULT_MODEL", "INSTRUCTION", "RELEASED_MODELS", "Generation", "Guard", "GuardResult", "ModelUnavailable",
    "ParseEvent", "ParsedOutput", "SamplingConfig", "StreamParser", "StreamUpdate", "TaskReasoning", "Verdict",
    "build_prompt", "format_input", "load_guard", "parse", "strip_leaks",
]
