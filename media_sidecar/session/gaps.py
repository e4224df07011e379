"""The caller's audio on the clock: silent frames for a leg that sends none while it is quiet.

Phones and trunks with silence suppression (DTX), and a Local channel in ``Wait()``, send no
AudioSocket frames at all while the caller is quiet (Asterisk passes no comfort noise). Whatever
listens to the caller (our VAD and turn detector, a streaming STT, a speech-to-speech provider
with server-side VAD) can only hear that silence if it gets audio. :class:`GapFiller` keeps the
caller's 20 ms grid going on the clock: once no caller audio arrived for :data:`GAP_TOLERANCE`,
it names the grid slots, continuing from the last frame, that are due up to now; the session
feeds a silent frame for each through its normal inbound path, then one every 20 ms until real
audio arrives again, which restarts the grid from that frame.

Pure: no trio, no clock. The session passes the times in and waits on :attr:`deadline`.
"""

from __future__ import annotations

import math

from ..constants import FRAME_SECONDS

__all__ = ["FILL_LAG", "GAP_TOLERANCE", "GapFiller"]

GAP_TOLERANCE = 0.080
"""How long after the last caller audio (or the session start) the first silent frame is made.

Asterisk's inbound frames come every 19.8-21.6 ms (interval p99 ~21 ms on 22.10.1), a 30 ms
ptime leg every 30 ms, and a trunk adds its network jitter (Asterisk has no jitter buffer
here). 80 ms is four frame times: a live leg never looks like a gap, so no silence is
inserted into real speech, and an end of speech is still decided on time: the slots filled
late are stamped with their grid times, so only an ``end_ms`` shorter than this is delayed."""

FILL_LAG = 0.0
"""A slot is filled this long after its grid time. The frame clock reads a call's bytes before
it fills that call's gap, in the same read phase, and real frames are stamped with the read
phase's time, so the slots fall on read phases: real audio read in a slot's phase takes the
slot's place, and no lag is needed (a positive one would delay each filled slot, and with it an
end of speech, by one whole read phase). The caller's timeline is off by at most one frame per
resumption, never cumulatively."""

_EPS = 1e-9  # grid times are anchor + k * 0.02: tolerate float rounding


class GapFiller:
    """Grid slots of caller audio that did not arrive, on the clock.

    ``start`` is the session's start (the first gap of a leg that never sends is measured from
    it). Call :meth:`heard` with the arrival time of every real caller audio message, and
    :meth:`due` when :attr:`deadline` has passed without one.
    """

    def __init__(
        self, start: float, *, tolerance: float = GAP_TOLERANCE, lag: float = FILL_LAG
    ) -> None:
        """Raises ValueError if ``tolerance`` is shorter than one frame plus ``lag`` (the first
        deadline must have a slot due, or the waiter would spin) or ``lag`` is not in
        [0, one frame)."""
        if not 0 <= lag < FRAME_SECONDS:
            raise ValueError(f"gap fill lag must be in [0, {FRAME_SECONDS}) s, got {lag}")
        if tolerance < FRAME_SECONDS + lag - _EPS:
            raise ValueError(
                f"gap tolerance must be at least {FRAME_SECONDS + lag:g} s "
                f"(one frame plus the lag), got {tolerance}"
            )
        self.tolerance = tolerance
        self.lag = lag
        self.filled = 0
        """Silent frames named so far (the call record's ``caller_frames_filled``)."""
        self._anchor = start
        """Time of the last real caller audio (or the start): slot k is at anchor + k frames."""
        self._k = 0
        """Slots filled since the anchor."""

    @property
    def filling(self) -> bool:
        """True once the current gap has had a silent frame (until real audio arrives)."""
        return self._k > 0

    @property
    def deadline(self) -> float:
        """When the next silent frame is due if no caller audio arrives before."""
        if self._k == 0:
            return self._anchor + self.tolerance
        return self._anchor + (self._k + 1) * FRAME_SECONDS + self.lag

    def heard(self, t: float) -> None:
        """Real caller audio arrived at ``t``: the grid continues from it, the gap is over."""
        self._anchor = t
        self._k = 0

    def due(self, now: float) -> list[float]:
        """The grid times of the silent frames due by ``now``, oldest first (each is returned
        once; empty before :attr:`deadline`). At or after the deadline there is at least one."""
        if now < self.deadline - _EPS:
            return []
        first = self._k + 1
        # At the deadline slot k + 1 is due by definition: rounding of large clock values
        # (trio's clock is offset by up to 2e5 s) must not leave the waiter with nothing.
        last = math.floor((now - self.lag - self._anchor) / FRAME_SECONDS + _EPS)
        self._k = max(first, last)
        self.filled += self._k - first + 1
        return [self._anchor + k * FRAME_SECONDS for k in range(first, self._k + 1)]
