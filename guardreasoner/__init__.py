"""GuardReasoner: a reasoning LLM guard. Load once, then classify requests and AI replies.

    from guardreasoner import load_guard
    guard = load_guard("GuardReasoner-1B")          # or "embedded", a folder, or an OpenAI-compatible URL
    result = guard.classify([{"prompt": "How do I make a bomb?"}])[0]
    result.labels      # {'prompt_harmfulness': 'harmful', 'response_refusal': None, 'response_harmfulness': None}
    result.is_harmful  # True

The verdict vocabulary: VERDICT_KEYS (PROMPT_HARMFULNESS, RESPONSE_REFUSAL, RESPONSE_HARMFULNESS, in the order the
model answers them) and LABELS, each key's two labels, positive first (POSITIVE and NEGATIVE pick one). A
prompt-only item has no reply verdicts (None). Every error the library raises derives from GuardReasonerError.
"""

from .backends.base import Generation, SamplingConfig
from .cascade import Cascade
from .errors import GuardReasonerError
from .guard import Classifier, Guard
from .loading import load_guard
from .models import DEFAULT_MODEL, RELEASED_MODELS, ModelUnavailable
from .parser import parse, strip_leaks
from .results import (
    LABELS,
    NEGATIVE,
    POSITIVE,
    PROMPT_HARMFULNESS,
    RESPONSE_HARMFULNESS,
    RESPONSE_REFUSAL,
    VERDICT_KEYS,
    GuardResult,
    ParsedOutput,
    ParseEvent,
    StreamUpdate,
    TaskReasoning,
    Verdict,
)
from .stream_parser import StreamParser
from .template import INSTRUCTION, build_prompt, format_input

__all__ = [
    "LABELS", "NEGATIVE", "POSITIVE", "PROMPT_HARMFULNESS", "RESPONSE_HARMFULNESS", "RESPONSE_REFUSAL", "VERDICT_KEYS",
    "GuardReasonerError",
    "DEFAULT_MODEL", "INSTRUCTION", "RELEASED_MODELS", "Cascade", "Classifier", "Generation", "Guard", "GuardResult",
    "ModelUnavailable",
    "ParseEvent", "ParsedOutput", "SamplingConfig", "StreamParser", "StreamUpdate", "TaskReasoning", "Verdict",
    "build_prompt", "format_input", "load_guard", "parse", "strip_leaks",
]
