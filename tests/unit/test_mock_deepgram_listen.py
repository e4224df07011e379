"""The mock Deepgram streaming STT server (/v1/listen) against a raw trio-websocket client.

Memory streams under the autojump clock (exact virtual timings: the client sends 20 ms frames in
real time, so the frame covering audio [k*20, k*20+20) ms arrives at t0 + k*0.02), and one
session over loopback TCP. Message shapes are those of reference/providers.md section 3.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import numpy as np
import pytest
import trio
import trio.testing
import trio_websocket

from media_sidecar.dsp.g711 import alaw_encode, ulaw_encode
from tests.mocks.client import RawClient
from tests.mocks.common import MockWsServer
from tests.mocks.deepgram_listen import PATH, ListenLog, ListenScript, MockListenServer

AUTH = [(b"Authorization", b"Token test-key")]
PHONE = (
    "model=nova-2-phonecall&encoding=mulaw&sample_rate=8000&channels=1&interim_results=true"
    "&endpointing=300&utterance_end_ms=1000&vad_events=true&smart_format=true&language=en-US"
)
PLAIN = "encoding=mulaw&sample_rate=8000"


def frame(encoding: str, rate: int, amplitude: int) -> bytes:
    """20 ms of a 1 kHz tone in the given input format."""
    pcm = (amplitude * np.sin(2 * np.pi * 1000 * np.arange(rate // 50) / rate)).astype("<i2")
    if encoding == "mulaw":
        return ulaw_encode(pcm)
    if encoding == "alaw":
        return alaw_encode(pcm)
    return pcm.tobytes()


class Client(RawClient):
    def __init__(self, ws: trio_websocket.WebSocketConnection, fmt: tuple[str, int]) -> None:
        super().__init__(ws)
        self.fmt = fmt
        self.sent = b""

    async def speak(self, loud_ms: int, quiet_ms: int, *, paced: bool = True) -> None:
        """20 ms frames in real (runtime) time: ``loud_ms`` of tone, then silence."""
        loud, quiet = frame(*self.fmt, 8000), frame(*self.fmt, 0)
        for f in [loud] * (loud_ms // 20) + [quiet] * (quiet_ms // 20):
            await self.ws.send_message(f)
            self.sent += f
            if paced:
                await trio.sleep(0.02)

    def at(self, type_name: str, n: int = 1) -> float:
        return self.times[self.index(type_name, n)]


def fmt_of(query: str) -> tuple[str, int]:
    q = dict(p.split("=") for p in query.split("&"))
    return q["encoding"], int(q["sample_rate"])


C = TypeVar("C", bound=RawClient)
Headers = list[tuple[bytes, bytes]]


@asynccontextmanager
async def connect(
    server: MockWsServer,
    resource: str,
    make: Callable[[trio_websocket.WebSocketConnection], C],
    headers: Headers = AUTH,
    subprotocols: list[str] | None = None,
) -> AsyncIterator[tuple[C, Any]]:
    """A client (``make(ws)``, reading) connected to ``server`` over an in-memory stream pair,
    and its session's log (shared with the speak mock's tests)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    n = len(server.sessions) + 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.serve_stream, server_stream)
        ws = await trio_websocket.wrap_client_stream(
            nursery,
            client_stream,  # type: ignore[arg-type]
            "localhost",
            resource,
            subprotocols=subprotocols,
            extra_headers=headers,
        )
        client = make(ws)
        nursery.start_soon(client.reader)
        yield client, await server.wait_for_session(n)
        await ws.aclose()
        nursery.cancel_scope.cancel()


def session(
    server: MockListenServer,
    query: str = PHONE,
    headers: Headers = AUTH,
    subprotocols: list[str] | None = None,
) -> AbstractAsyncContextManager[tuple[Client, ListenLog]]:
    def make(ws: trio_websocket.WebSocketConnection) -> Client:
        return Client(ws, fmt_of(query))

    return connect(server, f"{PATH}?{query}", make, headers, subprotocols)


async def rejected_upgrade(
    server: MockWsServer, resource: str, headers: Headers = AUTH
) -> trio_websocket.ConnectionRejected:
    """The refusal of an upgrade to ``resource`` (shared with the speak mock's tests)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with pytest.RaisesGroup(trio_websocket.ConnectionRejected) as group:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.serve_stream, server_stream)
            await trio_websocket.wrap_client_stream(
                nursery,
                client_stream,  # type: ignore[arg-type]
                "localhost",
                resource,
                extra_headers=headers,
            )
    await client_stream.aclose()
    rejected = group.value.exceptions[0]
    assert isinstance(rejected, trio_websocket.ConnectionRejected)
    return rejected


# -- the upgrade ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "scheme"),
    [
        ([(b"Authorization", b"Token test-key")], "Token"),
        ([(b"Authorization", b"Bearer test-key")], "Bearer"),
        ([], "subprotocol"),
    ],
)
async def test_upgrade_accepts_token_bearer_and_subprotocol_and_records_the_query(
    autojump_clock: trio.abc.Clock, headers: list[tuple[bytes, bytes]], scheme: str
) -> None:
    protocols = ["token", "test-key"] if scheme == "subprotocol" else None
    query = f"{PHONE}&keyterm=ACME&keyterm=extension"
    async with session(MockListenServer(), query, headers, protocols) as (client, log):
        assert log.auth_scheme == scheme and log.path == PATH
        assert "test-key" not in json.dumps(log.headers)
        assert log.query["keyterm"] == ["ACME", "extension"] and log.query["model"] == [
            "nova-2-phonecall"
        ]
        p = log.params
        assert p is not None and (p.encoding, p.sample_rate, p.channels) == ("mulaw", 8000, 1)
        assert (p.interim_results, p.endpointing, p.utterance_end_ms) == (True, 300, 1000)
        assert (p.vad_events, p.smart_format, p.punctuate, p.language) == (
            True,
            True,
            False,
            "en-US",
        )
        assert p.keyterm == ("ACME", "extension") and client.events == []


@pytest.mark.parametrize(
    ("resource", "headers", "status", "code", "needle"),
    [
        (f"{PATH}?{PLAIN}", [(b"Authorization", b"Token wrong")], 401, "INVALID_AUTH", "cred"),
        (f"{PATH}?{PLAIN}", [], 401, "INVALID_AUTH", "cred"),
        (f"/v1/speak?{PLAIN}", AUTH, 404, "NOT_FOUND", "/v1/speak"),
        (f"{PATH}?encoding=mulaw", AUTH, 400, "INVALID_QUERY_PARAMETER", "sample_rate"),
        (f"{PATH}?sample_rate=8000", AUTH, 400, "INVALID_QUERY_PARAMETER", "encoding"),
        (
            f"{PATH}?encoding=pcm&sample_rate=8000",
            AUTH,
            400,
            "INVALID_QUERY_PARAMETER",
            "'encoding' value of 'pcm'",
        ),
        (
            f"{PATH}?{PLAIN}&utterance_end_ms=1000",
            AUTH,
            400,
            "INVALID_QUERY_PARAMETER",
            "interim_results=true",
        ),
        (
            f"{PATH}?{PLAIN}&interim_results=true&utterance_end_ms=999",
            AUTH,
            400,
            "INVALID_QUERY_PARAMETER",
            "'utterance_end_ms' value of '999'",
        ),
        (f"{PATH}?{PLAIN}&vad_events=yes", AUTH, 400, "INVALID_QUERY_PARAMETER", "vad_events"),
        (f"{PATH}?{PLAIN}&endpointing=soon", AUTH, 400, "INVALID_QUERY_PARAMETER", "endpointing"),
    ],
)
async def test_refused_upgrades_answer_http_errors_with_a_deepgram_body(
    autojump_clock: trio.abc.Clock,
    resource: str,
    headers: list[tuple[bytes, bytes]],
    status: int,
    code: str,
    needle: str,
) -> None:
    server = MockListenServer()
    rejected = await rejected_upgrade(server, resource, headers)
    (log,) = server.rejected
    body = json.loads(rejected.body or b"")
    assert rejected.status_code == status == log.rejected_status
    assert body["err_code"] == code and needle in body["err_msg"]
    assert body["request_id"] == log.request_id and server.sessions == []
    assert dict(rejected.headers)[b"dg-error"].decode() == body["err_msg"]


async def test_reject_with_status_refuses_every_upgrade(autojump_clock: trio.abc.Clock) -> None:
    server = MockListenServer(script=ListenScript(reject_with_status=503))
    rejected = await rejected_upgrade(server, f"{PATH}?{PLAIN}")
    assert rejected.status_code == 503
    assert json.loads(rejected.body or b"")["err_code"] == "SERVICE_UNAVAILABLE"


# -- transcripts ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fmt", ["mulaw&sample_rate=8000", "alaw&sample_rate=8000", "linear16&sample_rate=16000"]
)
async def test_speech_started_interims_final_and_utterance_end_on_the_audio_clock(
    autojump_clock: trio.abc.Clock, fmt: str
) -> None:
    script = ListenScript(transcripts=["What time do you open?"])
    query = PHONE.replace("mulaw&sample_rate=8000", fmt)
    async with session(MockListenServer(script=script), query) as (client, log):
        t0 = trio.current_time()
        await client.speak(1000, 1200)
        await client.wait("UtteranceEnd")
        assert client.types() == ["SpeechStarted", *["Results"] * 5, "UtteranceEnd"]
        started = client.events[0]
        assert started == {"type": "SpeechStarted", "channel": [0], "timestamp": 0.0}
        assert client.at("SpeechStarted") - t0 == pytest.approx(0.04)  # 3rd loud frame
        interims = [e for e in client.events if e["type"] == "Results" and not e["is_final"]]
        shown = [e["channel"]["alternatives"][0]["transcript"] for e in interims]
        assert shown == ["What", "What time", "What time do", "What time do you"]
        times = [client.at("Results", k) - t0 for k in range(1, 5)]
        assert times == pytest.approx([0.28, 0.58, 0.88, 1.18])  # every 300 ms of audio
        assert all(not e["speech_final"] for e in interims)
        final = await client.wait("Results", 5)
        # the 300th ms of quiet after the last loud frame (audio 1.0 s) arrives at 1.28
        assert client.at("Results", 5) - t0 == pytest.approx(1.28)
        assert (final["is_final"], final["speech_final"], final["from_finalize"]) == (
            True,
            True,
            False,
        )
        assert (final["start"], final["duration"], final["channel_index"]) == (0.0, 1.3, [0, 1])
        alt = final["channel"]["alternatives"][0]
        assert alt["transcript"] == "What time do you open?" and alt["confidence"] == 0.98
        assert [(w["word"], w["punctuated_word"], w["start"], w["end"]) for w in alt["words"]] == [
            ("what", "What", 0.0, 0.2),
            ("time", "time", 0.2, 0.4),
            ("do", "do", 0.4, 0.6),
            ("you", "you", 0.6, 0.8),
            ("open", "open?", 0.8, 1.0),
        ]
        assert final["metadata"] == {
            "request_id": log.request_id,
            "model_info": {
                "name": "2-phonecall-nova",
                "version": "2024-01-18.26916",
                "arch": "nova-2",
            },
            "model_uuid": script.model_uuid,
        }
        end = await client.wait("UtteranceEnd")
        assert end == {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 1.0}
        assert client.at("UtteranceEnd") - t0 == pytest.approx(1.98)  # audio 2.0 = 1.0 + 1 s
    (utt,) = log.utterances
    assert (utt.speech_start, utt.speech_end, utt.interims) == (0.0, 1.0, 4)
    assert utt.final_sent_at is not None and utt.final_sent_at - t0 == pytest.approx(1.28)
    assert log.audio_in_ms == 2200 and log.count("Media") == 110 and log.problems == []


async def test_defaults_endpointing_10ms_and_final_delay_without_punctuation(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = ListenScript(transcripts=["Yes, please."], final_delay=0.25)
    async with session(MockListenServer(script=script), PLAIN) as (client, log):
        t0 = trio.current_time()
        await client.speak(400, 600)
        final = await client.wait("Results")
        await client.speak(0, 600)  # no UtteranceEnd without utterance_end_ms
    assert client.types() == ["Results"]
    assert client.at("Results") - t0 == pytest.approx(0.40 + 0.25)  # 1st quiet frame + delay
    alt = final["channel"]["alternatives"][0]
    assert alt["transcript"] == "yes please" and final["speech_final"] is True
    assert [set(w) for w in alt["words"]] == [{"word", "start", "end", "confidence"}] * 2
    assert log.transcripts == ["Yes, please."]


async def test_endpointing_false_finalizes_segments_without_speech_final(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with session(MockListenServer(), f"{PLAIN}&endpointing=false") as (client, log):
        t0 = trio.current_time()
        await client.speak(400, 600)
        final = await client.wait("Results")
        await client.speak(300, 600)
        second = await client.wait("Results", 2)
    assert client.at("Results") - t0 == pytest.approx(0.40 + 0.48)  # segment_ms 500 of quiet
    assert (final["is_final"], final["speech_final"]) == (True, False)
    assert second["channel"]["alternatives"][0]["transcript"] == "utterance 2"
    assert (second["start"], second["duration"]) == (0.9, 0.9)  # segments tile the audio
    assert log.params is not None and log.params.endpointing is None


async def test_finalize_flushes_the_utterance_in_progress(autojump_clock: trio.abc.Clock) -> None:
    script = ListenScript(transcripts=["one two three"])
    async with session(MockListenServer(script=script), PLAIN + "&endpointing=500") as (
        client,
        log,
    ):
        await client.speak(600, 100)
        await client.send(type="Finalize")
        final = await client.wait("Results")
        await client.speak(0, 600)
        await client.send(type="Finalize")  # nothing in progress: nothing sent
        await log.wait_for("Finalize", 2)
        await client.speak(0, 100)
    assert client.types() == ["Results"]
    assert (final["is_final"], final["speech_final"], final["from_finalize"]) == (True, False, True)
    words = final["channel"]["alternatives"][0]["words"]
    assert [w["end"] for w in words] == [0.2, 0.4, 0.6]
    assert log.finalize_count == 2 and log.utterances[0].from_finalize


@pytest.mark.parametrize("final_delay", [0.0, 0.5])
async def test_close_stream_sends_pending_finals_then_metadata_then_closes_1000(
    autojump_clock: trio.abc.Clock, final_delay: float
) -> None:
    script = ListenScript(final_delay=final_delay)
    async with session(MockListenServer(script=script), PLAIN + "&endpointing=200") as (
        client,
        log,
    ):
        t0 = trio.current_time()
        await client.speak(300, 200)  # speech ends; its final waits out final_delay
        await client.speak(300, 0)  # a second utterance in progress at CloseStream
        await client.send(type="CloseStream")
        reason = await client.wait_closed()
    assert reason.code == 1000 and log.close_reason == "close_stream" and log.close_code == 1000
    assert client.types() == ["Results", "Results", "Metadata"]
    first, second, meta = client.events
    assert first["speech_final"] and not second["speech_final"] and not second["from_finalize"]
    assert client.at("Metadata") - t0 == pytest.approx(0.8 + final_delay)
    assert meta == {
        "type": "Metadata",
        "transaction_key": "deprecated",
        "request_id": log.request_id,
        "sha256": hashlib.sha256(client.sent).hexdigest(),
        "created": meta["created"],
        "duration": 0.8,
        "channels": 1,
    }
    assert meta["created"].endswith("Z") and len(meta["created"]) == 24


async def test_empty_binary_frame_is_the_deprecated_close_stream(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with session(MockListenServer(), PLAIN) as (client, log):
        await client.ws.send_message(b"")
        assert (await client.wait_closed()).code == 1000
    assert client.types() == ["Metadata"] and log.problems == [
        "empty binary frame (deprecated CloseStream)"
    ]


# -- keepalive, idle, errors, faults ---------------------------------------------------------------
async def test_keepalive_keeps_the_stream_open_and_silence_of_10s_closes_1011(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with session(MockListenServer(), PLAIN) as (client, log):
        t0 = trio.current_time()
        for _ in range(4):  # 32 s without audio, a KeepAlive every 8 s
            await trio.sleep(8)
            await client.send(type="KeepAlive")
        await log.wait_for("KeepAlive", 4)
        assert client.closed is None
        reason = await client.wait_closed()
        closed_at = trio.current_time()
    assert (reason.code, reason.reason) == (1011, "NET-0001")
    assert closed_at - t0 == pytest.approx(42)  # 10 s after the last KeepAlive
    assert [t - t0 for t in log.keepalive_times] == pytest.approx([8, 16, 24, 32])
    assert log.close_reason == "idle" and client.events == []


@pytest.mark.parametrize("text", ["{not json", '["KeepAlive"]', '{"type": "Flush"}'])
async def test_unparsable_or_unknown_text_closes_1008(
    autojump_clock: trio.abc.Clock, text: str
) -> None:
    async with session(MockListenServer(), PLAIN) as (client, log):
        await client.ws.send_message(text)
        reason = await client.wait_closed()
    assert (reason.code, reason.reason) == (1008, "DATA-0000")
    assert log.close_reason == "undecodable" and len(log.problems) == 1


@pytest.mark.parametrize(
    ("fault", "code", "reason"),
    [
        ("disconnect_after_utterances", 1006, "disconnect_after_utterances"),
        ("close_after_utterances", 1011, "close_after_utterances"),
    ],
)
async def test_faults_after_the_nth_final(
    autojump_clock: trio.abc.Clock, fault: str, code: int, reason: str
) -> None:
    script = ListenScript(**{fault: 2})  # type: ignore[arg-type]
    async with session(MockListenServer(script=script), PLAIN + "&endpointing=100") as (
        client,
        log,
    ):
        await client.speak(200, 200)
        await client.speak(200, 100)  # the 2nd final goes out as the last frame arrives
        closed = await client.wait_closed()
    assert closed.code == code and log.close_reason == reason
    assert closed.reason == ("NET-0000" if code == 1011 else None)
    assert client.types() == ["Results", "Results"] and log.transcripts == [
        "utterance 1",
        "utterance 2",
    ]


async def test_configure_is_acknowledged(autojump_clock: trio.abc.Clock) -> None:
    async with session(MockListenServer(), PLAIN) as (client, log):
        await client.send(type="Configure", keyterms=["ACME"])
        ok = await client.wait("ConfigureSuccess")
    assert ok == {"type": "ConfigureSuccess", "request_id": log.request_id, "keyterms": ["ACME"]}


# -- real sockets ---------------------------------------------------------------------------------
async def test_a_stream_over_loopback_tcp() -> None:
    server = MockListenServer(script=ListenScript(transcripts=["hello there"]))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            async with trio.open_nursery() as inner:
                ws = await trio_websocket.wrap_client_stream(
                    inner,
                    stream,
                    "localhost",
                    f"{PATH}?encoding=linear16&sample_rate=16000&endpointing=300",
                    extra_headers=[(b"Authorization", b"Bearer test-key")],
                )
                loud, quiet = frame("linear16", 16000, 8000), frame("linear16", 16000, 0)
                for f in [loud] * 25 + [quiet] * 20:
                    await ws.send_message(f)
                await ws.send_message(json.dumps({"type": "CloseStream"}))
                got: list[dict[str, Any]] = []
                with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                    while True:
                        got.append(json.loads(await ws.get_message()))
                inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    reason = closed.value.reason
    assert reason is not None and reason.code == 1000
    assert [m["type"] for m in got] == ["Results", "Metadata"]
    assert got[0]["channel"]["alternatives"][0]["transcript"] == "hello there"
    assert got[1]["duration"] == 0.9 and server.sessions[0].auth_scheme == "Bearer"
