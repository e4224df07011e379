"""GPT-Live utterance finding (media_sidecar/providers/live_utterances.py) against a recording
port: what the relay is told for each sequence of output audio and transcript fragments."""

from __future__ import annotations

import numpy as np
import trio

from media_sidecar.config.schema import LiveConfig
from media_sidecar.providers.live_utterances import Utterances

LOUD = (8000 * np.sin(np.arange(160) / 3)).astype("<i2").tobytes()
QUIET = bytes(320)


class Port:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def agent_audio(self, pcm, item_id, t_in):
        if not self.calls or self.calls[-1][:2] != ("audio", item_id):
            self.calls.append(("audio", item_id))

    def agent_audio_done(self, item_id):
        self.calls.append(("done", item_id))

    def caller_speech_started(self):
        self.calls.append(("barge",))

    def caller_speech_stopped(self, audio_end_ms):
        self.calls.append(("stopped", audio_end_ms))

    def transcript(self, role, text):
        self.calls.append((role, text))


def feed(u: Utterances, frames: list[bytes], t0: float = 0.0) -> float:
    t = t0
    for f in frames:
        u.agent_audio(f, t)
        u.sent_ms += 20
        t += 0.02
    return t


def test_an_utterance_is_held_for_the_jitter_then_ends_on_silence():
    port = Port()
    u = Utterances(LiveConfig(jitter_ms=60, end_silence_ms=100), port)
    feed(u, [QUIET] * 3 + [LOUD] * 2)
    assert port.calls == []  # 40 ms held
    u.agent_text(" Hello", None)
    feed(u, [LOUD] * 3 + [QUIET] * 5, t0=0.1)
    item = u.item or port.calls[0][1]
    assert port.calls == [("audio", item), ("agent", " Hello"), ("audio", item), ("done", item)]


def test_a_late_caller_fragment_is_not_a_barge_in_but_a_later_one_is():
    port = Port()
    u = Utterances(LiveConfig(jitter_ms=0), port)
    u.sent_ms = 5000
    u.caller_text(" what time", 3000, 3600)
    assert port.calls == [("barge",), ("stopped", 3600)]
    feed(u, [LOUD] * 5)  # the answer starts at 5000 ms
    item = u.item
    u.caller_text(" is it", 3600, 4000)  # the rest of the question, late
    assert port.calls[2:] == [("caller", " what time"), ("audio", item), ("caller", " is it")]
    u.caller_text(" wait", 5060, 5100)  # the caller talks over the answer
    assert port.calls[5:] == [("barge",), ("done", item), ("stopped", 5100)]
    assert u.item == ""


def test_a_local_cut_drops_the_rest_of_the_utterance_until_a_pause():
    port = Port()
    u = Utterances(LiveConfig(jitter_ms=0, end_silence_ms=100), port)
    t = feed(u, [LOUD] * 3)
    first = u.item
    u.cut()
    t = feed(u, [LOUD] * 5, t0=t)  # the server goes on talking: dropped
    assert port.calls == [("audio", first), ("done", first)]
    feed(u, [LOUD] * 2, t0=t + 0.5)  # a new utterance after a pause in the stream
    assert port.calls[-1][0] == "audio" and port.calls[-1][1] != first


def test_muted_caller_fragments_never_interrupt():
    port = Port()
    u = Utterances(LiveConfig(jitter_ms=0), port)
    feed(u, [LOUD] * 3)
    u.muted = True
    u.caller_text(" bye", u.sent_ms, u.sent_ms + 100)
    assert ("barge",) not in port.calls and port.calls[-1] == ("caller", " bye")


async def test_no_audio_at_all_ends_the_utterance(autojump_clock):
    port = Port()
    u = Utterances(LiveConfig(jitter_ms=60, end_silence_ms=300), port)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(u.watch)
        u.agent_audio(LOUD, trio.current_time())  # 20 ms, still held
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [c[0] for c in port.calls] == ["audio", "done"]
