"""The periodic full garbage collection both planes run (the media process's trio loop and the
FastAGI process's asyncio loop each sleep in their own way, then call :func:`full_collection`).

Each call leaves a few objects in reference cycles that outlive the young collections, and
CPython runs a full collection only once such garbage reaches a quarter of the long-lived
objects (the media process also raises the thresholds: media_sidecar/process.py). The soak
(bench/soak.py) saw no full collection in 2,000 sequential calls in FastAGI, and none at all in
5 minutes of 200 concurrent calls in a media worker, which then grew 70 -> 316 MiB before calls
broke their own cycles. One pause every 5 minutes (tens of ms in a media process at a few
hundred calls, milliseconds in FastAGI) buys memory that stays flat whatever cycles a library
leaves behind.
"""

from __future__ import annotations

import gc
import logging
import time

FULL_COLLECTION_SECONDS = 300.0
"""How often each process runs a full collection."""


def full_collection(log: logging.Logger) -> None:
    """Run a full collection now; logged at DEBUG with what it found and how long it took."""
    t0 = time.perf_counter()
    found = gc.collect()
    log.debug("full garbage collection: %d unreachable objects in %.1f ms", found,
              (time.perf_counter() - t0) * 1000)
