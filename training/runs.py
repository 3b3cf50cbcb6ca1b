"""Where an interrupted training run picks up again."""

from __future__ import annotations

from pathlib import Path


def resume_point(args) -> str | None:
    """The checkpoint to resume from: the one asked for, else the newest in ``output_dir`` (so rerunning the
    same command after an interruption continues it), else None for a fresh start."""
    from transformers.trainer_utils import get_last_checkpoint

    if args.resume_from_checkpoint:
        return args.resume_from_checkpoint
    if Path(args.output_dir).is_dir() and not getattr(args, "overwrite_output_dir", False):
        return get_last_checkpoint(args.output_dir)
    return None
