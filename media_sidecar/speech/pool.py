"""A pool of inference processes that run local speech recognition and synthesis for every call.

Why processes: Moonshine's wrapper serialises inference per process, and inference in a thread
of the media process shares its GIL and core with the 20 ms frame loop (a bare 20 ms timer
woke 9 ms late while Moonshine ran). Here each process (:mod:`.worker`) loads the models once
and runs one request at a time at a lower CPU priority (``nice``), with onnxruntime limited to
``threads`` intra-op threads; the media process only moves bytes.

Driving it from trio: nothing runs in the background. A request waits in a
:class:`~.fair.FairQueue` until a process is free, then its own task writes the request and
reads the answers on that process's pipes (non-blocking fds, ``trio.lowlevel.wait_readable``)
and hands the process to the next request when done. So the pool is bound to no trio run:
the sidecar's loop uses it, and so can a ``trio.run`` in a test or the config loader's thread
(:func:`run_blocking`).

Cancellation (a barge-in ends the turn, a call ends): a waiting request leaves the queue; a
running one gets a CANCEL (a synthesis stops after the chunk being made, a transcription
finishes) and the process's next user first reads and drops the rest of its answers.

A process that dies (or whose pipe goes out of step) is replaced at once with the same
engines; the request it was running fails with :class:`SpeechEngineError` (the call's stage
fails over as any failed stage does); requests waiting in the queue go to the other processes
or to the replacement once it is ready.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import subprocess
import sys
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Hashable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from ..config.schema import SttConfig, TtsConfig
from .base import SpeechEngineError
from .fair import FairQueue
from .wire import TERMINAL, Decoder, Kind, Message, WireError, encode

__all__ = ["STT", "TTS", "EngineSet", "InferencePool", "PoolStats", "run_blocking",
           "stt_key", "tts_key"]

log = logging.getLogger("agi_voice.inference")

STT, TTS = 0, 1
"""Request classes, in priority order (see :mod:`.fair`)."""

READ_SIZE = 1 << 16
START_TIMEOUT = 60.0
"""Seconds a process may take to load its engines (Piper and Moonshine: about 2 s each on a
busy 2-core machine; a cold disk cache is slower)."""
STOP_TIMEOUT = 2.0
R = TypeVar("R")


def stt_key(cfg: SttConfig) -> str:
    return f"{cfg.engine}/{cfg.model or 'default'}"


def tts_key(cfg: TtsConfig) -> str:
    return f"{cfg.engine}/{cfg.voice or 'default'}@{cfg.speed:g}"


@dataclass
class EngineSet:
    """The engines every process of the pool loads: key -> the config fields it needs."""

    stt: dict[str, dict[str, Any]] = field(default_factory=dict)
    tts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_stt(self, cfg: SttConfig) -> str:
        key = stt_key(cfg)
        self.stt[key] = {"engine": cfg.engine, "model": cfg.model}
        return key

    def add_tts(self, cfg: TtsConfig) -> str:
        key = tts_key(cfg)
        self.tts[key] = {"engine": cfg.engine, "voice": cfg.voice, "speed": cfg.speed}
        return key

    def meta(self) -> dict[str, Any]:
        return {"stt": dict(self.stt), "tts": dict(self.tts)}

    def merged(self, other: EngineSet) -> EngineSet:
        return EngineSet({**self.stt, **other.stt}, {**self.tts, **other.tts})


@dataclass
class PoolStats:
    """What the pool did, for metrics and the benchmark (times in seconds)."""

    requests: dict[str, int] = field(default_factory=lambda: {"stt": 0, "tts": 0})
    failed: int = 0
    cancelled: int = 0
    replaced: int = 0
    samples: deque[tuple[str, float, float, float, float]] = field(
        default_factory=lambda: deque(maxlen=20000))
    """(kind, queue wait, time to the first answer, inference time in the process, trio time
    it ended) per finished request; the oldest go first past 20000."""


class _Dead(Exception):
    """The process behind a pipe is gone (or out of step)."""


class _Worker:
    """The media process's side of one inference process."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: Any = None
        self.req_fd = -1
        self.ans_fd = -1
        self.decoder = Decoder()
        self.inbox: deque[Message] = deque()
        self.ready = False
        """READY was read: its engines are loaded."""
        self.busy = False
        self.dead = False
        self.stale: int | None = None
        """A cancelled request whose remaining answers are still to be read and dropped."""
        self.load_id = 0
        self.info: dict[str, Any] = {}
        self.call: Hashable = None
        """The call whose request holds the process (while busy)."""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def poll(self) -> bool:
        """Read whatever the pipe holds without waiting. False if the process is gone."""
        try:
            while select.select([self.ans_fd], [], [], 0.0)[0]:
                data = os.read(self.ans_fd, READ_SIZE)
                if not data:
                    return False
                self.inbox.extend(self.decoder.feed(data))
        except (OSError, WireError):
            return False
        return True

    def take_ready(self) -> bool:
        """Consume a READY at the head of the inbox (a starting process's first answer)."""
        if not self.ready and self.inbox and self.inbox[0].kind == Kind.READY:
            self.info = self.inbox.popleft().meta
            self.ready = True
        return self.ready

    async def receive(self) -> Message:
        """The next answer. Raises _Dead at end of file or for a malformed answer."""
        while not self.inbox:
            await trio.lowlevel.wait_readable(self.ans_fd)
            try:
                data = os.read(self.ans_fd, READ_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _Dead(str(exc)) from None
            if not data:
                raise _Dead("its pipe closed")
            try:
                self.inbox.extend(self.decoder.feed(data))
            except WireError as exc:
                raise _Dead(str(exc)) from None
        return self.inbox.popleft()

    async def send(self, data: bytes) -> None:
        """Write one whole message. Raises _Dead if the process is gone."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.req_fd, view)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.req_fd)
                continue
            except OSError as exc:
                raise _Dead(str(exc)) from None
            view = view[n:]

    def send_now(self, data: bytes) -> bool:
        """Write a small message without waiting (a CANCEL; at most PIPE_BUF bytes, so it is
        written whole or not at all). False if it could not be written."""
        try:
            return os.write(self.req_fd, data) == len(data)
        except OSError:
            return False

    def close_fds(self) -> None:
        for fd in (self.req_fd, self.ans_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.req_fd = self.ans_fd = -1


@dataclass(eq=False)
class _Ticket:
    call: Hashable
    cls: int
    queued_at: float
    event: trio.Event = field(default_factory=trio.Event)
    worker: _Worker | None = None


class _Hold:
    """A request's use of one process, from grant to release."""

    def __init__(self, worker: _Worker, waited: float) -> None:
        self.worker = worker
        self.waited = waited
        self.outstanding: int | None = None
        """The request sent and not yet fully answered."""
        self.sending = False
        self.first_answer: float | None = None


class InferencePool:
    """``processes`` inference processes loading ``engines`` from ``module`` (see
    :mod:`.worker`). :meth:`start` (blocking) before use; :meth:`close` (blocking) at the end.
    """

    def __init__(self, engines: EngineSet, *, processes: int = 1, threads: int = 1,
                 nice: int = 0, module: str = "media_sidecar.speech",
                 start_timeout: float = START_TIMEOUT) -> None:
        if processes < 1:
            raise ValueError(f"an inference pool needs at least one process, got {processes}")
        self.engines = engines
        self.module = module
        self.threads = threads
        self.nice = nice
        self.start_timeout = start_timeout
        self.stats = PoolStats()
        self._workers = [_Worker(i) for i in range(processes)]
        self._queue: FairQueue[_Ticket] = FairQueue(2)
        self._pinned: dict[int, deque[_Ticket]] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop, self._workers)
        self.errors: dict[str, str] = {}
        """Engine key -> why it did not load (in the last process that reported it)."""

    # -- processes ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int | None]:
        return [w.pid for w in self._workers]

    def _spawn(self, w: _Worker) -> None:
        """Start ``w``'s process and send it the LOAD of the pool's engines (no waiting).

        The process is ``python -m media_sidecar.speech.worker`` (fork and exec, as
        multiprocessing's ``spawn`` does, but without its re-import of this process's
        ``__main__`` in the child: a benchmark script or ``python -c`` would run again there),
        with the two pipe ends passed as file descriptors and this process's ``sys.path``.
        """
        req_r, req_w = os.pipe()
        ans_r, ans_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and os.path.isabs(p))
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "media_sidecar.speech.worker", self.module,
                 str(self.threads), str(self.nice), str(req_r), str(ans_w)],
                pass_fds=(req_r, ans_w), stdin=subprocess.DEVNULL, env=env)
        finally:
            os.close(req_r)
            os.close(ans_w)
        w.proc = proc
        w.req_fd, w.ans_fd = req_w, ans_r
        os.set_blocking(w.req_fd, False)
        os.set_blocking(w.ans_fd, False)
        w.decoder, w.inbox = Decoder(), deque()
        w.ready = w.busy = w.dead = False
        w.stale = None
        w.load_id = next(self._ids)
        if not w.send_now(encode(Kind.LOAD, w.load_id, self.engines.meta())):
            raise SpeechEngineError("cannot send the engines to a new inference process")

    def start(self) -> None:
        """Start every process and wait until each has loaded its engines (blocking: run it
        in a worker thread). Raises SpeechEngineError if a process fails to start or to
        answer within ``start_timeout``; an engine that fails to load is in :attr:`errors`
        (the pool runs; requests for that engine fail)."""
        for w in self._workers:
            self._spawn(w)
        deadline = time.monotonic() + self.start_timeout
        for w in self._workers:
            while not w.take_ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    self.close()
                    raise SpeechEngineError(
                        f"inference process {w.pid} did not load its engines within "
                        f"{self.start_timeout:g} s")
                select.select([w.ans_fd], [], [], min(left, 0.5))
                if not w.poll():
                    code = w.proc.poll()
                    self.close()
                    raise SpeechEngineError(
                        f"inference process {w.pid} exited while loading (status {code})")
            self.errors.update(w.info.get("errors") or {})
        log.info("inference pool: %d process(es) %s, engines %s, loaded in %s ms",
                 self.size, self.pids, ", ".join([*self.engines.stt, *self.engines.tts]),
                 "/".join(str(w.info.get("load_ms")) for w in self._workers))

    def close(self) -> None:
        """:meth:`shutdown` then :meth:`join` (blocking, about ``STOP_TIMEOUT`` at most)."""
        self.shutdown()
        self.join()

    def shutdown(self) -> None:
        """Stop taking requests and close the pipes: each process sees end of file and exits
        (after the request it is running). Requests still waiting fail with
        SpeechEngineError; call it from the trio thread when requests may be waiting.
        Idempotent."""
        self._closed = True
        for w in self._workers:
            w.close_fds()
        for t in self._drain_queue():
            t.event.set()

    def join(self) -> None:
        """Wait for the processes to exit (blocking); kill those still running after
        ``STOP_TIMEOUT``. Also what happens when a pool nobody closed is collected."""
        self._closed = True
        self._finalizer()

    def _drain_queue(self) -> list[_Ticket]:
        out = []
        while (t := self._queue.pop()) is not None:
            out.append(t)
        for q in self._pinned.values():
            out.extend(q)
        self._pinned.clear()
        return out

    def _replace(self, w: _Worker, why: str) -> None:
        """``w``'s process is gone or unusable: kill what is left and start another."""
        w.dead = True
        pid, code = w.pid, None
        if w.proc is not None:
            if w.proc.poll() is None:
                w.proc.kill()
            try:
                code = w.proc.wait(0.5)
            except subprocess.TimeoutExpired:
                code = None
        w.close_fds()
        if self._closed:
            return
        self.stats.replaced += 1
        log.warning("inference process %s ended (%s, status %s): starting another", pid, why,
                    code)
        try:
            self._spawn(w)
        except (OSError, SpeechEngineError) as exc:
            log.error("cannot start an inference process: %s", exc)
            w.dead = True
            return
        self._dispatch()

    def serving(self, call: Hashable) -> int | None:
        """The pid of the process running ``call``'s request, if one is."""
        return next((w.pid for w in self._workers if w.busy and w.call == call), None)

    # -- scheduling ----------------------------------------------------------------------------

    def _free(self) -> list[_Worker]:
        """Idle processes that can take a request now: loaded ones first; one still loading
        only when no process of the pool is loaded (its user then waits for READY)."""
        idle = [w for w in self._workers if not w.busy and not w.dead]
        for w in idle:
            if w.proc is not None and w.proc.poll() is not None:
                # died while idle (killed, out of memory): no request needs to fail for it
                self._replace(w, "exited while idle" if w.ready else "exited while loading")
                return self._free()
            if not w.ready and not w.poll():
                self._replace(w, "exited while loading")
                return self._free()
            w.take_ready()
        ready = [w for w in idle if w.ready]
        if ready:
            return ready
        if any(w.ready for w in self._workers if not w.dead):
            return []
        return idle

    def _grant(self, t: _Ticket, w: _Worker) -> None:
        w.busy = True
        w.call = t.call
        t.worker = w
        t.event.set()

    def _dispatch(self) -> None:
        """Give free processes to waiting requests: pinned ones (a LOAD for that process)
        first, then the fair queue."""
        if self._closed:
            return
        for w in self._free():
            pinned = self._pinned.get(w.index)
            if pinned:
                self._grant(pinned.popleft(), w)
                continue
            t = self._queue.pop()
            if t is None:
                continue
            self._grant(t, w)

    def _release(self, w: _Worker) -> None:
        w.busy = False
        w.call = None
        self._dispatch()

    @asynccontextmanager
    async def _hold(self, call: Hashable, cls: int,
                    pin: int | None = None) -> AsyncIterator[_Hold]:
        """A process for one request, granted in fair order (or process ``pin``), ready for
        it. Cancellation while waiting leaves the queue; while running, see :meth:`_finish`.
        Raises SpeechEngineError if the pool is closed."""
        if self._closed:
            raise SpeechEngineError("the inference pool is closed")
        t = _Ticket(call, cls, trio.current_time())
        if pin is None:
            self._queue.push(call, cls, t)
        else:
            self._pinned.setdefault(pin, deque()).append(t)
        self._dispatch()
        try:
            await t.event.wait()
        except BaseException:
            if t.worker is None:  # still waiting: leave the queue
                if pin is None:
                    self._queue.remove(t)
                else:
                    self._pinned[pin].remove(t)
            else:  # granted just as it was cancelled: pass the process on
                self._release(t.worker)
            raise
        w = t.worker
        if w is None:
            raise SpeechEngineError("the inference pool is closed")
        h = _Hold(w, trio.current_time() - t.queued_at)
        try:
            await self._prepare(h)
            yield h
        finally:
            self._finish(h)

    async def _prepare(self, h: _Hold) -> None:
        """Wait for the process's READY if it is new, and drop what a cancelled request left."""
        w = h.worker
        try:
            while not w.ready:
                m = await w.receive()
                if m.kind == Kind.READY:
                    w.info, w.ready = m.meta, True
            while w.stale is not None:
                m = await w.receive()
                if m.id == w.stale and m.kind in TERMINAL:
                    w.stale = None
        except _Dead as exc:
            self._died(h, str(exc))

    def _died(self, h: _Hold, why: str) -> None:
        w = h.worker
        pid = w.pid
        self._replace(w, why)
        h.worker = _Worker(-1)  # released already: _finish must not touch the new process
        h.worker.dead = True
        self.stats.failed += 1
        raise SpeechEngineError(f"the inference process {pid} running this request ended "
                                f"({why})")

    def _finish(self, h: _Hold) -> None:
        """Hand the process on. A request still running is told to stop, and its remaining
        answers are dropped by the process's next user; one cut off mid-write leaves the pipe
        out of step, so that process is replaced."""
        w = h.worker
        if w.dead and w.index < 0:
            return
        if h.sending:
            self.stats.cancelled += 1
            self._replace(w, "a request was cancelled while being written")
            return
        if h.outstanding is not None:
            self.stats.cancelled += 1
            if not w.send_now(encode(Kind.CANCEL, h.outstanding)):
                self._replace(w, "cannot send CANCEL")
                return
            w.stale = h.outstanding
        self._release(w)

    async def _request(self, h: _Hold, kind: Kind, meta: dict[str, Any],
                       payload: bytes = b"") -> int:
        rid = next(self._ids)
        h.sending = True
        try:
            await h.worker.send(encode(kind, rid, meta, payload))
        except _Dead as exc:
            h.sending = False
            self._died(h, str(exc))
        h.sending = False
        h.outstanding = rid
        return rid

    async def _answer(self, h: _Hold) -> Message:
        try:
            m = await h.worker.receive()
        except _Dead as exc:
            self._died(h, str(exc))
            raise  # unreachable: _died raises
        if h.first_answer is None:
            h.first_answer = trio.current_time()
        return m

    # -- requests ------------------------------------------------------------------------------

    async def transcribe(self, call: Hashable, engine: str, pcm: bytes, rate: int = 8000) -> str:
        """``pcm`` (int16 little-endian mono at ``rate``) as text, by engine key ``engine``.
        ``call`` is the fairness key (one per call). Cancellation drops the request.
        Raises SpeechEngineError if the engine fails or its process dies."""
        self.stats.requests["stt"] += 1
        async with self._hold(call, STT) as h:
            t_sent = trio.current_time()
            rid = await self._request(h, Kind.STT, {"engine": engine, "rate": rate}, pcm)
            while True:
                m = await self._answer(h)
                if m.id != rid:
                    continue
                if m.kind == Kind.TEXT:
                    h.outstanding = None
                    self._sample("stt", h, t_sent, m.meta.get("ms", 0.0))
                    return str(m.meta.get("text", ""))
                if m.kind == Kind.ERROR:
                    h.outstanding = None
                    self.stats.failed += 1
                    raise SpeechEngineError(str(m.meta.get("error", "transcription failed")))

    async def score(self, call: Hashable, engine: str, pcm: bytes, texts: list[str],
                    rate: int = 8000) -> list[float]:
        """Each of ``texts`` scored against ``pcm`` by engine key ``engine``'s own decoder,
        then its own transcript's score (acoustic re-scoring:
        :meth:`.moonshine_stt.MoonshineStt.score`), queued as an STT
        request of ``call``. Cancellation drops the request. Raises SpeechEngineError if the
        engine cannot score, fails, or its process dies."""
        self.stats.requests["score"] = self.stats.requests.get("score", 0) + 1
        async with self._hold(call, STT) as h:
            t_sent = trio.current_time()
            rid = await self._request(h, Kind.SCORE,
                                      {"engine": engine, "rate": rate, "texts": texts}, pcm)
            while True:
                m = await self._answer(h)
                if m.id != rid:
                    continue
                if m.kind == Kind.SCORES:
                    h.outstanding = None
                    self._sample("score", h, t_sent, m.meta.get("ms", 0.0))
                    return [float(x) for x in m.meta.get("scores", [])]
                if m.kind == Kind.ERROR:
                    h.outstanding = None
                    self.stats.failed += 1
                    raise SpeechEngineError(str(m.meta.get("error", "scoring failed")))

    async def synthesize(self, call: Hashable, engine: str, text: str
                         ) -> AsyncGenerator[bytes, None]:
        """``text`` said by engine key ``engine``: chunks of slin 8 kHz as the process makes
        them. Closing the iterator early, or cancelling, stops the synthesis (after the chunk
        being made) and drops the rest. Raises SpeechEngineError as :meth:`transcribe`."""
        self.stats.requests["tts"] += 1
        async with self._hold(call, TTS) as h:
            t_sent = trio.current_time()
            rid = await self._request(h, Kind.TTS, {"engine": engine, "text": text})
            while True:
                m = await self._answer(h)
                if m.id != rid:
                    continue
                if m.kind == Kind.AUDIO:
                    yield m.payload
                elif m.kind == Kind.DONE:
                    h.outstanding = None
                    self._sample("tts", h, t_sent, m.meta.get("ms", 0.0))
                    return
                elif m.kind == Kind.ERROR:
                    h.outstanding = None
                    self.stats.failed += 1
                    raise SpeechEngineError(str(m.meta.get("error", "synthesis failed")))

    async def synthesize_all(self, call: Hashable, engine: str, text: str) -> bytes:
        """The whole of :meth:`synthesize` as one slin 8 kHz buffer."""
        out = bytearray()
        async with aclosing(self.synthesize(call, engine, text)) as chunks:
            async for chunk in chunks:
                out += chunk
        return bytes(out)

    async def load(self, engines: EngineSet) -> dict[str, str]:
        """Load ``engines`` into every process too (a reload that names a new voice): the
        pool's set grows, so replacements load them as well. Returns engine key -> error for
        those that failed."""
        self.engines = self.engines.merged(engines)
        errors: dict[str, str] = {}

        async def one(index: int) -> None:
            async with self._hold(("load", index), TTS, pin=index) as h:
                rid = await self._request(h, Kind.LOAD, engines.meta())
                while True:
                    m = await self._answer(h)
                    if m.id == rid and m.kind == Kind.READY:
                        h.outstanding = None
                        errors.update(m.meta.get("errors") or {})
                        return

        async with trio.open_nursery() as nursery:
            for w in self._workers:
                nursery.start_soon(one, w.index)
        self.errors.update(errors)
        return errors

    def _sample(self, kind: str, h: _Hold, t_sent: float, ms: Any) -> None:
        first = (h.first_answer or t_sent) - t_sent
        self.stats.samples.append((kind, h.waited, first, float(ms or 0.0) / 1000,
                                   trio.current_time()))

    def snapshot(self) -> dict[str, Any]:
        """The pool's state for logs and the benchmark."""
        return {"processes": self.size, "pids": self.pids,
                "busy": sum(w.busy for w in self._workers),
                "queued": {"stt": self._queue.waiting(STT), "tts": self._queue.waiting(TTS)},
                "requests": dict(self.stats.requests), "failed": self.stats.failed,
                "cancelled": self.stats.cancelled, "replaced": self.stats.replaced}


def _stop(workers: list[_Worker]) -> None:
    for w in workers:
        w.close_fds()  # the process sees end of file and exits
    for w in workers:
        if w.proc is None:
            continue
        try:
            w.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait(STOP_TIMEOUT)
        w.dead = True


def run_blocking(fn: Callable[..., Awaitable[R]], *args: Any) -> R:
    """Run async ``fn`` from blocking code: through the trio loop when called from one of its
    worker threads (the sidecar's start-up and reload), else in a trio run of its own (tests,
    tools). Not from the trio thread itself (RuntimeError)."""
    try:
        return trio.from_thread.run(fn, *args)
    except RuntimeError as exc:
        if "blocking function" in str(exc):
            raise
    return trio.run(fn, *args)

