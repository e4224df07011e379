"""Wire facts of the OpenAI Realtime API (GA) and the pure helpers the mock builds on.

Constants (formats, VAD defaults, the session keys a GA ``session.update`` may carry, the fixed
usage and rate-limit bodies), the input-audio decoding the VAD needs, the rendering of the reply
audio into base64 deltas, and the merge / validation rules of ``session.update``
(reference/providers.md 1.2-1.3). Nothing here does I/O.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from media_sidecar.dsp.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

if TYPE_CHECKING:
    from tests.mocks.openai_realtime.script import RealtimeScript

PCM24: dict[str, Any] = {"type": "audio/pcm", "rate": 24000}
FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
VAD_FRAME_MS = 20
MIN_COMMIT_MS = 100.0
SEND_TIMEOUT = 30.0
"""A send the peer does not drain within this long ends the session (it cannot be half-undone)."""
SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500,
    "idle_timeout_ms": None, "create_response": True, "interrupt_response": True,
}  # fmt: skip
SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad", "eagerness": "auto", "create_response": True, "interrupt_response": True,
}  # fmt: skip
SESSION_KEYS = frozenset({
    "type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
    "max_output_tokens", "include", "prompt", "reasoning", "parallel_tool_calls", "tracing",
    "truncation",
})  # fmt: skip
REPLACED = frozenset(
    {
        "format",
        "turn_detection",
        "transcription",
        "noise_reduction",
        "tools",
        "tool_choice",
        "tracing",
        "prompt",
        "truncation",
        "include",
        "reasoning",
    }
)
"""session.update fields that replace the current value as a whole instead of merging into it."""
HEADERS_OF_INTEREST = (
    "authorization",
    "api-key",
    "openai-beta",
    "openai-organization",
    "openai-project",
    "openai-safety-identifier",
    "user-agent",
)
USAGE: dict[str, Any] = {
    "total_tokens": 253, "input_tokens": 132, "output_tokens": 121,
    "input_token_details": {"text_tokens": 119, "audio_tokens": 13, "image_tokens": 0,
                            "cached_tokens": 64,
                            "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0,
                                                      "image_tokens": 0}},
    "output_token_details": {"text_tokens": 30, "audio_tokens": 91},
}  # fmt: skip
TRANSCRIPTION_USAGE: dict[str, Any] = {
    "type": "tokens", "input_tokens": 21, "output_tokens": 7, "total_tokens": 28,
    "input_token_details": {"text_tokens": 0, "audio_tokens": 21},
}  # fmt: skip
RATE_LIMITS: list[dict[str, Any]] = [
    {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
    {"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5},
]


# -- audio ----------------------------------------------------------------------------------------
def rate_of(fmt: dict[str, Any]) -> int:
    """Sample rate of a GA format object (PCM is 24 kHz only, G.711 8 kHz)."""
    return 24000 if fmt.get("type") == "audio/pcm" else 8000


def bytes_per_ms(fmt: dict[str, Any]) -> float:
    return 48.0 if fmt.get("type") == "audio/pcm" else 8.0


def decode(kind: str, raw: bytes) -> np.ndarray:
    """Input bytes in the given format as int16 samples at the format's rate."""
    if kind == "audio/pcmu":
        return ulaw_decode(raw)
    if kind == "audio/pcma":
        return alaw_decode(raw)
    return np.frombuffer(raw, dtype="<i2", count=len(raw) // 2)


@dataclass(frozen=True)
class Clip:
    chunks: tuple[tuple[str, float, int], ...]
    """(base64, ms, bytes) per delta."""


def render_clip(script: RealtimeScript, kind: str) -> Clip:
    """The reply audio in the output format, cut into ``chunk_ms`` deltas, base64-encoded."""
    if script.reply_pcm16_24k is not None:
        raw = script.reply_pcm16_24k
        pcm = np.frombuffer(raw, dtype="<i2", count=len(raw) // 2)
    else:
        t = np.arange(24 * script.reply_ms) / 24000.0
        pcm = (script.tone_amplitude * np.sin(2 * np.pi * script.tone_hz * t)).astype("<i2")
    if kind == "audio/pcm":
        data, per_ms = pcm.astype("<i2").tobytes(), 48
    else:  # 24k -> 8k: a 3-tap average is low-pass enough for a mock
        n = len(pcm) // 3 * 3
        pcm8 = np.rint(pcm[:n].astype(np.float32).reshape(-1, 3).mean(axis=1)).astype("<i2")
        data, per_ms = (ulaw_encode(pcm8) if kind == "audio/pcmu" else alaw_encode(pcm8)), 8
    step = max(1, script.chunk_ms * per_ms)
    chunks = tuple(
        (
            base64.b64encode(data[i : i + step]).decode("ascii"),
            len(data[i : i + step]) / per_ms,
            len(data[i : i + step]),
        )
        for i in range(0, len(data), step)
    )
    return Clip(chunks)


# -- session.update -------------------------------------------------------------------------------
def merge(base: dict[str, Any], patch: dict[str, Any]) -> None:
    """Merge a session.update into a (deep-copied) config: present fields only; whole objects
    such as formats and turn_detection are replaced; ``null`` clears."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key not in REPLACED:
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def validate_update(
    patch: dict[str, Any], *, voice_now: str, audio_sent: bool
) -> tuple[str, str, str] | None:
    """(code, message, param) of the first problem of a GA session.update, or None.
    ``voice_now`` and ``audio_sent``: the voice cannot change once assistant audio exists."""
    if "type" not in patch:
        return (
            "missing_required_parameter",
            "Missing required parameter: 'session.type'.",
            "session.type",
        )
    if patch["type"] != "realtime":
        return (
            "invalid_value",
            f"Invalid value: '{patch['type']}'. This mock supports 'realtime' sessions.",
            "session.type",
        )
    for key in patch:
        if key not in SESSION_KEYS:
            return "unknown_parameter", f"Unknown parameter: 'session.{key}'.", f"session.{key}"
    audio = patch.get("audio") or {}
    for side in ("input", "output"):
        fmt = (audio.get(side) or {}).get("format")
        if fmt is None:
            continue
        param = f"session.audio.{side}.format"
        if not isinstance(fmt, dict) or fmt.get("type") not in FORMATS:
            return "invalid_value", f"Invalid value for '{param}': {fmt!r}.", param
        if fmt["type"] == "audio/pcm" and fmt.get("rate", 24000) != 24000:
            return (
                "invalid_value",
                "Only a rate of 24000 is supported for audio/pcm.",
                f"{param}.rate",
            )
    td = (audio.get("input") or {}).get("turn_detection")
    if td is not None and (
        not isinstance(td, dict) or td.get("type") not in ("server_vad", "semantic_vad")
    ):
        param = "session.audio.input.turn_detection.type"
        return "invalid_value", f"Invalid value for '{param}': {td!r}.", param
    voice = (audio.get("output") or {}).get("voice")
    if voice is not None and audio_sent and voice != voice_now:
        return (
            "cannot_update_voice",
            "Cannot update a conversation's voice if assistant audio is present.",
            "session.audio.output.voice",
        )
    return None


def session_deviations(patch: dict[str, Any], model: str) -> list[str]:
    """What a session.update does against the documentation that the API's answer for is not
    recorded (so the mock notes it in ``problems`` rather than inventing an error event): a
    transcription language that is not ISO-639-1 (SDK 3.63 ``audio_transcription.py``), and
    ``reasoning`` for a model that is not a reasoning model ("such as gpt-realtime-2",
    ``realtime_reasoning.py``)."""
    found = []
    transcription = ((patch.get("audio") or {}).get("input") or {}).get("transcription")
    language = transcription.get("language") if isinstance(transcription, dict) else None
    if language is not None and not (isinstance(language, str) and len(language) == 2
                                     and language.isalpha() and language.islower()):
        found.append(f"transcription language {language!r} is not ISO-639-1")
    if "reasoning" in patch and not model.startswith("gpt-realtime-2"):
        found.append(f"session.reasoning sent to {model!r}, which is not a reasoning model")
    return found
