"""The emulator's AudioSocket side for hundreds of calls at once: a multi-process load generator.

:class:`~fastagi_server.emulator.audiosocket_side.AudioSocketSession` is exact but costs a few
trio tasks and wake-ups per call and frame; one core cannot drive more than a few dozen calls
with it, and a late generator makes the server look late. :class:`LoadEngine` instead hands the
AudioSocket side of every call to one of several **generator processes** (``procs``, each pinned
to a CPU of ``cpus``), each running one epoll loop over non-blocking sockets:

- every 20 ms, on its own absolute grid (process *k* of *P* is offset by k/P of a frame, so the
  processes' bursts do not coincide, as channels of a real Asterisk do not), it sends each of its
  calls' next caller frame: pre-encoded (``10 01 40`` + 320 bytes of slin, built once per caller
  signal), one ``send`` per frame; a short write is completed before the next frame goes on that
  socket, a full socket buffer loses the frame (counted), as a real channel would;
- in between it reads whatever the server sent, as much as is there in one ``recvmsg``, and
  stamps it with the kernel's receive time (``SO_TIMESTAMPNS``: when the server's ``send`` put
  the bytes on loopback), so the figures do not carry the generator's own scheduling delay; a
  read that is exactly one slin frame is counted without decoding, anything else goes through
  the product's sans-I/O :class:`~media_sidecar.protocol.audiosocket.AudioSocketDecoder`;
  whether an audio frame carries sound is decided once per poll round for all frames received
  in it (one numpy call);
- at a call's end time it closes the socket (a caller hang-up is a TCP close) and reports the
  call's arrivals back; the coordinator then soft-hangs up the emulated channel, so the AGI side
  sees ``HANGUP`` as with a real channel.

The FastAGI part of each call stays the emulator's own (``run_call(..., audio_runner=
engine.runner(...))``): the AGI session connects the AudioSocket and sends the UUID in this
process, then the connected socket is passed to a generator process (``SCM_RIGHTS``). Servers
without FastAGI (:meth:`LoadEngine.run_direct`) get the same load: connect, UUID, frames.

Each generator process reports its own lateness (:meth:`LoadEngine.stats`): for every tick, how
late it woke and how late its last frame of the tick left, and its CPU time, so a step can say
whether the generator kept up and the figures are the server's.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import queue
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid as uuid_mod
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio

from fastagi_server.emulator.audiosocket_side import AudioSocketResult
from fastagi_server.emulator.channel import EmulatedChannel
from media_sidecar.constants import FRAME_BYTES, FRAME_SECONDS
from media_sidecar.protocol.audiosocket import (
    AudioMessage,
    AudioSocketDecoder,
    AudioSocketError,
    HangupMessage,
    Kind,
    encode_audio,
    encode_uuid,
)

FRAME_WIRE = 3 + FRAME_BYTES
"""One slin 8 kHz frame on the wire: header and payload."""
_SLIN_HEADER = encode_audio(bytes(FRAME_BYTES))[:3]
_SILENCE_FRAME = encode_audio(bytes(FRAME_BYTES))
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux: receive timestamps as a ``struct timespec`` (CLOCK_REALTIME) on ``recvmsg``."""
_CMSG_SPACE = socket.CMSG_SPACE(16)
_TIMESPEC = struct.Struct("@qq")
_FD_SIZE = array("i").itemsize
_BIG_RESULT = 100_000
"""A call result larger than this (bytes, pickled) goes through a file, not the control socket
(a SOCK_SEQPACKET message must fit the socket buffer)."""


def encode_caller(pcm: bytes) -> bytes:
    """The caller's whole audio as AudioSocket wire bytes: one slin frame per 20 ms, the last
    padded with silence (pure; what a generator process sends, frame by frame)."""
    if len(pcm) % FRAME_BYTES:
        pcm = pcm + bytes(FRAME_BYTES - len(pcm) % FRAME_BYTES)
    return b"".join(
        _SLIN_HEADER + pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)
    )


@dataclass(eq=False)
class LoadResult(AudioSocketResult):
    """An AudioSocket result with the generator's compact timing (monotonic seconds)."""

    arrivals: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Arrival time of every audio frame from the server (kernel receive time when the
    socket supports it, else when the generator read it)."""
    loud_frames: int = 0
    """Audio frames that carried sound (a sample over the engine's ``loud_level``)."""
    caller_frames_sent: int = 0
    """Caller frames the generator sent on this call."""
    worker: int = -1
    """Index of the generator process that drove the call."""
    mono_started: float = 0.0
    mono_ended: float = 0.0


# -- the coordinator (the bench's trio process) ----------------------------------------------------
@dataclass(eq=False)
class _Pending:
    result: LoadResult
    done: trio.Event
    token: trio.lowlevel.TrioToken
    worker: int


class LoadEngine:
    """Drives the AudioSocket side of many calls from ``procs`` generator processes pinned to
    ``cpus`` (round robin; None: not pinned). Use as a context manager (it starts and stops the
    processes). Calls go to the process with the fewest calls.

    Raises RuntimeError from ``__enter__`` when a generator process does not start."""

    def __init__(self, procs: int = 1, cpus: Sequence[int] | None = None,
                 loud_level: int = 300, kernel_stamps: bool = True) -> None:
        if procs < 1:
            raise ValueError(f"procs must be >= 1, got {procs}")
        self.procs = procs
        self.cpus = list(cpus) if cpus else []
        self._loud = loud_level
        self._kernel_stamps = kernel_stamps
        self._workers: list[subprocess.Popen[bytes]] = []
        self._ctl: list[socket.socket] = []
        self._readers: list[threading.Thread] = []
        self._load: list[int] = []
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._stats: queue.Queue[dict[str, Any]] = queue.Queue()
        self._signals: dict[bytes, int] = {}
        self._next_id = 0
        self._tmp = tempfile.TemporaryDirectory(prefix="agi-voice-loadgen-")

    # lifecycle
    def __enter__(self) -> LoadEngine:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
        try:
            for k in range(self.procs):
                mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                cpu = str(self.cpus[k % len(self.cpus)]) if self.cpus else "-"
                argv = [sys.executable, "-m", "fastagi_server.emulator.loadgen", "--worker",
                        str(theirs.fileno()), str(k), str(self.procs), cpu, str(self._loud),
                        "1" if self._kernel_stamps else "0", self._tmp.name]
                proc = subprocess.Popen(argv, pass_fds=[theirs.fileno()], env=env,
                                        stdin=subprocess.DEVNULL)
                theirs.close()
                self._workers.append(proc)
                self._ctl.append(mine)
                self._load.append(0)
                mine.settimeout(60)
                hello = pickle.loads(mine.recv(1 << 16))
                mine.settimeout(None)
                if hello[0] != "ready":
                    raise RuntimeError(f"generator process {k} said {hello!r}")
                t = threading.Thread(target=self._read, args=(k,), daemon=True,
                                     name=f"loadgen-reader-{k}")
                t.start()
                self._readers.append(t)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ctl in self._ctl:
            with contextlib.suppress(OSError):
                ctl.send(pickle.dumps(("stop",)))
        for proc in self._workers:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for t in self._readers:
            t.join(5)
        for ctl in self._ctl:
            ctl.close()
        self._workers.clear()
        self._ctl.clear()
        self._readers.clear()
        self._tmp.cleanup()

    @property
    def pids(self) -> list[int]:
        """Process ids of the generator processes."""
        return [p.pid for p in self._workers]

    # calls
    def runner(self, caller_pcm: bytes, seconds: float):  # noqa: ANN201 - an AudioRunner
        """An ``audio_runner`` for one call: ``caller_pcm`` then silence, hang-up after
        ``seconds``."""

        async def run(stream: trio.abc.Stream, ident: str, channel: EmulatedChannel
                      ) -> AudioSocketResult:
            return await self.run_session(stream, ident, channel, caller_pcm, seconds)

        return run

    async def run_session(self, stream: trio.abc.Stream, ident: str,
                          channel: EmulatedChannel | None, caller_pcm: bytes,
                          seconds: float) -> LoadResult:
        """Send the UUID on ``stream`` (connected to the server), then hand the socket to a
        generator process until the call ends (``seconds`` from now, or the server ends it).
        On cancellation the call is left to run out in its generator process."""
        if not isinstance(stream, trio.SocketStream):
            raise TypeError("the load engine needs a trio.SocketStream")
        res = LoadResult(ident)
        res.started_at = trio.current_time()
        try:
            await stream.send_all(encode_uuid(uuid_mod.UUID(ident)))
            pending = self._hand_off(stream.socket.fileno(), res, caller_pcm, seconds)
        finally:
            # the generator holds its own reference: closing ours sends nothing to the server
            await trio.aclose_forcefully(stream)
        await pending.done.wait()
        res.ended_at = trio.current_time()
        if res.closed_by == "caller_hangup" and channel is not None:
            channel.hangup(16)
        return res

    async def run_direct(self, host: str, port: int, caller_pcm: bytes, seconds: float,
                         ident: str | None = None) -> LoadResult:
        """The same load without FastAGI (a server that has none): connect, send a UUID,
        stream. A failed connect is a result with ``closed_by="sidecar_reset"``."""
        ident = ident or str(uuid_mod.uuid4())
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            res = LoadResult(ident, closed_by="sidecar_reset", error=repr(exc))
            res.started_at = res.ended_at = trio.current_time()
            return res
        return await self.run_session(stream, ident, None, caller_pcm, seconds)

    def _hand_off(self, fd: int, res: LoadResult, pcm: bytes, seconds: float) -> _Pending:
        sid = self._signal(pcm)
        k = min(range(self.procs), key=self._load.__getitem__)
        cid = self._next_id
        self._next_id += 1
        pending = _Pending(res, trio.Event(), trio.lowlevel.current_trio_token(), k)
        res.worker = k
        res.mono_started = time.monotonic()
        with self._lock:
            self._pending[cid] = pending
            self._load[k] += 1
        socket.send_fds(self._ctl[k], [pickle.dumps(("add", cid, sid, res.mono_started + seconds))],
                        [fd])
        return pending

    def _signal(self, pcm: bytes) -> int:
        """The id of a caller signal, registered with every generator process on first use
        (through a file: a signal is too large for one control message)."""
        sid = self._signals.get(pcm)
        if sid is None:
            sid = self._signals[pcm] = len(self._signals)
            path = Path(self._tmp.name) / f"signal-{sid}.raw"
            path.write_bytes(pcm)
            for ctl in self._ctl:
                ctl.send(pickle.dumps(("signal", sid, str(path))))
        return sid

    def stats(self, reset: bool = True, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every generator process's own figures since the last reset (see ``_Worker.stats``),
        ordered by process index; ``reset`` starts a new period. Blocks up to ``timeout``
        (call between steps). Raises RuntimeError when a process does not answer."""
        for ctl in self._ctl:
            ctl.send(pickle.dumps(("stats", reset)))
        out = []
        for _ in self._ctl:
            try:
                out.append(self._stats.get(timeout=timeout))
            except queue.Empty:
                raise RuntimeError("a generator process did not report its stats") from None
        return sorted(out, key=lambda s: s["index"])

    def _read(self, k: int) -> None:
        """Reader thread for process ``k``: results and stats from it."""
        ctl = self._ctl[k]
        while True:
            try:
                data = ctl.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                break
            msg = pickle.loads(data)
            if msg[0] == "stats":
                self._stats.put(msg[1])
            elif msg[0] in ("done", "done_file"):
                info = msg[2]
                if msg[0] == "done_file":
                    path = Path(info)
                    info = pickle.loads(path.read_bytes())
                    path.unlink()
                self._complete(msg[1], info)
        with self._lock:  # the process is gone: its calls end with it
            lost = [cid for cid, p in self._pending.items() if p.worker == k]
        for cid in lost:
            self._complete(cid, {"closed_by": "sidecar_reset", "result_code": -1,
                                 "error": f"generator process {k} exited"})

    def _complete(self, cid: int, info: dict[str, Any]) -> None:
        with self._lock:
            pending = self._pending.pop(cid, None)
            if pending is None:
                return
            self._load[pending.worker] -= 1
        res = pending.result
        res.closed_by = info["closed_by"]
        res.result_code = info["result_code"]
        res.error = info.get("error")
        res.hangup_sent_by_sidecar = info.get("hangup_sent_by_sidecar", False)
        res.arrivals = np.frombuffer(info.get("arrivals", b""), dtype=np.float64)
        res.loud_frames = info.get("loud_frames", 0)
        res.caller_frames_sent = info.get("frames_sent", 0)
        res.mono_ended = info.get("mono_ended", time.monotonic())
        with contextlib.suppress(trio.RunFinishedError):
            pending.token.run_sync_soon(pending.done.set)


# -- a generator process ---------------------------------------------------------------------------
@dataclass(eq=False)
class _Call:
    cid: int
    sock: socket.socket
    wire: memoryview
    """The caller's pre-encoded frames; silence after them."""
    end: float
    started: float
    decoder: AudioSocketDecoder | None = None
    offset: int = 0
    rest: memoryview | None = None
    """The unsent tail of a short write."""
    arrivals: array = field(default_factory=lambda: array("d"))
    loud: int = 0
    sent: int = 0
    hangup_by_sidecar: bool = False


class _Worker:
    """One generator process: an epoll loop over its calls' sockets and its control socket."""

    def __init__(self, ctl: socket.socket, index: int, procs: int, loud_level: int,
                 kernel_stamps: bool, tmp: str) -> None:
        self.ctl = ctl
        self.index = index
        self.phase = FRAME_SECONDS * index / procs
        self.loud_level = loud_level
        self.kernel_stamps = kernel_stamps
        self.tmp = tmp
        self.ep = select.epoll()
        self.ep.register(ctl.fileno(), select.EPOLLIN)
        self.calls: dict[int, _Call] = {}
        self.signals: dict[int, memoryview] = {}
        self.stop = False
        self.offset_real = time.time() - time.monotonic()
        self._reset()

    def _reset(self) -> None:
        self.t_reset = time.monotonic()
        self.cpu_reset = _cpu_seconds()
        self.tick_deadline = array("d")
        self.tick_late = array("f")
        """Per tick: how late the loop woke for it (s)."""
        self.tick_span = array("f")
        """Per tick: how late its last frame left (s): the lateness of the worst frame."""
        self.counts = dict.fromkeys(
            ("frames_sent", "frames_dropped", "short_writes", "frames_received", "loud_frames",
             "reads", "coalesced_reads", "ticks_skipped", "calls_added", "calls_ended"), 0)
        self.peak_calls = len(self.calls)

    def stats(self) -> dict[str, Any]:
        """This process's figures since the last reset: per tick deadlines (monotonic),
        lateness of the wake-up and of the tick's last frame (ms); counters (``coalesced_reads``:
        reads that completed more than one audio frame, whose earlier frames carry the later
        stamp); CPU time and wall time."""
        return {
            "index": self.index, "pid": os.getpid(),
            "cpus": sorted(os.sched_getaffinity(0)),
            "phase_ms": round(self.phase * 1000, 3),
            "kernel_stamps": self.kernel_stamps,
            "wall_s": time.monotonic() - self.t_reset,
            "cpu_s": _cpu_seconds() - self.cpu_reset,
            "calls_now": len(self.calls), "peak_calls": self.peak_calls,
            "tick_deadline": self.tick_deadline.tobytes(),
            "tick_late_ms": (np.frombuffer(self.tick_late.tobytes(), np.float32) * 1000).tobytes(),
            "tick_span_ms": (np.frombuffer(self.tick_span.tobytes(), np.float32) * 1000).tobytes(),
            **self.counts,
        }

    # the loop
    def run(self) -> None:
        self._send(("ready", os.getpid()))
        tick = self._next_grid(time.monotonic())
        while not self.stop:
            now = time.monotonic()
            if now >= tick:
                self._tick(tick, now)
                tick += FRAME_SECONDS
                after = time.monotonic()
                if after - tick > FRAME_SECONDS:  # fell behind: skip, never burst
                    nxt = self._next_grid(after)
                    self.counts["ticks_skipped"] += round((nxt - tick) / FRAME_SECONDS)
                    tick = nxt
                continue
            wait = tick - now
            if wait < 0.001:  # epoll waits whole milliseconds, rounded up: sleep the rest
                time.sleep(wait)
                continue
            events = self.ep.poll(wait - 0.001)
            if events:
                self._events(events)

    def _next_grid(self, t: float) -> float:
        """The first point of this process's grid (multiples of 20 ms + its phase) after ``t``."""
        return (math.floor((t - self.phase) / FRAME_SECONDS) + 1) * FRAME_SECONDS + self.phase

    def _tick(self, deadline: float, now: float) -> None:
        self.offset_real = time.time() - time.monotonic()
        sent = dropped = short = 0
        for call in tuple(self.calls.values()):
            if now >= call.end:
                self._finish(call, "caller_hangup", 0)
                continue
            sock = call.sock
            try:
                if call.rest is not None:  # complete a short write before the next frame
                    k = sock.send(call.rest)
                    if k < len(call.rest):
                        call.rest = call.rest[k:]
                        dropped += 1
                        continue
                    call.rest = None
                o = call.offset
                if o < len(call.wire):
                    frame: memoryview | bytes = call.wire[o : o + FRAME_WIRE]
                    call.offset = o + FRAME_WIRE
                else:
                    frame = _SILENCE_FRAME
                k = sock.send(frame)
            except BlockingIOError:
                dropped += 1  # the server does not read: the frame is lost, as on a channel
                continue
            except OSError as exc:
                self._finish(call, "sidecar_reset", -1, repr(exc))
                continue
            sent += 1
            call.sent += 1
            if k < FRAME_WIRE:
                call.rest = memoryview(frame)[k:]
                short += 1
        end = time.monotonic()
        self.tick_deadline.append(deadline)
        self.tick_late.append(now - deadline)
        self.tick_span.append(end - deadline)
        c = self.counts
        c["frames_sent"] += sent
        c["frames_dropped"] += dropped
        c["short_writes"] += short

    def _events(self, events: list[tuple[int, int]]) -> None:
        slin: list[bytes] = []
        owners: list[_Call] = []
        ends: list[tuple[_Call, str, int, str | None]] = []
        ctl_fd = self.ctl.fileno()
        for fd, _ev in events:
            if fd == ctl_fd:
                self._control()
                continue
            call = self.calls.get(fd)
            if call is not None:
                self._read(call, slin, owners, ends)
        if slin:  # loudness of every slin frame of the round at once
            x = np.frombuffer(b"".join(slin), dtype="<i2").reshape(len(slin), -1)
            loud = (x.max(axis=1) > self.loud_level) | (x.min(axis=1) < -self.loud_level)
            for i in np.flatnonzero(loud).tolist():
                owners[i].loud += 1
            self.counts["loud_frames"] += int(loud.sum())
        for end in ends:  # after the loudness: a call's result is final when it is sent
            self._finish(*end)

    def _read(self, call: _Call, slin: list[bytes], owners: list[_Call],
              ends: list[tuple[_Call, str, int, str | None]]) -> None:
        """One ``recvmsg`` on a call's socket; a call that ends is appended to ``ends``."""
        try:
            data, anc, _flags, _addr = call.sock.recvmsg(65536, _CMSG_SPACE)
        except BlockingIOError:
            return
        except OSError as exc:
            ends.append((call, "sidecar_reset", -1, repr(exc)))
            return
        if not data:
            ends.append((call, "sidecar_eof", 0, None))
            return
        if anc:
            sec, ns = _TIMESPEC.unpack(anc[0][2])
            t = sec + ns * 1e-9 - self.offset_real
        else:
            t = time.monotonic()
        self.counts["reads"] += 1
        if call.decoder is None and len(data) == FRAME_WIRE and data[:3] == _SLIN_HEADER:
            call.arrivals.append(t)  # the usual case: exactly one slin frame
            slin.append(data[3:])
            owners.append(call)
            self.counts["frames_received"] += 1
            return
        if call.decoder is None:
            call.decoder = AudioSocketDecoder()
        try:
            call.decoder.receive_data(data)
            msgs = call.decoder.events()
        except AudioSocketError as exc:
            ends.append((call, "protocol_error", -1, str(exc)))
            return
        frames = 0
        for msg in msgs:
            if isinstance(msg, AudioMessage):
                frames += 1
                call.arrivals.append(t)
                if msg.kind == Kind.AUDIO and len(msg.payload) == FRAME_BYTES:
                    slin.append(msg.payload)
                    owners.append(call)
            elif isinstance(msg, HangupMessage):
                call.hangup_by_sidecar = True
                ends.append((call, "sidecar_hangup", 0, None))
                break
        self.counts["frames_received"] += frames
        if frames > 1:
            self.counts["coalesced_reads"] += 1
        if call.decoder.buffered == 0:
            call.decoder = None  # back to the fast path

    def _control(self) -> None:
        while True:
            try:  # not socket.recv_fds: it drops its flags argument (Python 3.11)
                data, anc, _flags, _addr = self.ctl.recvmsg(
                    1 << 16, socket.CMSG_SPACE(4 * _FD_SIZE), socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            fds = [int(x) for lvl, typ, d in anc
                   if lvl == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS
                   for x in array("i", d[: len(d) - len(d) % _FD_SIZE])]
            if not data:
                self.stop = True
                return
            msg = pickle.loads(data)
            if msg[0] == "add":
                self._add(msg[1], msg[2], msg[3], fds[0])
            elif msg[0] == "signal":
                pcm = Path(msg[2]).read_bytes()
                self.signals[msg[1]] = memoryview(encode_caller(pcm))
            elif msg[0] == "stats":
                self._send(("stats", self.stats()))
                if msg[1]:
                    self._reset()
            elif msg[0] == "stop":
                self.stop = True
                return

    def _add(self, cid: int, sid: int, end: float, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.kernel_stamps:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            except OSError:
                self.kernel_stamps = False
        call = _Call(cid, sock, self.signals[sid], end, time.monotonic())
        self.calls[fd] = call
        self.ep.register(fd, select.EPOLLIN)
        self.counts["calls_added"] += 1
        self.peak_calls = max(self.peak_calls, len(self.calls))

    def _finish(self, call: _Call, closed_by: str, code: int, error: str | None = None) -> None:
        fd = call.sock.fileno()
        if self.calls.pop(fd, None) is None:
            return
        self.ep.unregister(fd)
        call.sock.close()
        self.counts["calls_ended"] += 1
        info = {"closed_by": closed_by, "result_code": code, "error": error,
                "hangup_sent_by_sidecar": call.hangup_by_sidecar,
                "arrivals": call.arrivals.tobytes(), "loud_frames": call.loud,
                "frames_sent": call.sent, "mono_ended": time.monotonic()}
        data = pickle.dumps(("done", call.cid, info))
        if len(data) > _BIG_RESULT:
            path = Path(self.tmp) / f"result-{self.index}-{call.cid}.pickle"
            path.write_bytes(pickle.dumps(info))
            data = pickle.dumps(("done_file", call.cid, str(path)))
        self._send(data)

    def _send(self, msg: object) -> None:
        self.ctl.send(msg if isinstance(msg, bytes) else pickle.dumps(msg))


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def worker_main(argv: Sequence[str]) -> None:
    """Entry of a generator process: ``--worker FD INDEX PROCS CPU|- LOUD STAMPS TMPDIR``."""
    fd, index, procs, cpu, loud, stamps, tmp = argv
    if cpu != "-":
        os.sched_setaffinity(0, {int(cpu)})
    ctl = socket.socket(fileno=int(fd))
    _Worker(ctl, int(index), int(procs), int(loud), stamps == "1", tmp).run()


if __name__ == "__main__":
    if len(sys.argv) == 9 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
    else:
        raise SystemExit("started by LoadEngine: --worker FD INDEX PROCS CPU LOUD STAMPS TMPDIR")
