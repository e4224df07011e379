"""Sans-I/O AudioSocket codec.

Wire format (res_audiosocket.h, confirmed on Asterisk 22.10.1): ``kind:u8 | length:u16 BE |
payload``. Bytes go in with :meth:`AudioSocketDecoder.receive_data`, typed messages come out of
:meth:`AudioSocketDecoder.events`; :func:`encode_audio` and :func:`encode_hangup` produce whole
frames (header and payload together: Asterisk tears the session down when a payload follows its
header by more than 5 ms, so the shell must send each returned ``bytes`` in one call).

The decoder never guesses the audio codec from the kind byte: with ``Dial(AudioSocket/...,
c(ulaw))`` Asterisk still sends kind 0x10 carrying mu-law. The payload codec is a per-call fact
the caller passes to :class:`AudioFormat`; the decoder only reports the kind and the bytes.
"""

from __future__ import annotations

import enum
import uuid
from collections import deque
from dataclasses import dataclass

HEADER_LEN = 3
MAX_WIRE_PAYLOAD = 0xFFFF
DEFAULT_MAX_PAYLOAD = 4096
"""Default cap on an inbound payload. 20 ms at 192 kHz slin is 7680 bytes; Asterisk sends one
channel voice frame per message (320 bytes for 20 ms at 8 kHz). Raise it for high-rate legs."""


class Kind(enum.IntEnum):
    HANGUP = 0x00
    UUID = 0x01
    DTMF = 0x03
    AUDIO = 0x10  # "slin 8 kHz", but see the module docstring: may carry G.711
    AUDIO_SLIN12 = 0x11
    AUDIO_SLIN16 = 0x12
    AUDIO_SLIN24 = 0x13
    AUDIO_SLIN32 = 0x14
    AUDIO_SLIN44 = 0x15
    AUDIO_SLIN48 = 0x16
    AUDIO_SLIN96 = 0x17
    AUDIO_SLIN192 = 0x18
    ERROR = 0xFF


AUDIO_KIND_RATES: dict[int, int] = {
    Kind.AUDIO: 8000,
    Kind.AUDIO_SLIN12: 12000,
    Kind.AUDIO_SLIN16: 16000,
    Kind.AUDIO_SLIN24: 24000,
    Kind.AUDIO_SLIN32: 32000,
    Kind.AUDIO_SLIN44: 44100,
    Kind.AUDIO_SLIN48: 48000,
    Kind.AUDIO_SLIN96: 96000,
    Kind.AUDIO_SLIN192: 192000,
}
RATE_AUDIO_KINDS: dict[int, int] = {rate: kind for kind, rate in AUDIO_KIND_RATES.items()}
DTMF_DIGITS = frozenset("0123456789*#ABCD")


class AudioSocketError(Exception):
    """A protocol violation by the peer. It ends that connection only."""


class PayloadTooLarge(AudioSocketError):
    pass


class UnknownKind(AudioSocketError):
    pass


class BadPayload(AudioSocketError):
    pass


class Codec(enum.Enum):
    SLIN = "slin"
    ULAW = "ulaw"
    ALAW = "alaw"


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """What the audio payload of one call really is (known per call, never guessed)."""

    codec: Codec = Codec.SLIN
    rate: int = 8000

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.codec is Codec.SLIN else 1

    @property
    def frame_bytes(self) -> int:
        """Bytes of one 20 ms frame in this format."""
        return self.rate // 50 * self.bytes_per_sample

    @property
    def wire_kind(self) -> int:
        """The kind byte to send audio of this format with."""
        if self.codec is not Codec.SLIN:
            return int(Kind.AUDIO)
        try:
            return RATE_AUDIO_KINDS[self.rate]
        except KeyError:
            raise ValueError(f"no AudioSocket kind carries slin at {self.rate} Hz") from None

    @classmethod
    def parse(cls, text: str) -> AudioFormat:
        """Parse ``slin``, ``slin16``, ``ulaw``, ``alaw`` (Asterisk format names)."""
        t = text.strip().lower()
        if t in ("ulaw", "mulaw", "pcmu"):
            return cls(Codec.ULAW, 8000)
        if t in ("alaw", "pcma"):
            return cls(Codec.ALAW, 8000)
        if t in _SLIN_NAMES:
            return cls(Codec.SLIN, _SLIN_NAMES[t])
        raise ValueError(f"unknown audio format {text!r} (expected slin, slin16, ulaw or alaw)")


_SLIN_NAMES = {
    "slin": 8000, "slin8": 8000, "slin12": 12000, "slin16": 16000, "slin24": 24000,
    "slin32": 32000, "slin44": 44100, "slin48": 48000, "slin96": 96000, "slin192": 192000,
}

# ---- typed messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UuidMessage:
    uuid: uuid.UUID


@dataclass(frozen=True, slots=True)
class DtmfMessage:
    digit: str


@dataclass(frozen=True, slots=True)
class AudioMessage:
    kind: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class HangupMessage:
    pass


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    code: int | None


Message = UuidMessage | DtmfMessage | AudioMessage | HangupMessage | ErrorMessage


class AudioSocketDecoder:
    """Bytes in, typed messages out. Any split of a byte stream yields the same messages.

    A violation raises :class:`AudioSocketError` from :meth:`receive_data`; the decoder is then
    unusable (the connection must be closed).
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if not 0 < max_payload <= MAX_WIRE_PAYLOAD:
            raise ValueError(f"max_payload must be 1..{MAX_WIRE_PAYLOAD}, got {max_payload}")
        self.max_payload = max_payload
        self._buf = bytearray()
        self._events: deque[Message] = deque()
        self._broken: AudioSocketError | None = None

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the socket. Raises AudioSocketError on a malformed frame."""
        if self._broken is not None:
            raise self._broken
        self._buf += data
        try:
            self._parse()
        except AudioSocketError as exc:
            self._broken = exc
            raise

    def events(self) -> list[Message]:
        """Return and forget the messages decoded so far."""
        out = list(self._events)
        self._events.clear()
        return out

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buf)

    def _parse(self) -> None:
        buf = self._buf
        while len(buf) >= HEADER_LEN:
            kind = buf[0]
            length = (buf[1] << 8) | buf[2]
            self._check_header(kind, length)
            if len(buf) < HEADER_LEN + length:
                return
            payload = bytes(buf[HEADER_LEN : HEADER_LEN + length])
            del buf[: HEADER_LEN + length]
            self._events.append(self._message(kind, payload))

    def _check_header(self, kind: int, length: int) -> None:
        if kind not in _KNOWN_KINDS:
            raise UnknownKind(f"AudioSocket kind 0x{kind:02x} is not a known message kind")
        if length > self.max_payload:
            raise PayloadTooLarge(
                f"AudioSocket payload {length} > {self.max_payload} bytes (kind 0x{kind:02x})"
            )
        if kind in AUDIO_KIND_RATES and length == 0:
            raise BadPayload(f"AudioSocket audio frame (kind 0x{kind:02x}) with empty payload")
        if kind == Kind.UUID and length != 16:
            raise BadPayload(f"AudioSocket UUID payload must be 16 bytes, got {length}")
        if kind == Kind.DTMF and length != 1:
            raise BadPayload(f"AudioSocket DTMF payload must be 1 byte, got {length}")
        if kind == Kind.HANGUP and length != 0:
            raise BadPayload(f"AudioSocket hangup with a {length}-byte payload")

    @staticmethod
    def _message(kind: int, payload: bytes) -> Message:
        if kind in AUDIO_KIND_RATES:
            return AudioMessage(kind, payload)
        if kind == Kind.UUID:
            return UuidMessage(uuid.UUID(bytes=payload))
        if kind == Kind.DTMF:
            digit = chr(payload[0])
            if digit not in DTMF_DIGITS:
                raise BadPayload(f"AudioSocket DTMF byte 0x{payload[0]:02x} is not a DTMF digit")
            return DtmfMessage(digit)
        if kind == Kind.HANGUP:
            return HangupMessage()
        return ErrorMessage(payload[0] if payload else None)


_KNOWN_KINDS = frozenset(int(k) for k in Kind)


def _frame(kind: int, payload: bytes) -> bytes:
    if len(payload) > MAX_WIRE_PAYLOAD:
        raise ValueError(f"AudioSocket payload {len(payload)} > {MAX_WIRE_PAYLOAD} bytes")
    return bytes((kind, len(payload) >> 8, len(payload) & 0xFF)) + payload


def encode_audio(payload: bytes, kind: int = Kind.AUDIO) -> bytes:
    """One whole audio frame. Asterisk hangs up on an empty audio payload, so that is refused."""
    if kind not in AUDIO_KIND_RATES:
        raise ValueError(f"kind 0x{kind:02x} is not an audio kind")
    if not payload:
        raise ValueError("an AudioSocket audio frame must not be empty (Asterisk hangs up)")
    return _frame(kind, payload)


def encode_hangup() -> bytes:
    """``00 00 00``: hands the call back to the dialplan (the app returns 0)."""
    return b"\x00\x00\x00"


# Asterisk-side encoders: used by the emulator; the sidecar never sends these kinds.
def encode_uuid(value: uuid.UUID | str) -> bytes:
    u = value if isinstance(value, uuid.UUID) else uuid.UUID(value)
    return _frame(Kind.UUID, u.bytes)


def encode_dtmf(digit: str) -> bytes:
    if len(digit) != 1 or digit not in DTMF_DIGITS:
        raise ValueError(f"{digit!r} is not a DTMF digit")
    return _frame(Kind.DTMF, digit.encode("ascii"))


def encode_error(code: int | None = None) -> bytes:
    return _frame(Kind.ERROR, b"" if code is None else bytes((code,)))
