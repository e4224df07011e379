"""The inference pool's wire: requests from the media process to an inference process and the
answers back, over one pipe each way. Sans-I/O (bytes in, messages out); both ends use it.

A message is a 13-byte header, ``!BIII``: kind, request id, length of the JSON meta, length of
the binary payload; then the meta (a UTF-8 JSON object) and the payload. Requests:

========  =========================================  ==========================================
kind      meta                                       payload
========  =========================================  ==========================================
LOAD      ``{"stt": {key: cfg}, "tts": {key: cfg}}`` none: load these engines (first message)
STT       ``{"engine": key, "rate": 8000}``          int16 little-endian mono PCM
TTS       ``{"engine": key, "text": "..."}``         none
SCORE     ``{"engine": key, "rate": 8000,            int16 little-endian mono PCM: score each
          "texts": [...]}``                          text against it (acoustic re-scoring)
CANCEL    ``{}``                                     none: stop request ``id`` (TTS: after the
                                                     chunk being synthesised)
========  =========================================  ==========================================

Answers, each with the id of the request it answers:

========  =========================================  ==========================================
READY     ``{"pid", "engines", "load_ms"}``          LOAD done
TEXT      ``{"text", "ms"}``                         STT done (``ms``: inference time)
SCORES    ``{"scores": [...], "ms"}``                SCORE done: one per text, in order, then
                                                     the engine's own transcript's
AUDIO     ``{}``                                     a chunk of slin 8 kHz (TTS goes on)
DONE      ``{"ms", "cancelled"}``                    TTS done
ERROR     ``{"error"}``                              the request failed (the process lives on)
========  =========================================  ==========================================

An inference process runs one request at a time; the pool sends the next only after the
previous one's TEXT, SCORES, DONE or ERROR, except CANCEL, which may come at any time (one for a
request already finished is ignored).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

__all__ = ["HEADER", "MAX_META", "MAX_PAYLOAD", "Decoder", "Kind", "Message", "WireError",
           "encode"]

HEADER = struct.Struct("!BIII")
MAX_META = 1 << 20
"""1 MiB of JSON: a LOAD of many engines, or a long sentence, stays far below it."""
MAX_PAYLOAD = 64 << 20
"""64 MiB: 30 minutes of 16 kHz PCM; a caller utterance is capped far below by the VAD."""


class Kind(IntEnum):
    LOAD = 1
    STT = 2
    TTS = 3
    CANCEL = 4
    SCORE = 5
    READY = 10
    TEXT = 11
    AUDIO = 12
    DONE = 13
    ERROR = 14
    SCORES = 15


TERMINAL = frozenset({Kind.READY, Kind.TEXT, Kind.SCORES, Kind.DONE, Kind.ERROR})
"""Answers after which the process takes its next request."""


class WireError(ValueError):
    """A malformed message: the pipe is out of step and its process must be replaced."""


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    id: int
    meta: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""


def encode(kind: Kind, request_id: int, meta: dict[str, Any] | None = None,
           payload: bytes = b"") -> bytes:
    """One message as bytes. Raises WireError for a meta or payload over its limit."""
    raw = json.dumps(meta or {}, separators=(",", ":")).encode("utf-8")
    if len(raw) > MAX_META or len(payload) > MAX_PAYLOAD:
        raise WireError(f"message too large: meta {len(raw)} B, payload {len(payload)} B")
    return HEADER.pack(int(kind), request_id, len(raw), len(payload)) + raw + payload


class Decoder:
    """Bytes in, whole messages out; any split of the stream gives the same messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """The messages ``data`` completes. Raises WireError for an unknown kind, a length
        over its limit or meta that is not a JSON object."""
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= HEADER.size:
            kind, rid, meta_len, payload_len = HEADER.unpack_from(self._buf)
            if meta_len > MAX_META or payload_len > MAX_PAYLOAD:
                raise WireError(f"message lengths {meta_len}/{payload_len} over the limit")
            try:
                k = Kind(kind)
            except ValueError:
                raise WireError(f"unknown message kind {kind}") from None
            end = HEADER.size + meta_len + payload_len
            if len(self._buf) < end:
                break
            raw = bytes(self._buf[HEADER.size:HEADER.size + meta_len])
            payload = bytes(self._buf[HEADER.size + meta_len:end])
            del self._buf[:end]
            try:
                meta = json.loads(raw) if raw else {}
            except ValueError as exc:
                raise WireError(f"message meta is not JSON: {exc}") from None
            if not isinstance(meta, dict):
                raise WireError("message meta is not a JSON object")
            out.append(Message(k, rid, meta, payload))
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self._buf)
