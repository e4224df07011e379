"""The emulator's AudioSocket side for hundreds of calls at once: a load generator.

:class:`~fastagi_server.emulator.audiosocket_side.AudioSocketSession` is exact but costs a few
trio tasks and wake-ups per call and frame; one core cannot drive more than a few dozen calls
with it without falling behind, and a late generator makes the sidecar look late. This engine
runs the AudioSocket side of every call in ONE thread with epoll and non-blocking sockets:

- every 20 ms, on one absolute grid, it sends each call's next caller frame (``10 01 40`` +
  320 bytes of slin, header and payload in one ``send``, as Asterisk does);
- in between it reads whatever the sidecar sent, decodes it with the product's sans-I/O
  AudioSocket codec, and stamps each audio frame with its arrival time (``time.monotonic``);
- at a call's end time it closes the socket (a caller hang-up is a TCP close) and soft-hangs
  up the emulated channel, so the AGI side sees ``HANGUP`` as with a real channel.

The FastAGI part of each call stays the emulator's own (``run_call(..., audio_runner=
engine.run_session)``); only the AudioSocket loop moves here. The engine also reports its own
lateness (how late it sent caller frames), which says whether the figures it took are sound.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import uuid as uuid_mod
from collections import deque
from dataclasses import dataclass, field

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
    encode_audio,
    encode_uuid,
)

_SILENCE_FRAME = encode_audio(bytes(FRAME_BYTES))


@dataclass(eq=False)
class LoadResult(AudioSocketResult):
    """An AudioSocket result with the generator's compact timing arrays (monotonic seconds)."""

    arrivals: list[float] = field(default_factory=list)
    """Arrival time of every audio frame from the sidecar."""
    loud: list[bool] = field(default_factory=list)
    """Per arrival: whether the frame carried sound (any sample over the threshold)."""
    send_late: list[float] = field(default_factory=list)
    """Per caller frame sent: seconds after its grid deadline."""
    mono_started: float = 0.0
    mono_ended: float = 0.0


@dataclass(eq=False)
class _Call:
    sock: socket.socket
    caller: bytes
    """The caller's whole audio (slin 8 kHz); silence after it."""
    end: float
    result: LoadResult
    done: trio.Event
    token: trio.lowlevel.TrioToken
    channel: EmulatedChannel
    decoder: AudioSocketDecoder = field(default_factory=AudioSocketDecoder)
    offset: int = 0


class LoadEngine:
    """Drives the AudioSocket side of many calls from one thread. Use as a context manager."""

    def __init__(self, loud_level: int = 300) -> None:
        self._ep = select.epoll()
        self._calls: dict[int, _Call] = {}
        self._adds: deque[_Call] = deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._ep.register(self._wake_r, select.EPOLLIN)
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="audiosocket-load", daemon=True)
        self._loud = loud_level
        self.tick_late: list[float] = []

    def __enter__(self) -> LoadEngine:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join(5)
        self._ep.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def runner(self, caller_pcm: bytes, seconds: float):  # noqa: ANN201 - an AudioRunner
        """An ``audio_runner`` for one call: ``caller_pcm`` then silence, hang-up after
        ``seconds``."""

        async def run(stream: trio.abc.Stream, ident: str, channel: EmulatedChannel
                      ) -> AudioSocketResult:
            return await self.run_session(stream, ident, channel, caller_pcm, seconds)

        return run

    async def run_session(self, stream: trio.abc.Stream, ident: str, channel: EmulatedChannel,
                          caller_pcm: bytes, seconds: float) -> AudioSocketResult:
        assert isinstance(stream, trio.SocketStream)
        res = LoadResult(ident)
        res.started_at = trio.current_time()
        await stream.send_all(encode_uuid(uuid_mod.UUID(ident)))
        sock = socket.socket(fileno=os.dup(stream.socket.fileno()))
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        res.mono_started = time.monotonic()
        call = _Call(sock, caller_pcm, res.mono_started + seconds, res, trio.Event(),
                     trio.lowlevel.current_trio_token(), channel)
        self._adds.append(call)
        os.write(self._wake_w, b"a")
        try:
            await call.done.wait()
        finally:
            await trio.aclose_forcefully(stream)
        res.ended_at = trio.current_time()
        if res.closed_by == "caller_hangup":
            channel.hangup(16)
        return res

    # -- the engine thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        tick = time.monotonic()
        while not self._stop:
            now = time.monotonic()
            if now >= tick:
                self.tick_late.append(now - tick)
                self._tick(tick, now)
                tick += FRAME_SECONDS
                if time.monotonic() - tick > FRAME_SECONDS:  # fell behind: skip, never burst
                    tick = time.monotonic()
                continue
            for fd, _ev in self._ep.poll(max(0.0, tick - time.monotonic())):
                if fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                    self._take_adds()
                    continue
                call = self._calls.get(fd)
                if call is not None:
                    self._read(call, time.monotonic())

    def _take_adds(self) -> None:
        while self._adds:
            call = self._adds.popleft()
            fd = call.sock.fileno()
            self._calls[fd] = call
            self._ep.register(fd, select.EPOLLIN)

    def _tick(self, deadline: float, now: float) -> None:
        for call in list(self._calls.values()):
            if now >= call.end:
                self._finish(call, "caller_hangup", 0)
                continue
            chunk = call.caller[call.offset:call.offset + FRAME_BYTES]
            call.offset += FRAME_BYTES
            frame = encode_audio(chunk + bytes(FRAME_BYTES - len(chunk))) if chunk else _SILENCE_FRAME
            try:
                call.sock.send(frame)
            except BlockingIOError:
                continue  # the sidecar does not read: the frame is lost, as on a real channel
            except OSError as exc:
                self._finish(call, "sidecar_reset", -1, repr(exc))
                continue
            call.result.send_late.append(time.monotonic() - deadline)

    def _read(self, call: _Call, now: float) -> None:
        try:
            data = call.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._finish(call, "sidecar_reset", -1, repr(exc))
            return
        if not data:
            self._finish(call, "sidecar_eof", 0)
            return
        try:
            call.decoder.receive_data(data)
            msgs = call.decoder.events()
        except AudioSocketError as exc:
            self._finish(call, "protocol_error", -1, str(exc))
            return
        res = call.result
        for msg in msgs:
            if isinstance(msg, AudioMessage):
                res.arrivals.append(now)
                peak = int(np.abs(np.frombuffer(msg.payload, dtype="<i2")).max(initial=0))
                res.loud.append(peak > self._loud)
            elif isinstance(msg, HangupMessage):
                res.hangup_sent_by_sidecar = True
                self._finish(call, "sidecar_hangup", 0)
                return

    def _finish(self, call: _Call, closed_by: str, code: int, error: str | None = None) -> None:
        fd = call.sock.fileno()
        if self._calls.pop(fd, None) is None:
            return
        self._ep.unregister(fd)
        call.sock.close()
        res = call.result
        res.closed_by = closed_by  # type: ignore[assignment]
        res.result_code = code
        res.error = error
        res.mono_ended = time.monotonic()
        try:
            call.token.run_sync_soon(call.done.set)
        except trio.RunFinishedError:
            pass
