"""Runs in progress, one per browser session, so that Stop can end a run gently.

Gradio's ``cancels=`` kills the event: every output then shows an error badge and what streamed so far is lost.
Instead Stop sets the session's event; the guard's stream ends at the next token, and the run itself shows
"stopped" with the partial reasoning and the verdicts already settled.
"""

from __future__ import annotations

import threading


class StopSignals:
    def __init__(self):
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, session: str) -> threading.Event:
        """A fresh stop event for this session's new run (a Stop from an earlier run does not carry over)."""
        with self._lock:
            self._events[session] = event = threading.Event()
            return event

    def stop(self, session: str) -> bool:
        """Ask this session's run to stop; False when it has none."""
        with self._lock:
            event = self._events.get(session)
        if event is None:
            return False
        event.set()
        return True

    def finish(self, session: str, event: threading.Event) -> None:
        with self._lock:
            if self._events.get(session) is event:
                del self._events[session]
