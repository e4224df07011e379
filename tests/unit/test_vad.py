"""Voice detection (WebRTC VAD behind an energy floor) and the turn-taking state machine."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from media_sidecar.config.schema import VadConfig
from media_sidecar.constants import FRAME_BYTES, FRAME_SAMPLES, SAMPLE_RATE
from media_sidecar.dsp.levels import SILENCE_DBFS, dbfs, is_silent, rms
from media_sidecar.dsp.vad import (
    MAX_UTTERANCE_MS,
    SpeechEnded,
    SpeechStarted,
    TurnDetector,
    TurnEvent,
    VoiceDetector,
)

CFG = VadConfig(aggressiveness=2, start_ms=120, end_ms=700, min_energy_dbfs=-45.0)
T0 = 10.0  # the call's clock does not start at zero


def frames_of(pcm: np.ndarray) -> list[bytes]:
    n = len(pcm) // FRAME_SAMPLES
    return [
        pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].astype("<i2").tobytes() for i in range(n)
    ]


def voiced(seconds: float, level_dbfs: float = -16.0) -> np.ndarray:
    """A voice-like signal: a 150 Hz glottal pulse train (24 harmonics, 1/k roll-off) with a
    slow vibrato, the kind of spectrum WebRTC's speech model is built for."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 150 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 25))
    x *= 10 ** (level_dbfs / 20) * 32768 / np.sqrt(np.mean(x * x))
    return np.round(x).astype(np.int16)


def noise(seconds: float, level_dbfs: float, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, 1, int(seconds * SAMPLE_RATE))
    return np.round(x * 32768 * 10 ** (level_dbfs / 20)).astype(np.int16)


# -- levels ---------------------------------------------------------------------------------------


def test_levels_of_known_signals() -> None:
    square = np.full(FRAME_SAMPLES, 16384, dtype=np.int16)
    square[::2] = -16384
    assert rms(square) == 16384.0
    assert dbfs(square) == pytest.approx(-6.0206, abs=1e-3)
    assert dbfs(square.astype("<i2").tobytes()) == dbfs(square)
    assert dbfs(bytes(FRAME_BYTES)) == SILENCE_DBFS
    assert dbfs(b"") == SILENCE_DBFS
    assert dbfs(np.full(4, -32768, dtype=np.int16)) == 0.0
    assert is_silent(noise(0.02, -60.0), -45.0)
    assert not is_silent(noise(0.02, -30.0), -45.0)


def test_levels_refuse_what_is_not_16_bit_pcm() -> None:
    with pytest.raises(ValueError, match="even number"):
        dbfs(b"\x00\x00\x00")
    with pytest.raises(ValueError, match="int16"):
        rms(np.zeros(4, dtype=np.float32))


# -- VoiceDetector --------------------------------------------------------------------------------


def test_voice_like_signal_is_speech() -> None:
    vad = VoiceDetector(CFG)
    decisions = [vad.is_speech(f) for f in frames_of(voiced(1.0))]
    assert sum(decisions) >= 0.9 * len(decisions)


@pytest.mark.parametrize(
    "signal",
    [np.zeros(SAMPLE_RATE, dtype=np.int16), noise(1.0, -55.0), voiced(1.0, level_dbfs=-50.0)],
    ids=["digital-silence", "line-noise", "quiet-voice-below-floor"],
)
def test_silence_and_quiet_signals_are_never_speech(signal: np.ndarray) -> None:
    vad = VoiceDetector(CFG)
    assert not any(vad.is_speech(f) for f in frames_of(signal))


def test_the_energy_floor_is_what_rejects_line_noise() -> None:
    # Without the floor WebRTC calls some of this -55 dBFS noise speech; with it, none.
    ungated = VoiceDetector(dataclasses.replace(CFG, min_energy_dbfs=-200.0))
    gated = VoiceDetector(CFG)
    frames = frames_of(noise(2.0, -55.0))
    assert any(ungated.is_speech(f) for f in frames)
    assert not any(gated.is_speech(f) for f in frames)


def test_voice_detector_checks_its_input() -> None:
    with pytest.raises(ValueError, match="aggressiveness"):
        VoiceDetector(VadConfig(aggressiveness=4))
    with pytest.raises(ValueError, match="320 bytes"):
        VoiceDetector().is_speech(bytes(160))


# -- TurnDetector ---------------------------------------------------------------------------------


def frame(i: int) -> bytes:
    """Frame number i, recognisable in the utterance audio by its sample value."""
    return np.full(FRAME_SAMPLES, i, dtype="<i2").tobytes()


def frame_ids(audio: bytes) -> list[int]:
    samples = np.frombuffer(audio, dtype="<i2")
    return samples[::FRAME_SAMPLES].tolist()


def t_of(i: int) -> float:
    return T0 + i * 0.02


def run(det: TurnDetector, pattern: str, start: int = 0) -> list[tuple[int, TurnEvent]]:
    """Push frames start, start+1, ... with decisions from ``pattern`` ('#' voiced, '.' not)."""
    events: list[tuple[int, TurnEvent]] = []
    for k, c in enumerate(pattern):
        i = start + k
        for e in det.push(c == "#", frame(i), t_of(i)):
            events.append((i, e))
    return events


def test_speech_starts_after_start_ms_of_voiced_frames_at_the_first_one() -> None:
    det = TurnDetector(CFG)
    events = run(det, "." * 20 + "#" * 10)
    # 120 ms = 6 frames: declared on frame 25, dated at frame 20.
    assert events == [(25, SpeechStarted(t_of(20)))]
    assert det.in_speech
    assert det.speech_ms == 200


def test_a_short_voiced_run_is_forgotten() -> None:
    det = TurnDetector(CFG)
    assert run(det, "." * 5 + "#" * 5 + "." * 5 + "#####.#####") == []
    assert not det.in_speech
    assert det.speech_ms == 100  # the run in progress


def test_speech_ends_after_end_ms_of_unvoiced_frames() -> None:
    det = TurnDetector(CFG)
    pattern = "." * 20 + "#" * 30 + "." * 3 + "#" * 10 + "." * 40
    events = run(det, pattern)
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechEnded]
    (i_start, started), (i_end, ended) = events
    assert (i_start, started) == (25, SpeechStarted(t_of(20)))
    # Last voiced frame is 62; 700 ms = 35 unvoiced frames later (frame 97) the turn ends.
    assert i_end == 97
    assert isinstance(ended, SpeechEnded)
    assert ended.t_end == t_of(62) + 0.02
    # 200 ms pre-roll (frames 10..19), the speech 20..62, 200 ms post-roll 63..72.
    assert frame_ids(ended.audio) == list(range(10, 73))
    assert not det.in_speech and det.speech_ms == 0


def test_speech_ms_counts_voiced_span_not_the_hangover() -> None:
    det = TurnDetector(CFG)
    run(det, "#" * 15)
    assert det.speech_ms == 300
    run(det, "." * 20, start=15)
    assert det.in_speech and det.speech_ms == 300
    run(det, "#", start=35)
    assert det.speech_ms == 720


def test_pre_roll_is_shorter_at_the_start_of_the_call() -> None:
    det = TurnDetector(CFG)
    events = run(det, "..." + "#" * 8 + "." * 35)
    ended = events[-1][1]
    assert isinstance(ended, SpeechEnded)
    assert frame_ids(ended.audio) == list(range(0, 21))


def test_a_forgotten_run_still_counts_as_pre_roll() -> None:
    det = TurnDetector(CFG)
    events = run(det, "." * 20 + "###" + "." * 2 + "#" * 6 + "." * 35)
    assert events[0] == (30, SpeechStarted(t_of(25)))
    ended = events[-1][1]
    assert isinstance(ended, SpeechEnded)
    assert frame_ids(ended.audio)[:10] == list(range(15, 25))


def test_consecutive_utterances_each_get_their_events() -> None:
    det = TurnDetector(CFG)
    pattern = ("#" * 10 + "." * 35) * 2
    events = run(det, pattern)
    kinds = [type(e).__name__ for _, e in events]
    assert kinds == ["SpeechStarted", "SpeechEnded", "SpeechStarted", "SpeechEnded"]
    assert events[2] == (50, SpeechStarted(t_of(45)))
    second = events[3][1]
    assert isinstance(second, SpeechEnded)
    # The pre-roll of the second utterance is the tail of the first one's hangover.
    assert frame_ids(second.audio)[:10] == list(range(35, 45))


def test_a_monologue_is_cut_at_the_maximum_length() -> None:
    det = TurnDetector(CFG, max_utterance_ms=1000)
    events = run(det, "#" * 60)
    assert [(i, type(e).__name__) for i, e in events] == [
        (5, "SpeechStarted"),
        (49, "SpeechEnded"),
        (55, "SpeechStarted"),
    ]
    ended = events[1][1]
    assert isinstance(ended, SpeechEnded)
    assert ended.t_end == t_of(49) + 0.02
    assert frame_ids(ended.audio) == list(range(0, 50))
    assert MAX_UTTERANCE_MS >= 10_000


def test_reset_drops_the_utterance_in_progress() -> None:
    det = TurnDetector(CFG)
    run(det, "#" * 10)
    det.reset()
    assert not det.in_speech and det.speech_ms == 0
    assert run(det, "." * 40, start=10) == []


def test_turn_detector_checks_its_input() -> None:
    with pytest.raises(ValueError, match="positive"):
        TurnDetector(VadConfig(start_ms=0))
    with pytest.raises(ValueError, match="320 bytes"):
        TurnDetector(CFG).push(True, bytes(10), 0.0)


def test_detectors_together_find_one_utterance_in_noise() -> None:
    pcm = np.concatenate([noise(0.5, -60.0, 1), voiced(1.0), noise(1.0, -60.0, 2)])
    vad, det = VoiceDetector(CFG), TurnDetector(CFG)
    events: list[TurnEvent] = []
    for i, f in enumerate(frames_of(pcm)):
        events += det.push(vad.is_speech(f), f, i * 0.02)
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded]
    started, ended = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    assert started.t_start == pytest.approx(0.5, abs=0.06)
    assert ended.t_end == pytest.approx(1.5, abs=0.06)
