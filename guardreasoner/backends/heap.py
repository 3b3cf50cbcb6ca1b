"""Keep a CPU generation's memory from growing with its length (glibc's malloc, Linux).

Each decoding step reallocates the key/value cache a little larger (transformers concatenates it; 8 rows of 3,500
tokens are ~21 MB a layer). glibc serves blocks over its mmap threshold with mmap and returns them on free, but it
raises that threshold to the size of each mmapped block freed (up to 32 MiB), so after the first steps the cache
comes from the heap, where ever-larger blocks cannot reuse the holes the smaller ones left. Measured with
``eval run --model embedded --backend transformers --benchmarks OpenAIModeration --sample 40 --batch-size 8``
(2,048 new tokens at most): resident memory reached 4.2 GiB after 10 minutes and 6.7 GiB at 12.7, in the second
batch of 8, when it was killed; with the threshold fixed at 1 MiB the same rows peaked at 2.1 GiB
(``MALLOC_MMAP_THRESHOLD_=1048576``) and 2.6 GiB (this module's ``mallopt``) and fell back to 1.1-1.3 GiB between
batches. Setting it with ``mallopt`` also switches the dynamic raise off. A threshold the user set
(``MALLOC_MMAP_THRESHOLD_``, as the training scripts do to keep their step buffers in the heap) is left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 1 << 20
_done = False


def bound_heap_growth() -> bool:
    """Fix glibc's mmap threshold at 1 MiB for this process, once; False where it does not apply or is user-set."""
    global _done
    if _done or not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    if _done:
        logger.debug("glibc mmap threshold fixed at %d bytes", MMAP_THRESHOLD_BYTES)
    return _done
