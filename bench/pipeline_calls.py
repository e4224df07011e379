"""Pipeline calls for ``bench_pipeline``: one call through the real AudioSocket server, its
stages against protocol mocks, and the bench-only wrappers around the stages.

A call here is what ``tests/session/harness.run_session`` runs, with the production services
(the real VAD, worker-thread offload, the local engines when the assistant names them): the
emulator's Asterisk side (``AudioSocketSession`` with a ``CallerScript``) talks to
``AudioSocketServer.handle`` over an in-memory stream pair, and every cloud stage reaches its
protocol mock over in-memory streams (``tests/session/pipeline.pipeline_net``). Everything
shares one trio run, so the same code runs in real time (our processing cost shows) or under
trio's ``MockClock`` (the exact scripted timeline).

Each call has its own mocks, so their logs (``ChatLog``, ``SpeakLog``, ``ListenLog``) are that
call's alone, and its own ``Net``; before the call, one ``GET /v1/models`` opens the pooled
HTTP connection to the chat mock, as the process-wide client of production has it open.

:class:`StageHook` wraps ``media_sidecar.session.call.make_stages`` for the length of a run
(``unittest.mock.patch``; product code is untouched) and changes the stages of the calls it
was told about:

* ``probed``: pass-through wrappers that stamp when our code saw the LLM's first text delta
  and each sentence's first TTS audio (trio time, not rounded like the call record);
* ``sequential``: the LLM's events are held until its answer is complete, and each
  sentence's TTS audio until all of it arrived -- the pipeline without overlap, to compare.
"""

from __future__ import annotations

import dataclasses
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import numpy as np
import trio
import trio.testing

import media_sidecar.session.call as call_module
from fastagi_server.emulator.audiosocket_side import AudioSocketResult, AudioSocketSession
from fastagi_server.emulator.caller import CallerScript
from media_sidecar.config.schema import Config
from media_sidecar.pipeline import Stages
from media_sidecar.pipeline.base import TextDelta
from media_sidecar.pipeline.llm_brain import LlmBrain
from media_sidecar.protocol import control as c
from media_sidecar.server.audiosocket_server import AudioSocketServer
from media_sidecar.server.registry import CallRegistry
from media_sidecar.session.call import CallServices
from media_sidecar.session.records import CallRecord
from tests.mocks.deepgram_listen import MockListenServer
from tests.mocks.deepgram_speak import MockSpeakServer
from tests.mocks.openai_chat import MockChatServer
from tests.session.harness import MemoryRecords, RecordingControl
from tests.session.pipeline import KEYS, pipeline_net
from tests.streams import socket_stream_pair

MODES = ("overlapped", "probed", "sequential")
"""How :class:`StageHook` leaves a call's stages: as built, with time stamps, or serialised."""


# -- the stage wrappers ----------------------------------------------------------------------------
@dataclass
class SentenceProbe:
    text: str
    called: float
    """trio time the speaking task asked the TTS stage for this sentence."""
    first_chunk: float | None = None
    """trio time its first audio reached the speaking task (``Voice.say``)."""


@dataclass
class RequestProbe:
    called: float
    """trio time the brain opened the LLM stream."""
    first_delta: float | None = None
    """trio time the first text delta was parsed and handed to the brain."""


@dataclass
class CallProbe:
    """What one call's wrapped stages saw (``probed`` mode)."""

    mode: str
    requests: list[RequestProbe] = field(default_factory=list)
    sentences: list[SentenceProbe] = field(default_factory=list)


class _Delegate:
    """Everything a wrapper does not override comes from the wrapped stage (``name``, ``rate``,
    ``rest_sentences``...), so the session and its record see the real stage."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ProbeChat(_Delegate):
    """A ChatModel that passes every event through and stamps the first text delta."""

    def __init__(self, inner: Any, probe: CallProbe) -> None:
        super().__init__(inner)
        self.probe = probe

    async def stream(self, messages: list[dict[str, Any]], tools: list[Any]
                     ) -> AsyncIterator[Any]:
        req = RequestProbe(called=trio.current_time())
        self.probe.requests.append(req)
        async with aclosing(self.inner.stream(messages, tools)) as events:
            async for ev in events:
                if req.first_delta is None and isinstance(ev, TextDelta):
                    req.first_delta = trio.current_time()
                yield ev


class ProbeSynth(_Delegate):
    """A SpeechSynth that passes every chunk through and stamps each sentence's first one."""

    def __init__(self, inner: Any, probe: CallProbe) -> None:
        super().__init__(inner)
        self.probe = probe

    async def start(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        await self.inner.start(task_status=task_status)

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        s = SentenceProbe(text=text, called=trio.current_time())
        self.probe.sentences.append(s)
        async with aclosing(self.inner.stream(text)) as chunks:
            async for chunk in chunks:
                if s.first_chunk is None:
                    s.first_chunk = trio.current_time()
                yield chunk


class BufferedChat(_Delegate):
    """A ChatModel that yields nothing until the whole answer is in, then all of it: no
    sentence can reach TTS before the LLM is done."""

    async def stream(self, messages: list[dict[str, Any]], tools: list[Any]
                     ) -> AsyncIterator[Any]:
        async with aclosing(self.inner.stream(messages, tools)) as events:
            held = [ev async for ev in events]
        for ev in held:
            yield ev


class BufferedSynth(_Delegate):
    """A SpeechSynth that yields a sentence's audio only once all of it was received."""

    async def start(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        await self.inner.start(task_status=task_status)

    async def stream(self, text: str) -> AsyncIterator[np.ndarray]:
        async with aclosing(self.inner.stream(text)) as chunks:
            held = [np.asarray(chunk, dtype=np.int16) async for chunk in chunks]
        if held:
            yield np.concatenate(held)


class StageHook:
    """Wraps ``make_stages`` as the pipeline session imports it, while :meth:`installed` is
    active. Calls are told apart by their ``CallContext.uniqueid``; a call not announced with
    :meth:`expect` keeps its stages as built."""

    def __init__(self) -> None:
        self.calls: dict[str, CallProbe] = {}
        self._real = call_module.make_stages

    def expect(self, uniqueid: str, mode: str) -> CallProbe:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        probe = self.calls[uniqueid] = CallProbe(mode)
        return probe

    @contextmanager
    def installed(self) -> Iterator[StageHook]:
        with mock.patch.object(call_module, "make_stages", self._make_stages):
            yield self

    def _make_stages(self, a: Any, context: c.CallContext, **kw: Any) -> Stages:
        stages = self._real(a, context, **kw)
        probe = self.calls.get(context.uniqueid)
        if probe is None or probe.mode == "overlapped":
            return stages
        brain = stages.brain
        llm = brain if isinstance(brain, LlmBrain) else None
        if probe.mode == "sequential":
            if llm is not None:
                llm.model = BufferedChat(llm.model)  # type: ignore[assignment]
            stages.synth = BufferedSynth(stages.synth)  # type: ignore[assignment]
        else:
            if llm is not None:
                llm.model = ProbeChat(llm.model, probe)  # type: ignore[assignment]
            stages.synth = ProbeSynth(stages.synth, probe)  # type: ignore[assignment]
        return stages


# -- one call ----------------------------------------------------------------------------------------
@dataclass
class Mocks:
    """One call's protocol mocks (None: the stage is local or absent)."""

    chat: MockChatServer | None = None
    listen: MockListenServer | None = None
    speak: MockSpeakServer | None = None


@dataclass
class CallOut:
    name: str
    mode: str
    record: CallRecord | None
    mocks: Mocks
    probe: CallProbe
    asterisk: AudioSocketResult | None = None
    error: str = ""


async def warm_http(net: Any) -> None:
    """Open the pooled connection to the chat mock (production's shared client has it open)."""
    await net.http.get("https://api.openai.com/v1/models", timeout=5.0,
                       headers={"Authorization": f"Bearer {KEYS['OPENAI_API_KEY']}"})


async def run_call(cfg: Config, assistant: str, name: str, script: CallerScript, *,
                   services: CallServices, mocks: Mocks, hook: StageHook, mode: str,
                   max_seconds: float = 90.0) -> CallOut:
    """One call to ``assistant`` until the caller's script hangs up. Never raises for the
    call itself: a failure is the returned ``error`` (the record may still be there)."""
    http = {"api.openai.com": mocks.chat} if mocks.chat is not None else {}
    ws: dict[str, Any] = {}
    if mocks.listen is not None:
        ws["api.deepgram.com/v1/listen"] = mocks.listen
    if mocks.speak is not None:
        ws["api.deepgram.com/v1/speak"] = mocks.speak
    probe = hook.expect(name, mode)
    out = CallOut(name, mode, None, mocks, probe)
    async with pipeline_net(http, ws) as net:
        if mocks.chat is not None:
            await warm_http(net)
        svc = dataclasses.replace(services, net=net, env=KEYS)
        registry = CallRegistry(cfg)
        control = RecordingControl()
        records = MemoryRecords()
        server = AudioSocketServer(cfg, registry, svc, control, records,
                                   on_ended=control.on_ended, prompts={})
        call_uuid = str(uuidlib.uuid4())
        context = c.CallContext(callerid="5551234", calleridname=name, dnid="7000",
                                channel=f"PJSIP/bench-{name}", uniqueid=name)
        reply = registry.offer(c.Offer(uuid=call_uuid, assistant=assistant, context=context))
        if not isinstance(reply, c.Accept):
            out.error = f"offer refused: {reply}"
            return out
        ast_side, sidecar_side = socket_stream_pair()
        session = AudioSocketSession(ast_side, call_uuid, caller=script.player())
        control.session = session
        with trio.move_on_after(max_seconds) as limit:  # cancels the server's side too
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.handle, sidecar_side)
                out.asterisk = await session.run()
        if limit.cancelled_caught:
            out.error = f"the call did not end within {max_seconds:g} s"
        out.record = records.records[0] if records.records else None
        if out.record is not None and out.record.status not in ("COMPLETED", "CALLER_HANGUP"):
            out.error = out.error or f"{out.record.status}: {out.record.reason}"
    return out
