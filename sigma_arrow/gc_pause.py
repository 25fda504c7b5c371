"""``gc_paused()``: pause Python's cyclic garbage collector around bulk object building."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC for a block, then restore whatever state it had.

    Building millions of small dicts and lists (decoded records, match records, Kafka messages)
    otherwise triggers collections that rescan every one of them: ~2x slower, measured here.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
