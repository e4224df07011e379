"""GPT-Live's turns as the relay needs them: agent utterances cut out of a continuous output
stream, transcripts joined per utterance, and the caller talking over the agent.

GPT-Live sends no speech-started, response or audio-done event for the voice
(providers-2026-update.md 1.5, 1.6): only output audio (said to flow at real-time pace,
silence included [3P]) and transcript fragments with ``start_ms``/``end_ms`` on the session
timeline. So here:

- a run of loud output audio is one *utterance* (a relay item, numbered locally); its first
  ``jitter_ms`` is held, then everything is passed on as it arrives; ``end_silence_ms`` of
  silence, or of no audio at all (:meth:`Utterances.watch`), ends it;
- agent transcript fragments are joined per utterance (a fragment may split a word);
- a caller fragment that starts after the current utterance began means the caller talked over
  the agent: the relay flushes what is queued (the server has already stopped by itself) and the
  record keeps what was heard. A fragment from before the utterance began is a late transcript,
  never an interruption; nothing interrupts while the call is leaving (``muted``).

The session timeline is taken to be the milliseconds of caller audio sent (``sent_ms``, kept by
the provider) [UNVERIFIED: the reference does not say what its zero is]; it is also the clock
the caller's end of speech is reported on.
"""

from __future__ import annotations

import itertools

import numpy as np
import trio

from ..config.schema import LiveConfig
from .audio import AudioCodec
from .base import RelayPort

SILENCE_RMS = 100.0
"""Output audio (slin, 16-bit scale) at or below this RMS is silence (about -50 dBFS)."""
CALLER_GAP_MS = 800
"""A caller fragment starting this long after the previous one ended starts a new utterance."""
_ids = itertools.count(1)


class Utterances:
    """One call's agent utterances and caller fragments; every method is non-blocking except
    :meth:`watch` (a task of the provider's nursery, cancelled with it)."""

    def __init__(self, cfg: LiveConfig, port: RelayPort) -> None:
        self.cfg, self.port = cfg, port
        self.codec: AudioCodec | None = None
        self.sent_ms = 0
        """Caller audio sent, in ms (the provider counts it): the session timeline."""
        self.muted = False
        self.item = ""
        self._item_start_ms = 0
        self._forwarding = False
        self._held: list[tuple[bytes, float]] = []
        self._held_ms = 0.0
        self._silence_ms = 0.0
        self._discard = False
        self._last_audio = -1e9
        self._began = trio.Event()
        self._agent_text: list[str] = []
        self._last_end_ms = -1
        self._caller_text: list[str] = []
        self._caller_end_ms = 0
        self._caller_item = ""

    # -- agent audio -----------------------------------------------------------------------------

    def agent_audio(self, pcm: bytes, t_in: float) -> None:
        """slin 8 kHz output audio that arrived at ``t_in``."""
        ms = len(pcm) / 16
        if not ms:
            return
        if t_in - self._last_audio >= self.cfg.end_silence_ms / 1000:
            self._discard = False  # a pause in the stream ends a cut utterance too
        self._last_audio = t_in
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        loud = float(np.sqrt(np.mean(samples * samples))) > SILENCE_RMS
        if not self.item:
            if not loud or self._discard:
                self._discard = self._discard and loud
                return  # silence between utterances (or the rest of a cut one)
            self._begin()
        if loud:
            self._silence_ms = 0.0
        else:
            self._silence_ms += ms
            if self._silence_ms >= self.cfg.end_silence_ms:
                self.end()
                return
        if self._forwarding:
            self.port.agent_audio(pcm, self.item, t_in)
            return
        self._held.append((pcm, t_in))
        self._held_ms += ms
        if self._held_ms >= self.cfg.jitter_ms:
            self._release()

    def cut(self) -> None:
        """We cut the agent off (a keypress): the rest of this utterance is dropped."""
        if self.item:
            self.end()
            self._discard = True

    def _begin(self) -> None:
        self.flush_caller()
        self.item = f"live_{next(_ids)}"
        self._item_start_ms = self.sent_ms
        self._forwarding = False
        self._silence_ms = 0.0
        if self.codec is not None:
            self.codec.reset_down()
        self._began.set()

    def _release(self) -> None:
        """The held start of the utterance goes to the relay; the rest follows as it comes."""
        self._forwarding = True
        for pcm, t_in in self._held:
            self.port.agent_audio(pcm, self.item, t_in)
        self._held.clear()
        self._held_ms = 0.0
        if self._agent_text:
            self.port.transcript("agent", "".join(self._agent_text))
            self._agent_text.clear()

    def end(self) -> None:
        """The current utterance (if any) is complete."""
        if self._held:
            self._release()
        if self._forwarding:
            self.port.agent_audio_done(self.item)
            self._last_end_ms = self.sent_ms
        self.item, self._forwarding = "", False
        self.flush_caller()

    async def watch(self) -> None:
        """Ends the utterance when no audio at all came for ``end_silence_ms`` (a server that
        does not stream silence, or a stalled one)."""
        gap = self.cfg.end_silence_ms / 1000
        while True:
            if not self.item:
                await self._began.wait()
                self._began = trio.Event()
                continue
            deadline = self._last_audio + gap
            if trio.current_time() >= deadline:
                self.end()
            else:
                await trio.sleep_until(deadline)

    # -- transcripts -----------------------------------------------------------------------------

    def agent_text(self, text: str, start_ms: int | None) -> None:
        if self._forwarding:
            self.port.transcript("agent", text)
        elif not self.item and start_ms is not None and start_ms < self._last_end_ms:
            self.port.transcript("agent", text)  # the tail of the utterance just ended
        else:
            self._agent_text.append(text)  # said by audio not played yet

    def caller_text(self, text: str, start_ms: int | None, end_ms: int | None) -> None:
        start = self.sent_ms if start_ms is None else start_ms
        over_agent = bool(self.item) and start >= self._item_start_ms
        if (self.item and not over_agent) or self.muted:
            # from before this utterance began (a late fragment), or while the call is
            # leaving (the model does not hear it): never an interruption
            self.port.transcript("caller", text)
            return
        if (not self._caller_text or start - self._caller_end_ms > CALLER_GAP_MS
                or (over_agent and self._caller_item != self.item)):
            self.flush_caller()
            self.port.caller_speech_started()  # flushes what is queued; the server stopped
            if self.item:
                self.end()
        self._caller_item = self.item
        self._caller_text.append(text)
        if end_ms is not None:
            self._caller_end_ms = end_ms
            self.port.caller_speech_stopped(end_ms)

    def flush_caller(self) -> None:
        if self._caller_text:
            self.port.transcript("caller", "".join(self._caller_text))
            self._caller_text.clear()
