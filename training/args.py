"""The command-line names the training stages share: one dataset flag (``--dataset_name``, TRL's name, taking a
hub id or a local file) and the flag names earlier versions took, still read with a one-line note. The model
options are TRL's own (``training.model_args``)."""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)

DATASET_HELP = "a hub dataset id or a local .json/.jsonl file"

# Earlier versions' flags -> today's. Kept so that old commands and scripts still run.
DEPRECATED_FLAGS = {"--dataset": "--dataset_name", "--dataset_path": "--dataset_name", "--use_lora": "--use_peft"}


def modern_flags(argv: list[str] | None) -> list[str]:
    """The arguments (``sys.argv[1:]`` when None) with deprecated flag names replaced, each noted once."""
    argv = list(sys.argv[1:] if argv is None else argv)
    for index, arg in enumerate(argv):
        name, equals, value = arg.partition("=")
        if name in DEPRECATED_FLAGS:
            logger.warning("%s is deprecated; use %s", name, DEPRECATED_FLAGS[name])
            argv[index] = DEPRECATED_FLAGS[name] + equals + value
    return argv
