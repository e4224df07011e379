"""One inference process of the pool: loads the speech engines once, then answers requests.

Started by :class:`~media_sidecar.speech.pool.InferencePool` as
``python -m media_sidecar.speech.worker MODULE THREADS NICE REQUEST_FD ANSWER_FD`` (a fresh
interpreter, never a ``fork`` of the media process, which runs trio and threads). It speaks
:mod:`~media_sidecar.speech.wire` over two pipes with blocking I/O: one request at a time,
and between two chunks of a synthesis it looks for a CANCEL without waiting for one.

The engines come from ``module``'s ``make_stt(SttConfig)`` and ``make_tts(TtsConfig)``
(:mod:`media_sidecar.speech` in production; tests name a fake module that needs no model) and
its optional ``set_threads(n)``, called before anything loads. Synthesised audio is resampled
to slin 8 kHz here (one resampler per sentence), so the media process only copies it into
frames.

The process ignores SIGINT and SIGTERM: a terminal's Ctrl-C and a service manager's SIGTERM
to the whole group mean "drain" to the media process, whose live calls still need their
speech. It exits when its request pipe closes: the media process closed the pool, or died (the
kernel closes its end; a request being run finishes first). No ``PR_SET_PDEATHSIG``: it
fires when the *thread* that started the process ends, and the pool starts processes from
trio's worker threads, which end after a few idle seconds.
"""

from __future__ import annotations

import importlib
import os
import select
import signal
import sys
import time
from collections import deque
from typing import Any

import numpy as np

from ..config.schema import SttConfig, TtsConfig
from ..dsp.resample import Resampler
from .wire import Decoder, Kind, Message, WireError, encode

__all__ = ["main"]

READ_SIZE = 1 << 16


class _Pipe:
    """Blocking framed I/O on the two pipe ends."""

    def __init__(self, requests: int, answers: int) -> None:
        self.requests, self.answers = requests, answers
        self.decoder = Decoder()
        self.backlog: deque[Message] = deque()
        self.closed = False

    def _read(self) -> bool:
        """Read what the pipe holds (blocking until something does). False at end of file."""
        data = os.read(self.requests, READ_SIZE)
        if not data:
            self.closed = True
            return False
        self.backlog.extend(self.decoder.feed(data))
        return True

    def next(self) -> Message | None:
        """The next request, waiting for it; None when the pipe closed."""
        while not self.backlog:
            if not self._read():
                return None
        return self.backlog.popleft()

    def cancelled(self, request_id: int) -> bool:
        """Whether a CANCEL for ``request_id`` has arrived, or the pipe closed (without
        waiting). Other requests read meanwhile stay queued in order."""
        while select.select([self.requests], [], [], 0.0)[0]:
            if not self._read():
                return True
        hit = False
        for m in list(self.backlog):
            if m.kind == Kind.CANCEL:
                self.backlog.remove(m)
                hit = hit or m.id == request_id
        return hit

    def send(self, kind: Kind, request_id: int, meta: dict[str, Any] | None = None,
             payload: bytes = b"") -> None:
        data = memoryview(encode(kind, request_id, meta, payload))
        while data:
            n = os.write(self.answers, data)
            data = data[n:]


class _Engines:
    def __init__(self, module: Any) -> None:
        self.module = module
        self.stt: dict[str, Any] = {}
        self.tts: dict[str, Any] = {}

    def load(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Load every engine ``meta`` names that is not loaded yet; returns the READY meta
        with each failure's message under ``errors``."""
        t0 = time.monotonic()
        errors: dict[str, str] = {}
        for key, cfg in (meta.get("stt") or {}).items():
            if key not in self.stt:
                try:
                    self.stt[key] = engine = self.module.make_stt(SttConfig(**cfg))
                    warm = getattr(engine, "warm", None)
                    if warm is not None:  # its first run before the first caller's
                        warm()
                except Exception as exc:  # an engine's own errors: reported, process lives
                    errors[key] = str(exc) or type(exc).__name__
        for key, cfg in (meta.get("tts") or {}).items():
            if key not in self.tts:
                try:
                    self.tts[key] = self.module.make_tts(TtsConfig(**cfg))
                except Exception as exc:
                    errors[key] = str(exc) or type(exc).__name__
        return {"pid": os.getpid(), "engines": sorted([*self.stt, *self.tts]),
                "errors": errors, "load_ms": round((time.monotonic() - t0) * 1000, 1)}


def _transcribe(pipe: _Pipe, engines: _Engines, m: Message) -> None:
    engine = engines.stt.get(m.meta.get("engine", ""))
    if engine is None:
        pipe.send(Kind.ERROR, m.id, {"error": f"STT engine {m.meta.get('engine')!r} not loaded"})
        return
    t0 = time.monotonic()
    try:
        text = engine.transcribe(np.frombuffer(m.payload, dtype="<i2"),
                                 int(m.meta.get("rate", 8000)))
    except Exception as exc:  # SpeechEngineError and the engine's own: the request fails
        pipe.send(Kind.ERROR, m.id, {"error": str(exc) or type(exc).__name__})
        return
    pipe.send(Kind.TEXT, m.id, {"text": str(text),
                                "ms": round((time.monotonic() - t0) * 1000, 1)})


def _score(pipe: _Pipe, engines: _Engines, m: Message) -> None:
    engine = engines.stt.get(m.meta.get("engine", ""))
    score = getattr(engine, "score", None)
    if score is None:
        why = "not loaded" if engine is None else "cannot score texts"
        pipe.send(Kind.ERROR, m.id, {"error": f"STT engine {m.meta.get('engine')!r} {why}"})
        return
    t0 = time.monotonic()
    try:
        texts = [str(t) for t in m.meta.get("texts") or []]
        scores = score(np.frombuffer(m.payload, dtype="<i2"), int(m.meta.get("rate", 8000)),
                       texts)
    except Exception as exc:  # SpeechEngineError and the engine's own: the request fails
        pipe.send(Kind.ERROR, m.id, {"error": str(exc) or type(exc).__name__})
        return
    pipe.send(Kind.SCORES, m.id, {"scores": [round(float(x), 4) for x in scores],
                                  "ms": round((time.monotonic() - t0) * 1000, 1)})


def _synthesize(pipe: _Pipe, engines: _Engines, m: Message) -> None:
    engine = engines.tts.get(m.meta.get("engine", ""))
    if engine is None:
        pipe.send(Kind.ERROR, m.id, {"error": f"TTS engine {m.meta.get('engine')!r} not loaded"})
        return
    t0 = time.monotonic()
    resampler = Resampler(int(engine.rate), 8000) if int(engine.rate) != 8000 else None
    chunks = iter(engine.synthesize(str(m.meta.get("text", ""))))
    cancelled = False
    try:
        while not (cancelled := pipe.cancelled(m.id)):
            try:
                chunk = next(chunks)
            except StopIteration:
                break
            pcm = np.asarray(chunk, dtype=np.int16)
            if resampler is not None:
                pcm = resampler.process(pcm)
            if pcm.size:
                pipe.send(Kind.AUDIO, m.id, None, pcm.astype("<i2").tobytes())
        if resampler is not None and not cancelled:
            tail = resampler.flush()
            if tail.size:
                pipe.send(Kind.AUDIO, m.id, None, tail.astype("<i2").tobytes())
    except Exception as exc:  # SpeechEngineError and the engine's own: the request fails
        pipe.send(Kind.ERROR, m.id, {"error": str(exc) or type(exc).__name__})
        return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    pipe.send(Kind.DONE, m.id, {"ms": round((time.monotonic() - t0) * 1000, 1),
                                "cancelled": cancelled})


def _setup_process(threads: int, nice: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    # onnxruntime reads these when its first session is made; set before any engine loads.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def main(module_name: str, threads: int, nice: int, req_fd: int, ans_fd: int) -> None:
    """The process's body. Returns when the request pipe closes; a malformed request stream
    ends the process (the pool replaces it)."""
    _setup_process(threads, nice)
    module = importlib.import_module(module_name)
    set_threads = getattr(module, "set_threads", None)
    if set_threads is not None:
        set_threads(threads)
    pipe = _Pipe(req_fd, ans_fd)
    engines = _Engines(module)
    try:
        while (m := pipe.next()) is not None:
            if m.kind == Kind.LOAD:
                pipe.send(Kind.READY, m.id, engines.load(m.meta))
            elif m.kind == Kind.STT:
                _transcribe(pipe, engines, m)
            elif m.kind == Kind.TTS:
                _synthesize(pipe, engines, m)
            elif m.kind == Kind.SCORE:
                _score(pipe, engines, m)
            # a CANCEL for a request already answered: nothing to do
    except (WireError, BrokenPipeError) as exc:
        print(f"inference process {os.getpid()}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    _module, _threads, _nice, _req, _ans = sys.argv[1:6]
    main(_module, int(_threads), int(_nice), int(_req), int(_ans))
