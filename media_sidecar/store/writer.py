"""Writing call records to the store from a media worker without blocking its trio loop.

:meth:`StoreWriter.submit` is a :class:`~media_sidecar.session.records.RecordWriter`
observer: it runs in the thread that writes the JSON-lines record, snapshots the record as a
dict (without its words when ``transcripts: false``) and puts it on a bounded queue; it never
waits. One thread takes records off the queue and saves them, and applies the retention when
asked (:meth:`StoreWriter.request_sweep`).

A failure (the store down, the disk full, the database locked past ``busy_timeout``, the
queue full) costs only that record's store row: it is counted (``on_error``, the metric
``agi_voice_store_write_errors_total``), logged once per run of failures (one ERROR, then a
WARNING when writes succeed again), and the JSON-lines record is written regardless. A store
that cannot be opened is retried at the next record.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from ..session.records import CallRecord, capped, without_text
from . import open_store
from .db import default_url, mask_url
from .store import CallStore

log = logging.getLogger("agi_voice.store")

_SWEEP = object()
_STOP = object()
SAVE_TRIES = 3
"""Attempts per record, each on a fresh connection after the first failure."""
RETRY_PAUSE = 0.2
"""Seconds between attempts (the writer's own thread: never the media loop)."""


class StoreWriter:
    """A thread that saves call records to the store at ``url`` ("": the default SQLite file).

    Start it with :meth:`start`, stop it with :meth:`close` (which waits a bounded time for
    the queue to drain). ``opener`` opens the store (tests give a failing one).
    """

    def __init__(self, url: str = "", *, queue_size: int = 2000, transcripts: bool = True,
                 max_age_days: float = 0.0,
                 on_error: Callable[[BaseException], None] | None = None,
                 opener: Callable[[str], CallStore] = open_store) -> None:
        self.url = url
        self.transcripts = transcripts
        self.max_age_days = max_age_days
        self.on_error = on_error
        self._opener = opener
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._thread: threading.Thread | None = None
        self._store: CallStore | None = None
        self._failing = False
        self._closing = threading.Event()
        """:meth:`close` was called: a failed record is not retried (nor the shutdown held)."""
        self._count_lock = threading.Lock()
        self.saved = 0
        """Records saved."""
        self.errors = 0
        """Records not saved (store error, or the queue full)."""
        self.swept = 0
        """Calls deleted by the retention."""

    @property
    def shown_url(self) -> str:
        try:
            return mask_url(self.url or default_url())
        except OSError:
            return "the default store"

    def start(self) -> None:
        self._closing.clear()
        self._thread = threading.Thread(target=self._run, name="agi-voice-store", daemon=True)
        self._thread.start()

    def submit(self, record: CallRecord) -> None:
        """Queue a finished call's record (any thread; never blocks). A full queue leaves the
        record out of the store (counted)."""
        body = capped(asdict(record))
        if not self.transcripts:
            body = without_text(body)
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self._failed(f"the queue is full ({self._queue.maxsize} records waiting)", None)

    def request_sweep(self) -> None:
        """Ask the thread to apply ``max_age_days`` (skipped when the queue is full: the next
        hourly request comes soon enough)."""
        if self.max_age_days > 0:
            try:
                self._queue.put_nowait(_SWEEP)
            except queue.Full:
                pass

    def close(self, timeout: float = 5.0) -> bool:
        """Stop after the records queued so far are saved, waiting at most ``timeout`` s for
        them (blocking: run it in a worker thread). True when the queue drained in time;
        records still queued after that are left to the JSON-lines export."""
        thread = self._thread
        if thread is None:
            return True
        self._closing.set()
        deadline = time.monotonic() + timeout
        while True:  # the stop marker must get in even behind a full queue
            try:
                self._queue.put(_STOP, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("call store: %d records still queued at shutdown are only in the "
                        "JSON-lines records", self._queue.qsize())
            return False
        self._thread = None
        return True

    # the thread

    def _run(self) -> None:
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                if item is _SWEEP:
                    self._sweep()
                else:
                    self._save(item)
        finally:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _open(self) -> CallStore:
        if self._store is None:
            self._store = self._opener(self.url)
            log.info("call store: %s (%s, schema %d)", self.shown_url, self._store.backend,
                     self._store.schema_version())
        return self._store

    def _save(self, body: dict[str, Any]) -> None:
        for attempt in range(SAVE_TRIES):
            try:
                self._open().save(body)
                break
            except Exception as exc:  # any failure costs only this row
                if attempt == SAVE_TRIES - 1 or self._closing.is_set():
                    self._failed(str(exc), exc)
                    return
                # once more, on a fresh connection (a lock that outlasted busy_timeout, a
                # server that restarted): a passing fault must not lose the row
                self._reset()
                time.sleep(RETRY_PAUSE)
        self.saved += 1
        if self._failing:
            self._failing = False
            log.warning("call store %s writes again (%d records could not be written)",
                        self.shown_url, self.errors)

    def _reset(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            except Exception:  # closing a broken connection: nothing more to do
                pass
            self._store = None

    def _sweep(self) -> None:
        try:
            deleted = self._open().sweep(self.max_age_days)
        except Exception as exc:  # retried at the next hourly sweep
            log.error("call store %s: retention not applied: %s", self.shown_url, exc)
            return
        self.swept += deleted
        if deleted:
            log.info("call store: %d calls older than %g days deleted", deleted,
                     self.max_age_days)

    def _failed(self, why: str, exc: BaseException | None) -> None:
        with self._count_lock:  # the writing thread and a submitting one
            self.errors += 1
            first, self._failing = not self._failing, True
        if first:
            log.error("cannot write call record to the call store %s: %s (further failures "
                      "are only counted, agi_voice_store_write_errors_total, until a write "
                      "succeeds; the JSON-lines records are unaffected)", self.shown_url, why)
        if self.on_error is not None:
            try:
                self.on_error(exc or RuntimeError(why))
            except Exception:
                log.exception("call store error observer failed")
