"""What the project's command lines share: an error is one line on stderr and a non-zero exit status (the
traceback only with ``--debug``), and a renamed flag keeps its old name as a deprecated alias."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import GuardReasonerError

ERROR_STATUS = 2
# Errors that mean the input was wrong (a file, a model name, a value): their message is the whole story.
# Anything else is a bug, named by its type, with a pointer to --debug.
BAD_INPUT = (GuardReasonerError, ValueError, OSError, LookupError)


def debug_option() -> argparse.ArgumentParser:
    """A parent parser adding ``--debug``; given to the top parser and each subcommand, so it goes anywhere."""
    parent = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's parser must not reset a --debug given before the subcommand to False.
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, show the full traceback instead of one line")
    return parent


def error_line(error: BaseException) -> str:
    """The one line an error prints: its message, whitespace folded, so a multi-line message stays one line."""
    message = " ".join(str(error).split())
    if isinstance(error, BAD_INPUT) and message:
        return f"error: {message}"
    return f"error: {type(error).__name__}: {message} (run again with --debug for the traceback)"


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``command(args)``'s exit status; an error becomes one line on stderr and status 2, unless ``args.debug``."""
    try:
        return command(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if getattr(args, "debug", False):
            raise
        print(error_line(error), file=sys.stderr)
        return ERROR_STATUS


class RenamedFlag(argparse.Action):
    """A flag whose first option string is its name and whose others are old names: those still work, and say,
    on stderr, which name to use. Use with ``add_argument("--new-name", "--old-name", action=RenamedFlag)``."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string != self.option_strings[0]:
            print(f"warning: {option_string} is deprecated; use {self.option_strings[0]}", file=sys.stderr)
        setattr(namespace, self.dest, values)
