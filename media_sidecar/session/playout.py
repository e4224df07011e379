"""The paced playout writer: one 20 ms frame every 20 ms toward Asterisk, from the first moment.

Asterisk neither paces nor buffers what AudioSocket receives (a burst toward a real channel is
dropped), and the AudioSocket() app hangs up after 2 s without frames, so:

- the process's frame clock (:mod:`.clock`) takes exactly one frame per call per tick on an
  absolute deadline grid (``start + n * 20 ms``), re-clamped after a stall: one frame at once
  and a new grid, never a catch-up burst;
- when the agent is quiet it sends silence (also the mitigation for asterisk#2089, which starves
  a peer that waits before sending);
- agent audio waits in a bounded buffer of :class:`Segment` s; :meth:`Playout.flush` drops the
  interruptible ones and takes effect at the very next frame;
- the hand-back frame ``00 00 00`` is the frame after the last audio frame, so nothing can
  interleave with it.

Audio inside the playout is slin 8 kHz, and so is every frame it sends (kind ``0x10``, 320
bytes), whatever the call's :class:`AudioFormat`: Asterisk reads kind ``0x10`` as slin 8 kHz
on every leg (``res_audiosocket.c``: ``KIND_AUDIO -> ast_format_slin``), so mu-law or A-law
payloads sent back on a ``Dial(AudioSocket/...c(ulaw))`` leg would play as noise; Asterisk
translates slin to the caller's codec itself. The link is asymmetric: what the call's format
decides is only how the caller's audio arrives (see ``session.inbound``).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from dataclasses import dataclass, field

import trio

from ..constants import FRAME_BYTES, FRAME_SECONDS
from ..protocol.audiosocket import AudioFormat, encode_audio, encode_hangup

SLIN8 = AudioFormat()
_ids = itertools.count(1)


@dataclass(eq=False)
class Segment:
    """One utterance (or part of one) queued for playout."""

    pcm: bytes
    text: str = ""
    interruptible: bool = True
    id: int = field(default_factory=lambda: next(_ids))
    frames_sent: int = 0
    started_at: float | None = None
    """trio time the first frame of this segment left."""
    finished_at: float | None = None
    interrupted: bool = False
    done: trio.Event = field(default_factory=trio.Event)

    total_frames: int = 0
    """Frames of ``pcm`` (set when it is made; ``pcm`` itself is released once it has played)."""

    def __post_init__(self) -> None:
        self.total_frames = math.ceil(len(self.pcm) / FRAME_BYTES)

    @property
    def played_seconds(self) -> float:
        return self.frames_sent * FRAME_SECONDS

    @property
    def heard_text(self) -> str:
        """Roughly the part of ``text`` the caller heard (proportional to audio played)."""
        if not self.interrupted or self.total_frames == 0:
            return self.text
        words = self.text.split()
        n = int(len(words) * self.frames_sent / self.total_frames)
        return " ".join(words[:n])


LATENESS_BINS_MS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0, float("inf"))
"""Upper bounds (ms) of the wake-up lateness histogram in :class:`PlayoutStats`."""


@dataclass
class PlayoutStats:
    frames_sent: int = 0
    audio_frames_sent: int = 0
    silence_frames_sent: int = 0
    late_frames: int = 0
    """Stalls of more than one frame period (the grid was re-clamped, frames skipped)."""
    max_lateness: float = 0.0
    lateness_hist: list[int] = field(default_factory=lambda: [0] * len(LATENESS_BINS_MS))
    """Frames per wake-up lateness bin (see LATENESS_BINS_MS): the pacing seen from inside."""
    flushes: int = 0
    frames_flushed: int = 0
    blocked_ticks: int = 0
    """Ticks the socket took no (whole) frame: Asterisk was not reading; no frame was made."""


class PlayoutFull(Exception):
    """More agent audio was queued than ``max_seconds`` allows."""


class Playout:
    """The outbound direction of one AudioSocket connection, as pure state.

    The process's frame clock (:mod:`.clock`) asks it for one frame per 20 ms tick
    (:meth:`next_wire`) and writes it; after the hand-back frame (see :meth:`hand_back`) it
    sets :attr:`hand_back_sent`.
    """

    def __init__(
        self,
        fmt: AudioFormat = SLIN8,
        *,
        max_seconds: float = 60.0,
    ) -> None:
        self._fmt = fmt  # the call's format; what goes out is slin 8 kHz on every leg
        self._max_frames = int(max_seconds / FRAME_SECONDS)
        self._queue: deque[Segment] = deque()
        self._queued_frames = 0
        self._current: Segment | None = None
        self._offset = 0
        self._hand_back = False
        self._ended: Segment | None = None
        """The segment whose last frame is being written (finished after the write)."""
        self._idle = trio.Event()
        self._idle.set()
        self._silence = self._encode(bytes(FRAME_BYTES))
        self.stats = PlayoutStats()
        self.started_at: float | None = None
        self.last_audio_at: float | None = None
        """trio time the last non-silent (agent audio) frame left."""
        self.hand_back_sent = trio.Event()

    # -- producer side ---------------------------------------------------------------------------

    def enqueue(self, pcm: bytes, text: str = "", interruptible: bool = True) -> Segment:
        """Queue slin 8 kHz audio; returns the segment (await ``seg.done`` to know it played).

        Raises PlayoutFull when the buffer would exceed its bound, ValueError on odd bytes.
        """
        if len(pcm) % 2:
            raise ValueError("slin audio must have an even number of bytes")
        seg = Segment(pcm=pcm, text=text, interruptible=interruptible)
        if self._queued_frames + seg.total_frames > self._max_frames:
            raise PlayoutFull(f"playout buffer would exceed {self._max_frames} frames")
        if seg.total_frames == 0:
            seg.done.set()
            return seg
        self._queue.append(seg)
        self._queued_frames += seg.total_frames
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        return seg

    def flush(self) -> int:
        """Drop every interruptible segment (the current one too). Returns frames dropped.

        Effective at the very next frame: the writer takes frames one at a time from here.
        A non-interruptible current segment (a farewell) keeps playing.
        """
        dropped = 0
        now = trio.current_time()
        if self._current is not None and self._current.interruptible:
            seg = self._current
            dropped += seg.total_frames - seg.frames_sent
            self._finish(seg, now, interrupted=True)
            self._current = None
            self._offset = 0
        keep: deque[Segment] = deque()
        for seg in self._queue:
            if seg.interruptible:
                dropped += seg.total_frames
                self._queued_frames -= seg.total_frames
                self._finish(seg, now, interrupted=True)
            else:
                keep.append(seg)
        self._queue = keep
        self.stats.flushes += 1
        self.stats.frames_flushed += dropped
        self._check_idle()
        return dropped

    def protect(self) -> None:
        """Make everything queued or playing now non-interruptible (the call is ending and
        the farewell or transfer announcement must be heard whole)."""
        if self._current is not None:
            self._current.interruptible = False
        for seg in self._queue:
            seg.interruptible = False

    def hand_back(self) -> None:
        """Send ``00 00 00`` after what is queued now has played, then stop."""
        self._hand_back = True

    @property
    def speaking(self) -> bool:
        """True while agent audio is queued or playing."""
        return self._current is not None or bool(self._queue)

    @property
    def interruptible(self) -> bool:
        """Whether what is playing now may be cut off by the caller."""
        if self._current is not None:
            return self._current.interruptible
        return all(s.interruptible for s in self._queue)

    async def wait_idle(self) -> None:
        """Wait until nothing is queued or playing (every segment done or flushed)."""
        await self._idle.wait()

    # -- the writer --------------------------------------------------------------------------

    def next_wire(self, now: float, late: float = 0.0) -> tuple[bytes, bool]:
        """The bytes of this tick's frame toward Asterisk, and whether it is the hand-back.

        Called once per 20 ms tick by the process's frame clock (:mod:`.clock`), which writes
        the bytes whole before anything else goes on the socket. ``now`` is the write time,
        ``late`` how far past the tick's deadline it is (the pacing seen from inside).
        """
        st = self.stats
        if late > st.max_lateness:
            st.max_lateness = late
        st.lateness_hist[bisect.bisect_left(LATENESS_BINS_MS, late * 1000)] += 1
        if self._hand_back and not self.speaking:
            return encode_hangup(), True
        frame, is_audio = self._next_frame(now)
        ended, self._ended = self._ended, None
        if ended is not None:  # done and idle only once its last frame is on its way
            self._finish(ended, now + FRAME_SECONDS, interrupted=False)
            self._check_idle()
        st.frames_sent += 1
        if is_audio:
            st.audio_frames_sent += 1
            self.last_audio_at = now
        else:
            st.silence_frames_sent += 1
        return frame, False

    def _next_frame(self, now: float) -> tuple[bytes, bool]:
        if self._current is None:
            if not self._queue:
                return self._silence, False
            self._current = self._queue.popleft()
            self._queued_frames -= self._current.total_frames
            self._offset = 0
            self._current.started_at = now
        seg = self._current
        chunk = seg.pcm[self._offset : self._offset + FRAME_BYTES]
        if len(chunk) < FRAME_BYTES:
            chunk = chunk + bytes(FRAME_BYTES - len(chunk))
        self._offset += FRAME_BYTES
        seg.frames_sent += 1
        if self._offset >= len(seg.pcm):
            self._current = None
            self._ended = seg
        return self._encode(chunk), True

    def _finish(self, seg: Segment, t: float, *, interrupted: bool) -> None:
        seg.finished_at = t
        seg.interrupted = interrupted
        seg.pcm = b""  # played or dropped: a call keeps its counts, not its audio
        seg.done.set()

    def _check_idle(self) -> None:
        if not self.speaking and self._ended is None:
            self._idle.set()

    def _encode(self, slin: bytes) -> bytes:
        """One frame toward Asterisk: slin 8 kHz as kind ``0x10`` on every leg (see above)."""
        return encode_audio(slin, SLIN8.wire_kind)
