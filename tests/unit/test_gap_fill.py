"""The caller's grid on the clock (GapFiller) and the turn detector's end of speech on frame time.

Both are pure: times are passed in, nothing sleeps. The session test that drives them through
the real AudioSocket path is tests/session/test_quiet_leg.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_sidecar.config.schema import VadConfig
from media_sidecar.constants import FRAME_BYTES, FRAME_SECONDS
from media_sidecar.dsp.vad import SpeechEnded, SpeechStarted, TurnDetector, TurnEvent
from media_sidecar.session.gaps import FILL_LAG, GAP_TOLERANCE, GapFiller

F = FRAME_SECONDS
T0 = 1000.0  # trio's clock does not start at zero
CFG = VadConfig(aggressiveness=2, start_ms=120, end_ms=700, min_energy_dbfs=-45.0)


def approx(times: list[float]) -> object:
    return pytest.approx(times, abs=1e-9)


# -- GapFiller --------------------------------------------------------------------------------


def test_the_tolerance_is_between_live_jitter_and_a_turn_end() -> None:
    # Asterisk's frame interval is ~21 ms p99; a 30 ms ptime leg sends every 30 ms. The default
    # end-of-speech hangover (700 ms) is far longer, so filling never delays it.
    assert 0.060 <= GAP_TOLERANCE <= 0.100
    assert 0 <= FILL_LAG < F


def test_nothing_is_due_before_the_tolerance_then_the_missed_slots_on_the_grid() -> None:
    g = GapFiller(T0)
    assert g.deadline == pytest.approx(T0 + GAP_TOLERANCE)
    assert g.due(T0 + GAP_TOLERANCE - 0.001) == [] and not g.filling
    # at 80 ms: the slots of 20, 40, 60 and 80 ms (each is due at its own time)
    assert g.due(T0 + GAP_TOLERANCE) == approx([T0 + 0.02, T0 + 0.04, T0 + 0.06, T0 + 0.08])
    assert g.filling and g.filled == 4
    assert g.deadline == pytest.approx(T0 + 0.10 + FILL_LAG)
    assert g.due(T0 + 0.095) == []
    assert g.due(T0 + 0.10) == approx([T0 + 0.10])
    assert g.deadline == pytest.approx(T0 + 0.12 + FILL_LAG)


def test_with_a_lag_each_slot_is_due_that_much_after_its_time() -> None:
    g = GapFiller(T0, lag=0.01)
    assert g.due(T0 + GAP_TOLERANCE) == approx([T0 + 0.02, T0 + 0.04, T0 + 0.06])
    assert g.deadline == pytest.approx(T0 + 0.09)
    assert g.due(T0 + 0.085) == []
    assert g.due(T0 + 0.09) == approx([T0 + 0.08])


def test_a_late_waker_gets_every_slot_up_to_now_once() -> None:
    g = GapFiller(T0)
    assert g.due(T0 + 1.0) == approx([T0 + 0.02 * k for k in range(1, 51)])
    assert g.due(T0 + 1.0) == []  # nothing twice
    assert g.filled == 50


def test_real_audio_restarts_the_grid_from_its_arrival() -> None:
    g = GapFiller(T0)
    g.due(T0 + 0.2)
    g.heard(T0 + 0.333)  # DTX resumed off the old grid
    assert not g.filling
    assert g.deadline == pytest.approx(T0 + 0.333 + GAP_TOLERANCE)
    assert g.due(T0 + 0.5) == approx([T0 + 0.333 + 0.02 * k for k in range(1, 9)])


def test_audio_resuming_within_the_lag_takes_the_slot() -> None:
    g = GapFiller(T0, lag=0.01)
    g.due(T0 + 0.09)  # slots up to 80 ms
    assert g.deadline == pytest.approx(T0 + 0.11)
    g.heard(T0 + 0.100)  # the real frame for slot 100 ms, before its silent stand-in was due
    assert g.due(T0 + 0.11) == []
    assert g.filled == 4


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        GapFiller(T0, tolerance=0.025, lag=0.01)
    with pytest.raises(ValueError, match="lag"):
        GapFiller(T0, lag=0.02)
    GapFiller(T0, tolerance=0.03, lag=0.01)  # the smallest that always has a slot due


@settings(max_examples=300, deadline=None)
@given(
    start=st.floats(0, 1e6),
    steps=st.lists(st.floats(0, 0.2), min_size=1, max_size=40),
    heard=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_never_spins_and_never_repeats_a_slot(
    start: float, steps: list[float], heard: list[bool]
) -> None:
    """Whoever waits for the deadline always gets at least one slot (no busy loop), slots only
    move forward, and each wake-up at the deadline covers at most the slots since the last."""
    g = GapFiller(start)
    now, last = start, start
    for step, real in zip(steps, heard, strict=False):
        now += step
        if real:
            g.heard(now)
            last = now
            continue
        now = max(now, g.deadline)
        slots = g.due(now)
        assert slots, "woken at the deadline with nothing due"
        assert all(b > a for a, b in zip([last, *slots], slots, strict=False))
        assert slots[-1] <= now - g.lag + 1e-6
        last = slots[-1]


# -- TurnDetector: the end of speech is on frame time ------------------------------------------


def frame(i: int) -> bytes:
    return i.to_bytes(2, "little", signed=True) * (FRAME_BYTES // 2)


def speak_then(det: TurnDetector, quiet: list[float]) -> list[tuple[float, TurnEvent]]:
    """0.5 s of voiced frames from T0, then unvoiced frames at the times ``quiet``."""
    events: list[tuple[float, TurnEvent]] = []
    for k in range(25):
        events += [(T0 + k * F, e) for e in det.push(True, frame(k), T0 + k * F)]
    for n, t in enumerate(quiet):
        events += [(t, e) for e in det.push(False, frame(100 + n), t)]
    return events


def test_on_the_grid_the_end_is_where_the_frame_count_puts_it() -> None:
    last = T0 + 24 * F
    events = speak_then(TurnDetector(CFG), [last + k * F for k in range(1, 60)])
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechEnded]
    t, end = events[1]
    assert t == pytest.approx(last + 0.70)  # the 35th unvoiced frame
    assert isinstance(end, SpeechEnded) and end.t_end == pytest.approx(last + F)


def test_lost_frames_do_not_stretch_the_hangover() -> None:
    """A leg that delivers one frame in three (loss, or DTX updates) still ends on time, with
    the same end-of-speech stamp; before, it took three times the hangover."""
    last = T0 + 24 * F
    events = speak_then(TurnDetector(CFG), [last + k * F for k in range(3, 120, 3)])
    t, end = events[1]
    assert t == pytest.approx(last + 0.72)  # the first frame 700 ms or more after the voice
    assert isinstance(end, SpeechEnded) and end.t_end == pytest.approx(last + F)


def test_a_voiced_frame_after_a_gap_continues_the_utterance() -> None:
    det = TurnDetector(CFG)
    speak_then(det, [])
    # only an unvoiced frame can end it: the voice is back, whatever the gap before it
    assert det.push(True, frame(1), T0 + 2.0) == [] and det.in_speech
    assert det.speech_ms == 26 * 20  # speech_ms counts audio, not the gap


def test_silence_filled_on_the_grid_ends_the_turn_like_real_silence() -> None:
    """What the session does for a quiet leg: the filler's slots, as silent frames."""
    real, filled = TurnDetector(CFG), TurnDetector(CFG)
    last = T0 + 24 * F
    silence = bytes(FRAME_BYTES)
    a = speak_then(real, [])
    b = speak_then(filled, [])
    for k in range(1, 60):
        a += [(last + k * F, e) for e in real.push(False, silence, last + k * F)]
    gaps = GapFiller(last)
    now = last
    while now < last + 1.2:
        now = gaps.deadline
        for t in gaps.due(now):
            b += [(now, e) for e in filled.push(False, silence, t)]
    (ta, ea), (tb, eb) = a[1], b[1]
    assert ea == eb  # same end stamp, same utterance audio
    assert tb - ta == pytest.approx(FILL_LAG)  # decided when the 35th slot is filled
