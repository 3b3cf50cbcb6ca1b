"""The CPU backends fix glibc's mmap threshold (so a long generation's cache does not fragment the heap), unless
the user set one. Run in fresh interpreters: the setting is per process."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")

CHECK = "from guardreasoner.backends.heap import bound_heap_growth as b; print(b(), b())"


def run(env):
    done = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_the_threshold_is_fixed_once_and_a_users_own_setting_wins():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    assert run(env) == ["True", "False"]  # set, then not again
    assert run({**env, "MALLOC_MMAP_THRESHOLD_": "4294967296"}) == ["False", "False"]  # the training scripts' value
