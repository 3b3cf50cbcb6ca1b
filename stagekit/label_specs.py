"""How a dataset's columns give a verdict's gold label: one small language, shared by evaluation's hub loaders
and training's seed sources.

A spec is one of:

- ``COLUMN``: the column holds the label itself (``"harmful"``, ``"Refusal"``...; case and spaces ignored);
- ``=LABEL``: every row has this label;
- ``flag:COLUMN``: positive when the column is 1 / True / "1";
- ``not:COLUMN``: positive when the boolean column is false (BeaverTails' ``is_safe``);
- ``any:COL,COL``: positive when any of the columns is 1;
- ``majority:COL,COL``: positive when more than half of the given votes are not "Safe" (Aegis' annotators).

One rule for missing values everywhere: a row whose columns for a spec are all missing (None or "") has no label
(None: unlabelled), never the negative label.
"""

from __future__ import annotations

from guardreasoner.results import LABELS

_KINDS = ("flag", "not", "any", "majority")


def _missing(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_spec(spec: str) -> None:
    """Raise ValueError for a spec this language does not know (caught when a source is declared, not per row)."""
    kind, sep, columns = spec.partition(":")
    if sep and kind not in _KINDS:
        known = ", ".join(k + ":" for k in _KINDS)
        raise ValueError(f"unknown label spec {spec!r}: use COLUMN, =LABEL or one of {known}")
    if sep and not columns.strip():
        raise ValueError(f"label spec {spec!r} names no column")


def read_label(record: dict, spec: str, key: str) -> str | None:
    """The gold label of verdict ``key`` for one dataset row, or None where the row does not give one."""
    positive, negative = LABELS[key]
    if spec.startswith("="):
        return spec[1:]
    kind, sep, columns = spec.partition(":")
    if not sep:
        value = record.get(spec)
        value = value.strip().lower() if isinstance(value, str) else None
        return value if value in (positive, negative) else None
    names = columns.split(",")
    values = [record.get(name) for name in names]
    present = [value for value in values if not _missing(value)]
    if not present:
        return None
    if kind == "flag":
        return positive if present[0] in (1, True, "1") else negative
    if kind == "not":
        return negative if present[0] else positive
    if kind == "any":
        return positive if any(value == 1 for value in present) else negative
    if kind == "majority":
        return positive if 2 * sum(value != "Safe" for value in present) > len(present) else negative
    raise ValueError(f"unknown label spec {spec!r}")
