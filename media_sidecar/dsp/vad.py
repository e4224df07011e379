"""Voice activity and turn taking on the caller's 8 kHz audio.

Two layers, kept apart so the second can be tested with plain booleans:

* :class:`VoiceDetector` classifies one 20 ms slin frame as speech or not: WebRTC's VAD
  (package ``webrtcvad-wheels``) behind an energy floor, because WebRTC's VAD alone calls low
  line noise and even digital silence "speech" now and then.
* :class:`TurnDetector` is a pure state machine over those per-frame decisions: it declares
  when the caller started speaking (after ``start_ms`` of consecutive voiced frames) and when
  the utterance ended (after ``end_ms`` of unvoiced frames, or of frame time: a leg that loses
  or suppresses frames still ends on the clock), and hands back the utterance audio for
  speech-to-text. It keeps no clock of its own; the caller passes each frame's time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import webrtcvad

from ..config.schema import VadConfig
from ..constants import FRAME_BYTES, FRAME_MS, FRAME_SECONDS, SAMPLE_RATE
from .levels import dbfs

__all__ = ["SpeechEnded", "SpeechStarted", "TurnDetector", "TurnEvent", "VoiceDetector"]

PRE_ROLL_MS = 200
"""Audio kept from before the first voiced frame, so STT hears the onset of the first word."""
POST_ROLL_MS = 200
"""Unvoiced audio kept after the last voiced frame (the rest of the hangover is dropped)."""
MAX_UTTERANCE_MS = 30_000
"""An utterance is cut (ended) after this long, so one monologue cannot grow without bound."""
_EPS = 1e-9  # frame times are t0 + k * 0.02: tolerate float rounding


def _check_frame(frame: bytes) -> None:
    if len(frame) != FRAME_BYTES:
        raise ValueError(
            f"VAD frames must be {FRAME_BYTES} bytes ({FRAME_MS} ms of 8 kHz slin),"
            f" got {len(frame)}"
        )


class VoiceDetector:
    """Per-frame speech decision for one call: WebRTC VAD gated by an energy floor.

    A frame quieter than ``min_energy_dbfs`` is never speech, whatever WebRTC says. Holds
    WebRTC's adaptive state, so use one instance per call and feed frames in order.
    """

    def __init__(self, cfg: VadConfig | None = None) -> None:
        """Use ``cfg.aggressiveness`` (0-3) and ``cfg.min_energy_dbfs``; defaults if None.

        Raises ValueError if the aggressiveness is not 0..3.
        """
        cfg = cfg if cfg is not None else VadConfig()
        if cfg.aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"VAD aggressiveness must be 0, 1, 2 or 3, got {cfg.aggressiveness}")
        self._vad = webrtcvad.Vad(cfg.aggressiveness)
        self.min_energy_dbfs = cfg.min_energy_dbfs

    def is_speech(self, frame: bytes) -> bool:
        """True if the 20 ms 8 kHz slin ``frame`` holds speech.

        Raises ValueError if ``frame`` is not exactly one frame (320 bytes).
        """
        _check_frame(frame)
        if dbfs(frame) < self.min_energy_dbfs:
            return False
        return bool(self._vad.is_speech(frame, SAMPLE_RATE))


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started speaking; ``t_start`` is the time of the first voiced frame."""

    t_start: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The caller's utterance ended.

    ``t_end`` is the end of the last voiced frame. ``audio`` is the utterance as slin bytes:
    up to :data:`PRE_ROLL_MS` before the first voiced frame, the speech, and up to
    :data:`POST_ROLL_MS` after the last voiced frame.
    """

    t_end: float
    audio: bytes


TurnEvent = SpeechStarted | SpeechEnded


class TurnDetector:
    """Turn-taking state machine fed one 20 ms frame and its speech decision at a time.

    Idle: a run of consecutive voiced frames lasting ``cfg.start_ms`` declares
    :class:`SpeechStarted` (a shorter run, a click or a cough, is forgotten). In speech:
    ``cfg.end_ms`` of consecutive unvoiced frames declares :class:`SpeechEnded` and returns to
    idle, and so does an unvoiced frame stamped ``cfg.end_ms`` or more after the last voiced
    one (frames lost or suppressed on the way do not stretch the hangover); so does an
    utterance reaching :data:`MAX_UTTERANCE_MS`. Pure: no I/O, no clock.
    """

    def __init__(self, cfg: VadConfig, *, max_utterance_ms: int = MAX_UTTERANCE_MS) -> None:
        """Raises ValueError if ``cfg.start_ms`` or ``cfg.end_ms`` is not positive."""
        if cfg.start_ms <= 0 or cfg.end_ms <= 0:
            raise ValueError(
                f"vad start_ms and end_ms must be positive, got {cfg.start_ms}, {cfg.end_ms}"
            )
        self._start_frames = -(-cfg.start_ms // FRAME_MS)
        self._end_frames = -(-cfg.end_ms // FRAME_MS)
        self._end_seconds = self._end_frames * FRAME_SECONDS
        self._max_frames = max(1, max_utterance_ms // FRAME_MS)
        self._pre_roll_frames = PRE_ROLL_MS // FRAME_MS
        self._post_roll_frames = POST_ROLL_MS // FRAME_MS
        self.reset()

    def reset(self) -> None:
        """Drop any run or utterance in progress and go idle (no event is emitted)."""
        self._idle_frames: deque[bytes] = deque(maxlen=self._pre_roll_frames)
        self._frames: list[bytes] = []  # the candidate run or utterance, pre-roll excluded
        self._pre_roll: list[bytes] = []
        self._in_speech = False
        self._t_start = 0.0
        self._t_last_voiced = 0.0
        self._voiced_span = 0  # frames from the first to the last voiced frame, inclusive
        self._unvoiced_run = 0

    @property
    def in_speech(self) -> bool:
        """True between SpeechStarted and SpeechEnded."""
        return self._in_speech

    @property
    def speech_ms(self) -> int:
        """How long the current speech has lasted so far, in ms.

        Measured from the first to the last voiced frame of the run in progress (declared or
        not yet), so the end-of-speech hangover does not count; 0 when there is none.
        """
        return self._voiced_span * FRAME_MS

    def push(self, is_speech: bool, frame: bytes, t: float) -> list[TurnEvent]:
        """Feed one frame, its speech decision and its start time; returns the events it causes.

        Frames must be pushed in order, every 20 ms of audio, with non-decreasing times (gaps in
        the times count as unvoiced time for the end of speech). Raises ValueError if ``frame``
        is not exactly one 320-byte slin frame.
        """
        _check_frame(frame)
        if self._in_speech:
            return self._push_speaking(is_speech, frame, t)
        return self._push_idle(is_speech, frame, t)

    def _push_idle(self, is_speech: bool, frame: bytes, t: float) -> list[TurnEvent]:
        if not is_speech:
            if self._frames:  # a voiced run too short to count: back into the pre-roll
                self._idle_frames.extend(self._frames)
                self._frames = []
                self._voiced_span = 0
            self._idle_frames.append(frame)
            return []
        if not self._frames:
            self._t_start = t
            self._pre_roll = list(self._idle_frames)
        self._frames.append(frame)
        self._voiced_span += 1
        self._t_last_voiced = t
        if len(self._frames) < self._start_frames:
            return []
        self._in_speech = True
        self._unvoiced_run = 0
        return [SpeechStarted(self._t_start)]

    def _push_speaking(self, is_speech: bool, frame: bytes, t: float) -> list[TurnEvent]:
        self._frames.append(frame)
        if is_speech:
            self._unvoiced_run = 0
            self._voiced_span = len(self._frames)
            self._t_last_voiced = t
        else:
            self._unvoiced_run += 1
        if (self._unvoiced_run >= self._end_frames or len(self._frames) >= self._max_frames
                or (not is_speech and t - self._t_last_voiced >= self._end_seconds - _EPS)):
            return [self._end()]
        return []

    def _end(self) -> SpeechEnded:
        kept = self._voiced_span + min(self._unvoiced_run, self._post_roll_frames)
        audio = b"".join(self._pre_roll) + b"".join(self._frames[:kept])
        event = SpeechEnded(self._t_last_voiced + FRAME_SECONDS, audio)
        trailing = self._frames[self._voiced_span :]
        self.reset()
        # The hangover frames are recent history for the next utterance's pre-roll.
        self._idle_frames.extend(trailing)
        return event
