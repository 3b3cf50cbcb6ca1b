"""What this CPU computes natively, read at run time: machines differ (some have AVX-512 BF16 and AMX, some only
AVX2), so no speed choice is made on an assumption."""

from __future__ import annotations

from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # without them bfloat16 is emulated: slower than float32


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags from /proc/cpuinfo (empty where there is none: no measured speed then applies)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def native_bfloat16() -> bool:
    return bool(cpu_flags() & NATIVE_BF16_FLAGS)
