"""What policies add to classification: the embedded guard in its default mode (reasoning off: the encoder alone)
with no policy and with five (the two example policies of docs/policies, fitted here, and three more fitted on
the same examples under other names), side by side in one run, alternating, on the same items.

    .venv/bin/python -m benchmarks.policy_overhead [--rounds 5]

Prints per setting the median over rounds of: ms per item in batches of 16, and ms per single-item call; and the
overhead of five policies. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from guardreasoner import load_guard
from guardreasoner.policy import fit_policy, read_examples, save_policy
from guardreasoner.screen import load_screen, shipped_screen_folder

EXAMPLES = Path("docs/policies")


def five_policies(folder: Path) -> list[str]:
    encoder = load_screen(shipped_screen_folder())
    made = []
    for index in range(5):
        source = ("medical-self-treatment", "investment-advice")[index % 2]
        examples, description = read_examples(EXAMPLES / source / "examples.csv")
        policy = fit_policy(f"{source}-{index}", examples, encoder, description=description)
        made.append(str(save_policy(policy, folder / policy.name)))
    return made


def timed(guard, items: list[dict], batch: int) -> float:
    began = time.perf_counter()
    for start in range(0, len(items), batch):
        guard.classify(items[start:start + batch])
    return 1000 * (time.perf_counter() - began) / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    items = []
    for source in ("medical-self-treatment", "investment-advice"):
        for name in ("examples.csv", "held_out.csv"):
            items += [{"prompt": e.prompt, "response": e.response}
                      for e in read_examples(EXAMPLES / source / name)[0]]
    with tempfile.TemporaryDirectory() as folder:
        guards = {"no policy": load_guard("embedded", reasoning="off"),
                  "five policies": load_guard("embedded", reasoning="off", policies=five_policies(Path(folder)))}
        assert len(guards["five policies"].classify(items[:1])[0].categories) == 5
        batched = {name: [] for name in guards}
        single = {name: [] for name in guards}
        for name, guard in guards.items():  # warm-up
            timed(guard, items[:32], 16)
        for _ in range(args.rounds):
            for name, guard in guards.items():
                batched[name].append(timed(guard, items, 16))
                single[name].append(timed(guard, items[:64], 1))
    print(f"\n{len(items)} items (docs/policies' examples and held-out rows, {sum(bool(i['response']) for i in items)}"
          f" with a reply); reasoning off; median of {args.rounds} alternating rounds\n")
    print("| setting | ms per item, batches of 16 | ms per single-item call |")
    print("|---|---|---|")
    medians = {name: (statistics.median(batched[name]), statistics.median(single[name])) for name in guards}
    for name, (b, s) in medians.items():
        print(f"| {name} | {b:.2f} | {s:.2f} |")
    base, five = medians["no policy"], medians["five policies"]
    overhead = [100 * (five[i] / base[i] - 1) for i in (0, 1)]
    print(f"| five policies' overhead | {overhead[0]:+.1f}% | {overhead[1]:+.1f}% |")


if __name__ == "__main__":
    main()
