"""The one base of the library's own errors, so a caller can catch them all (``except GuardReasonerError``).

Each error class also keeps the built-in base it had (``ValueError``, ``RuntimeError``), so code that catches those
still catches it.
"""


class GuardReasonerError(Exception):
    """An error raised by guardreasoner itself (a model it cannot load, a screen it refuses, a service error...)."""
