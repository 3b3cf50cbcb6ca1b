"""How long after a task's reasoning ends does its verdict chip light? Prints figures; asserts nothing.

    .venv/bin/python -m benchmarks.verdict_delay [--model embedded] [--max-new-tokens 512]

For each of the app's four examples the guard streams its answer. A task "ends" when the text first holds
another task's heading or an Answers block after that task's last reasoning item. Printed per task: when it
ended, when its first (provisional) verdict arrived, and when the Answers block confirmed it, all in seconds
from the start of the run; delay = first verdict - task end (negative: a Conclusion line stated it earlier).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main() -> None:
    from guardreasoner import load_guard
    from guardreasoner.parser import echo_length, find_answers_blocks, reasoning_items, task_heading_starts
    from guardreasoner.results import REPLY_VERDICT_KEYS, VERDICT_KEYS
    from webapp.settings import EXAMPLES

    args = argparse.ArgumentParser()
    args.add_argument("--model", default="embedded")
    args.add_argument("--max-new-tokens", type=int, default=512)
    options = args.parse_args()
    guard = load_guard(options.model, max_new_tokens=options.max_new_tokens, fallback=True)
    print(f"model {guard.model_name}, backend {guard.backend.name}")
    print(f"{'example':<10}{'task':<22}{'ended_s':>9}{'chip_s':>9}{'delay_s':>9}{'confirmed_s':>13}  source")
    for number, (prompt, reply) in enumerate(EXAMPLES, 1):
        ended, first, confirmed, source = {}, {}, {}, {}
        for update in guard.stream(prompt, reply or None):
            text = update.text
            echo = echo_length(text, [prompt, reply])
            closers = task_heading_starts(text, echo) + [(None, b.start) for b in find_answers_blocks(text)]
            for item in reasoning_items(text, echo):
                if item.task not in ended and any(at > item.start and task != item.task for task, at in closers):
                    later = [i for i in reasoning_items(text, echo) if i.task == item.task and i.start > item.start]
                    if not later:
                        ended[item.task] = update.elapsed_s
            for event in update.events:
                if event.kind == "verdict":
                    first.setdefault(event.task, update.elapsed_s)
                    source.setdefault(event.task, event.source)
                    if not event.provisional:
                        confirmed.setdefault(event.task, update.elapsed_s)
        for key in VERDICT_KEYS:
            if key in REPLY_VERDICT_KEYS and not reply:
                continue

            def show(value):
                return f"{value:.2f}" if value is not None else "-"

            delay = first[key] - ended[key] if key in first and key in ended else None
            print(f"{number:<10}{key:<22}{show(ended.get(key)):>9}{show(first.get(key)):>9}{show(delay):>9}"
                  f"{show(confirmed.get(key)):>13}  {source.get(key, '-')}")
        print(f"{number:<10}{'(run)':<22}{update.elapsed_s:>9.2f}")


if __name__ == "__main__":
    main()
