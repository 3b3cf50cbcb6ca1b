"""Incremental parsing: report each reasoning step, conclusion and verdict as soon as the text settles it."""

from __future__ import annotations

from .parser import echo_length, find_answers_blocks, parse, reasoning_from_items, reasoning_items, task_heading_starts
from .results import SOURCE_ANSWERS, SOURCE_CONCLUSION, VERDICT_KEYS, ParsedOutput, ParseEvent


class StreamParser:
    """Feed text chunks; get events. Only complete lines are read, so "Request: harm" never reads as a verdict.

    A step or conclusion is reported once the next heading (or an Answers block, or the end) closes it. A
    verdict is reported, marked provisional, as soon as a task's reasoning states it and has ended (its
    conclusion line is written, the next task's heading starts, or the Answers block begins); it is reported
    again, confirmed, when the Answers block states it (or at the end), and whenever its label changes.
    """

    def __init__(self, user_texts: tuple[str, ...] | list[str] = (), has_response: bool | None = None):
        self.user_texts = tuple(t for t in user_texts if t)
        self.has_response = has_response
        self.text = ""
        self._sent_steps = {key: 0 for key in VERDICT_KEYS}
        self._sent_conclusions: set[str] = set()
        self._sent_verdicts: dict[str, tuple] = {}
        self._read_upto = 0

    def feed(self, chunk: str) -> list[ParseEvent]:
        self.text += chunk
        settled = self.text.rfind("\n") + 1
        if settled <= self._read_upto:
            return []
        self._read_upto = settled
        return self._events(self.text[:settled], final=False)[0]

    def finish(self) -> tuple[list[ParseEvent], ParsedOutput]:
        return self._events(self.text, final=True)

    def _events(self, text: str, final: bool) -> tuple[list[ParseEvent], ParsedOutput]:
        events: list[ParseEvent] = []
        items = reasoning_items(text, echo_length(text, list(self.user_texts)))
        if items and not final:
            last = items[-1]
            closed = any(block.start > last.start for block in find_answers_blocks(text))
            if not closed:
                items = items[:-1]  # the newest heading may still be growing
        reasoning = reasoning_from_items(items)
        for key, task in reasoning.items():
            for index in range(self._sent_steps[key], len(task.steps)):
                events.append(ParseEvent("step", key, text=task.steps[index], index=index))
            self._sent_steps[key] = max(self._sent_steps[key], len(task.steps))
            if task.conclusion is not None and key not in self._sent_conclusions:
                self._sent_conclusions.add(key)
                events.append(ParseEvent("conclusion", key, text=task.conclusion))
        parsed = parse(text, user_texts=self.user_texts, has_response=self.has_response)
        ended = set() if final else self._ended_tasks(text)
        for key, verdict in parsed.verdicts.items():
            if verdict.label is None:
                continue
            # Mid-stream, a verdict read from reasoning counts only once the task's reasoning has ended (or
            # its Conclusion states it): a step still being written may yet say otherwise.
            if (not final and verdict.source == SOURCE_CONCLUSION and parsed.reasoning[key].conclusion is None
                    and key not in ended):
                continue
            provisional = not final and verdict.source != SOURCE_ANSWERS
            state = (verdict.label, verdict.source, provisional)
            if self._sent_verdicts.get(key) != state:
                self._sent_verdicts[key] = state
                events.append(ParseEvent("verdict", key, label=verdict.label, source=verdict.source,
                                         provisional=provisional))
        return events, parsed

    def _ended_tasks(self, text: str) -> set[str]:
        """Tasks whose reasoning is over: another task's heading, or an Answers block, follows its last item."""
        echo = echo_length(text, list(self.user_texts))
        last_item = {item.task: item.start for item in reasoning_items(text, echo)}
        # What closes a task: a heading of another task, or an Answers block (task None: closes any task).
        closers = [(task, start) for task, start in task_heading_starts(text, echo)]
        closers += [(None, block.start) for block in find_answers_blocks(text) if block.start >= echo]
        return {key for key, start in last_item.items() if any(at > start and task != key for task, at in closers)}
