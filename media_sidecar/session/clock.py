"""One frame clock per media process: every call's outbound frame and inbound bytes, one task.

A single task ticks every 20 ms on an absolute grid (``start + n * 20 ms``). On each tick it
first writes every call's next frame toward Asterisk with a non-blocking send on the socket
(header and payload in one write); half a frame later (:data:`READ_PHASE`) it drains every
call's inbound bytes without blocking and hands them to the call's pure state (decoder, VAD, turn detector, provider buffers) through its
:class:`CallerSink`. Per-call tasks remain for provider I/O and turn logic; nothing wakes per call
per frame any more (before: a writer and a reader task per call, two wake-ups per call per frame,
three quarters of the relay's CPU).

What each call keeps, exactly as when it had its own writer (all tested in virtual time):

- **the 20 ms grid**: one frame per call per tick; the tick's deadline advances by 20 ms, so
  scheduling jitter is absorbed by sleeping less next time. Writes go first, in a stable order,
  so each call's frames leave at the same offset into every tick.
- **re-clamp after a stall, never a burst**: a tick more than one frame late moves the grid to
  now (every call counts one ``late_frames``); the missed frames are skipped, not caught up.
- **silence while idle**, **a flush effective at the next frame**, **the hand-back ``00 00 00``
  after the last audio frame** and the **bounded lead** are the :class:`~.playout.Playout`'s
  pure state, asked for one frame per tick.
- **a short write is completed before anything else goes on that socket**: the rest waits in the
  port and goes first on the next tick; a peer that does not read gets no new frames
  (``blocked_ticks``) until it does, and the playout does not advance meanwhile.
- **one bad call never disturbs another**: every call's write, read and feed run in their own
  ``try``; an exception ends that call (``FAILED``, as a crash in its own task did), a reset or
  a closed socket ends it as a hang-up.

Inbound latency: bytes are read in the first read phase after they arrive, so the caller's audio
reaches the VAD, the turn detector and a provider at most one frame (20 ms, 10 ms on average)
later than a reader task per call would have taken it. That is the cost to barge-in detection and
to the end of a turn; it buys the per-frame wake-ups. Caller frames are stamped with the read
phase's time. Audio the read phase makes at once (the echo assistant's chunk) leaves at the next
write phase, half a frame later.

The clock is started on first use in each trio run (:func:`frame_clock`) as a system task, so
the sidecar, the tests and the benchmarks share one code path; it sleeps without waking while
no call is attached. Only connected sockets (``trio.SocketStream``: TCP from Asterisk, or a
``socketpair`` in tests) can be attached: their descriptors are non-blocking already (trio set
them so); the clock writes and reads a duplicate of each with ``os.write`` / ``os.read``.
"""

from __future__ import annotations

import bisect
import errno
import os
from dataclasses import dataclass, field
from typing import Protocol

import trio

from ..constants import FRAME_SECONDS
from .playout import LATENESS_BINS_MS, Playout

__all__ = ["CallerSink", "ClockStats", "FrameClock", "Port", "frame_clock", "process_clock_stats"]

READ_BYTES = 65536
"""Most bytes read from one call per tick (20 ms of any leg is far less; a burst after a stall
is taken over the following ticks)."""

READ_PHASE = FRAME_SECONDS / 2
"""When in each tick the reads run, after the tick's deadline (the writes)."""

_GONE = (errno.EBADF, errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET)


class CallerSink(Protocol):
    """What the clock feeds a call's inbound side with (implemented by the media session)."""

    def caller_data(self, data: bytes, now: float) -> bool:
        """Bytes from Asterisk. Return False once the call wants no more (its leg ended)."""

    def caller_closed(self, reason: str, error: str, now: float) -> None:
        """The connection ended from Asterisk's side (``eof``, ``reset``)."""

    def caller_tick(self, now: float) -> None:
        """Once per tick after the read (the call's clock: gap filling)."""


@dataclass(eq=False)
class Port:
    """One call's connection on the clock. Made by :meth:`FrameClock.attach`."""

    stream: trio.SocketStream
    playout: Playout
    sink: CallerSink
    lead_frames: int = 0
    out: bytes = b""
    """The unwritten rest of a short write: goes before anything else."""
    reading: bool = True
    active: bool = True
    fresh: bool = True
    hangup_in_out: bool = False
    """``out`` ends with the hand-back frame."""
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None
    """A bug in this call's frame handling (re-raised in the call's own task)."""
    broken: str = ""
    """Why a write failed (the leg is gone)."""
    handed_back: bool = False

    fd: int = -1
    """The clock's own duplicate of the socket's descriptor (see :meth:`FrameClock.attach`)."""


@dataclass
class ClockStats:
    ticks: int = 0
    late_ticks: int = 0
    """Ticks more than a frame late (the grid was re-clamped)."""
    max_lateness: float = 0.0
    lateness_hist: list[int] = field(default_factory=lambda: [0] * len(LATENESS_BINS_MS))
    """Ticks per wake-up lateness bin (ms, see LATENESS_BINS_MS)."""
    busy_seconds: float = 0.0
    """Time spent inside ticks (writing, reading, feeding): the clock's share of the core."""
    max_tick_seconds: float = 0.0
    ports: int = 0
    max_ports: int = 0


class FrameClock:
    """The process's frame clock. :meth:`attach` a call's socket; :meth:`run` is its task."""

    def __init__(self) -> None:
        self._ports: dict[Port, None] = {}  # insertion-ordered: a stable write order
        self._wake = trio.Event()
        self.stats = ClockStats()

    def attach(self, stream: trio.abc.Stream, playout: Playout, sink: CallerSink, *,
               lead_frames: int = 0) -> Port:
        """Put a call on the clock: its first frame (and ``lead_frames`` more) leave on the
        next tick. Raises TypeError for a stream without a socket."""
        if not isinstance(stream, trio.SocketStream):
            raise TypeError(f"the frame clock needs a socket stream, not {type(stream).__name__}")
        port = Port(stream, playout, sink, lead_frames)
        # A duplicate descriptor of its own: no lookup per write, and it can never name another
        # connection (a closed descriptor's number is reused at once by the next accept); it
        # shares the non-blocking flag. Closed by detach, which the call does before it closes
        # the stream, so the connection's FIN still goes when the stream closes.
        port.fd = os.dup(stream.socket.fileno())
        self._ports[port] = None
        self.stats.ports = len(self._ports)
        self.stats.max_ports = max(self.stats.max_ports, self.stats.ports)
        self._wake.set()
        return port

    def detach(self, port: Port) -> None:
        """Take a call off the clock (idempotent). The socket is the caller's to close."""
        port.active = port.reading = False
        self._ports.pop(port, None)
        if port.fd >= 0:
            os.close(port.fd)
            port.fd = -1
        self.stats.ports = len(self._ports)
        port.done.set()

    @property
    def calls(self) -> int:
        return len(self._ports)

    async def run(self) -> None:
        """Tick while calls are attached; sleep on an event while none is. Never raises."""
        while True:
            while not self._ports:
                self._wake = trio.Event()
                await self._wake.wait()
            deadline = trio.current_time()
            while self._ports:
                await trio.sleep_until(deadline)
                await self._tick(deadline)
                deadline += FRAME_SECONDS
                behind = trio.current_time() - deadline
                if behind > FRAME_SECONDS:
                    # a stall: skip the missed frames (no catch-up burst), new grid from now
                    self.stats.late_ticks += 1
                    for port in self._ports:
                        if not port.fresh:  # a call attached during the stall missed nothing
                            port.playout.stats.late_frames += 1
                    deadline += behind

    # -- one tick ----------------------------------------------------------------------------

    async def _tick(self, deadline: float) -> None:
        start = trio.current_time()
        late = start - deadline
        st = self.stats
        st.ticks += 1
        st.max_lateness = max(st.max_lateness, late)
        st.lateness_hist[bisect.bisect_left(LATENESS_BINS_MS, late * 1000)] += 1
        ports = list(self._ports)
        for port in ports:
            if port.active:
                try:
                    self._write(port, deadline)
                except Exception as exc:  # noqa: BLE001 - a bug in one call ends that call only
                    self._fail(port, exc)
        spent = trio.current_time() - start
        # The read phase is half a frame after the write phase: the reads' work (decoding,
        # VAD, providers' buffers) never delays a write, and a peer that sends on the same grid
        # as ours (Asterisk's phase is arbitrary; the emulator's in virtual time is ours) is
        # read on a definite tick, not on whichever of two tasks woke first in that instant.
        await trio.sleep_until(deadline + READ_PHASE)
        now = trio.current_time()
        for port in ports:
            if port.active and port.reading:
                try:
                    self._read(port, now)
                except Exception as exc:  # noqa: BLE001
                    self._fail(port, exc)
        spent += trio.current_time() - now
        st.busy_seconds += spent
        st.max_tick_seconds = max(st.max_tick_seconds, spent)

    def _write(self, port: Port, deadline: float) -> None:
        if port.out:
            if not self._send(port, port.out) or port.out:
                return
            if port.hangup_in_out:
                self._handed_back(port)
                return
        count = 1 + port.lead_frames if port.fresh else 1
        port.fresh = False
        playout = port.playout
        now = trio.current_time()
        if playout.started_at is None:
            playout.started_at = now
        for _ in range(count):
            data, hangup = playout.next_wire(now, now - deadline)
            port.out = data
            port.hangup_in_out = hangup
            if not self._send(port, data) or port.out:
                return
            if hangup:
                self._handed_back(port)
                return

    def _send(self, port: Port, data: bytes) -> bool:
        """Write ``port.out`` (``data``) without blocking; keep the unwritten rest. False when
        nothing more can go now (a short write, or the leg is gone)."""
        try:
            n = os.write(port.fd, data)
        except BlockingIOError:
            port.playout.stats.blocked_ticks += 1
            return False
        except OSError as exc:
            self._broken(port, str(exc) or "connection closed")
            return False
        port.out = data[n:]
        if port.out:
            port.playout.stats.blocked_ticks += 1
            return False
        return True

    def _read(self, port: Port, now: float) -> None:
        sink = port.sink
        try:
            data: bytes | None = os.read(port.fd, READ_BYTES)
        except BlockingIOError:
            data = None
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            port.reading = False
            sink.caller_closed("reset", str(exc) or "connection reset", now)
            return
        if data is not None:
            if not data:
                port.reading = False
                sink.caller_closed("eof", "", now)
                return
            if not sink.caller_data(data, now):
                port.reading = False
                return
        sink.caller_tick(now)

    def _handed_back(self, port: Port) -> None:
        port.handed_back = True
        port.playout.hand_back_sent.set()
        port.active = port.reading = False
        port.done.set()

    def _broken(self, port: Port, why: str) -> None:
        port.broken = why
        port.active = port.reading = False
        port.done.set()

    def _fail(self, port: Port, exc: Exception) -> None:
        port.error = exc
        port.active = port.reading = False
        port.done.set()


_CLOCK: trio.lowlevel.RunVar[FrameClock] = trio.lowlevel.RunVar("agi_voice_frame_clock")


_LAST: list[FrameClock] = []


def process_clock_stats() -> ClockStats | None:
    """The statistics of the clock :func:`frame_clock` made last in this process (for the
    metrics scrape, from any thread), or None before the first call."""
    return _LAST[0].stats if _LAST else None


def frame_clock() -> FrameClock:
    """This trio run's frame clock, started as a system task on first use."""
    try:
        return _CLOCK.get()
    except LookupError:
        clock = FrameClock()
        _CLOCK.set(clock)
        _LAST[:] = [clock]
        trio.lowlevel.spawn_system_task(clock.run, name="agi-voice frame clock")
        return clock
