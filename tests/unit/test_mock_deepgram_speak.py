"""The mock Deepgram TTS servers: the /v1/speak WebSocket against a raw trio-websocket client and
the REST /v1/speak against httpx, both in virtual time over memory streams; then loopback TCP
and the process. Message shapes are those of reference/providers.md section 4.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio
import trio.testing
import trio_websocket

from tests.mocks.client import RawClient
from tests.mocks.deepgram_speak import (
    PATH,
    MockSpeakRestServer,
    MockSpeakServer,
    SpeakLog,
    SpeakScript,
)
from tests.mocks.http import open_memory_transport
from tests.unit.test_mock_deepgram_listen import Headers, connect, rejected_upgrade

ROOT = Path(__file__).resolve().parents[2]
AUTH = [(b"Authorization", b"Token test-key")]
MULAW = "model=aura-2-thalia-en&encoding=mulaw&sample_rate=8000"
WIDTH = {"mulaw": 1, "alaw": 1, "linear16": 2}
URL = "https://api.deepgram.com/v1/speak"


class Client(RawClient):
    def audio(self, start: int = 0, end: int | None = None) -> list[bytes]:
        return [e["data"] for e in self.events[start:end] if e["type"] == "Audio"]

    def at(self, type_name: str, n: int = 1) -> float:
        return self.times[self.index(type_name, n)]

    def summary(self) -> list[str]:
        """Message types, a run of audio frames listed once."""
        out: list[str] = []
        for e in self.events:
            if not (e["type"] == "Audio" and out and out[-1] == "Audio"):
                out.append(e["type"])
        return out


@asynccontextmanager
async def session(
    server: MockSpeakServer,
    query: str = MULAW,
    headers: Headers = AUTH,
    subprotocols: list[str] | None = None,
) -> AsyncIterator[tuple[Client, SpeakLog]]:
    """A client connected over an in-memory stream pair, past Metadata."""
    async with connect(server, f"{PATH}?{query}", Client, headers, subprotocols) as (client, log):
        await client.wait("Metadata")
        yield client, log


# -- WebSocket: upgrade ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("headers", "scheme"),
    [(AUTH, "Token"), ([(b"Authorization", b"Bearer test-key")], "Bearer"), ([], "subprotocol")],
)
async def test_upgrade_accepts_the_key_and_metadata_comes_first(
    autojump_clock: trio.abc.Clock, headers: list[tuple[bytes, bytes]], scheme: str
) -> None:
    server = MockSpeakServer()
    protocols = ["token", "test-key"] if scheme == "subprotocol" else None
    async with session(server, MULAW, headers, protocols) as (client, log):
        assert client.events == [
            {
                "type": "Metadata",
                "request_id": log.request_id,
                "model_name": "aura-2-thalia-en",
                "model_version": server.script.model_version,
                "model_uuid": server.script.model_uuid,
            }
        ]
        assert log.auth_scheme == scheme and "test-key" not in json.dumps(log.headers)
    async with session(server, "") as (client, log):  # the defaults
        assert log.params is not None
        assert (log.params.model, log.params.encoding, log.params.sample_rate) == (
            "aura-asteria-en",
            "linear16",
            24000,
        )


@pytest.mark.parametrize(
    ("resource", "headers", "status", "needle"),
    [
        (f"{PATH}?{MULAW}", [(b"Authorization", b"Token nope")], 401, "credentials"),
        (f"/v1/listen?{MULAW}", AUTH, 404, "/v1/listen"),
        (f"{PATH}?encoding=mp3", AUTH, 400, "'encoding' value of 'mp3'"),
        (f"{PATH}?encoding=mulaw&sample_rate=24000", AUTH, 400, "'sample_rate' value of '24000'"),
        (f"{PATH}?encoding=linear16&sample_rate=44100", AUTH, 400, "'sample_rate'"),
        (f"{PATH}?speed=fast", AUTH, 400, "'speed' value of 'fast'"),
    ],
)
async def test_refused_upgrades(
    autojump_clock: trio.abc.Clock,
    resource: str,
    headers: list[tuple[bytes, bytes]],
    status: int,
    needle: str,
) -> None:
    server = MockSpeakServer()
    rejected = await rejected_upgrade(server, resource, headers)
    body = json.loads(rejected.body or b"")
    assert rejected.status_code == status and needle in body["err_msg"]
    assert body["request_id"] == server.rejected[0].request_id and server.sessions == []
    down = MockSpeakServer(script=SpeakScript(reject_with_status=503))
    assert (await rejected_upgrade(down, f"{PATH}?{MULAW}")).status_code == 503


# -- WebSocket: speaking ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "encoding", "rate", "speed"),
    [
        (MULAW, "mulaw", 8000, 1.0),
        ("encoding=alaw&sample_rate=16000", "alaw", 16000, 1.0),
        ("encoding=linear16&sample_rate=48000", "linear16", 48000, 1.0),
        ("speed=1.2", "linear16", 24000, 1.2),  # speed divides the length
    ],
)
async def test_speak_flush_audio_length_timing_and_flushed(
    autojump_clock: trio.abc.Clock, query: str, encoding: str, rate: int, speed: float
) -> None:
    async with session(MockSpeakServer(), query) as (client, log):
        t0 = trio.current_time()
        await client.send(type="Speak", text="We open at ")
        await client.send(type="Speak", text="nine.")  # 16 chars: 960 ms of audio at speed 1
        await client.send(type="Flush")
        flushed = await client.wait("Flushed")
    ms = round(960 / speed)
    chunks = client.audio()
    assert flushed == {"type": "Flushed", "sequence_id": 0}
    assert client.summary() == ["Metadata", "Audio", "Flushed"]
    assert sum(map(len, chunks)) == ms * rate // 1000 * WIDTH[encoding]
    assert {len(c) for c in chunks[:-1]} == {100 * rate // 1000 * WIDTH[encoding]}
    assert client.at("Audio") - t0 == pytest.approx(0.15)  # first_byte_delay
    assert client.at("Audio", len(chunks)) - t0 == pytest.approx(0.15 + (len(chunks) - 1) * 0.025)
    (f,) = log.flushes
    assert (f.sequence_id, f.text, f.audio_ms_total, f.audio_ms_sent, f.cleared) == (
        0,
        "We open at nine.",
        ms,
        ms,
        False,
    )
    assert f.first_audio_at == client.at("Audio") and f.flushed_at == client.at("Flushed")
    assert log.texts == ["We open at ", "nine."] and log.spoken == ["We open at nine."]
    if encoding == "linear16":
        pcm = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float32)
        assert 5000 < np.sqrt(np.mean(pcm * pcm)) < 6000  # the tone at amplitude 8000


async def test_flushes_queue_in_order_and_an_empty_flush_gets_flushed_without_audio(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with session(MockSpeakServer()) as (client, log):
        t0 = trio.current_time()
        await client.send(type="Speak", text="Hi")  # min_ms: 200 ms
        await client.send(type="Flush")
        await client.send(type="Speak", text="Second one")  # 600 ms
        await client.send(type="Flush")
        await client.send(type="Flush")  # nothing buffered
        await client.wait("Flushed", 3)
    assert client.summary() == ["Metadata", "Audio", "Flushed", "Audio", "Flushed", "Flushed"]
    assert [e["sequence_id"] for e in client.events if e["type"] == "Flushed"] == [0, 1, 2]
    assert [(f.text, f.audio_ms_sent) for f in log.flushes] == [
        ("Hi", 200),
        ("Second one", 600),
        ("", 0),
    ]
    second = log.flushes[1].first_audio_at
    assert second is not None and second - t0 == pytest.approx(0.175)  # right after the first


async def test_clear_cuts_the_audio_within_a_frame_drops_the_queue_then_cleared(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = SpeakScript(send_rate=1.0)
    async with session(MockSpeakServer(script=script)) as (client, log):
        await client.send(type="Speak", text="x" * 50)  # 3 s of audio
        await client.send(type="Flush")
        await client.send(type="Speak", text="queued")
        await client.send(type="Flush")
        await client.send(type="Speak", text="buffered")
        await log.wait_for_sent("Audio", 5)
        mark = len(client.events)
        await client.send(type="Clear")
        cleared = await client.wait("Cleared")
        assert len(client.audio(mark, client.index("Cleared"))) <= 1
        await trio.sleep(1)
        assert client.audio(client.index("Cleared")) == []  # nothing more of the cut flush
        await client.send(type="Speak", text="After")
        await client.send(type="Flush")
        after = await client.wait("Flushed")
    assert cleared == {"type": "Cleared", "sequence_id": 2} and after["sequence_id"] == 2
    cut, queued, later = log.flushes
    assert cut.cleared and cut.flushed_at is None and 400 <= cut.audio_ms_sent <= 600
    assert queued.cleared and queued.audio_ms_sent == 0 and not later.cleared
    (clear,) = log.clears
    assert (clear.cut, clear.dropped, clear.dropped_text) == (0, [1], "buffered")
    assert log.spoken == ["After"]


async def test_close_speaks_the_buffer_then_closes_1000(autojump_clock: trio.abc.Clock) -> None:
    async with session(MockSpeakServer()) as (client, log):
        await client.send(type="Speak", text="Goodbye.")
        await client.send(type="Close")
        reason = await client.wait_closed()
    assert reason.code == 1000 and log.close_reason == "close"
    assert client.summary() == ["Metadata", "Audio", "Flushed"] and log.spoken == ["Goodbye."]


async def test_flush_limit_warns_and_ignores_the_21st_flush_for_60_s(
    autojump_clock: trio.abc.Clock,
) -> None:
    script = SpeakScript(send_rate=0, first_byte_delay=0)
    async with session(MockSpeakServer(script=script)) as (client, log):
        for k in range(21):
            await client.send(type="Speak", text=f"{k}")
            await client.send(type="Flush")
        warning = await client.wait("Warning")
        await client.wait("Flushed", 20)
        await trio.sleep(60)
        await client.send(type="Flush")
        last = await client.wait("Flushed", 21)
    assert set(warning) == {"type", "description", "code"}
    assert warning["code"] == "FLUSH_LIMIT_EXCEEDED" and "20" in warning["description"]
    assert last["sequence_id"] == 20 and log.flushes[-1].text == "20"  # the text stayed buffered
    assert log.warnings == [warning]


async def test_disconnect_on_flush_drops_the_stream_halfway(autojump_clock: trio.abc.Clock) -> None:
    script = SpeakScript(disconnect_on_flush=2)
    async with session(MockSpeakServer(script=script)) as (client, log):
        await client.send(type="Speak", text="One.")
        await client.send(type="Flush")
        await client.send(type="Speak", text="x" * 20)  # 1200 ms: 12 frames
        await client.send(type="Flush")
        reason = await client.wait_closed()
    assert reason.code == 1006 and log.close_reason == "disconnect_on_flush"
    assert client.summary() == ["Metadata", "Audio", "Flushed", "Audio"]
    assert log.flushes[1].audio_ms_sent == 600 and log.flushes[1].flushed_at is None


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        ("{not json", 1008, "DATA-0000"),
        ('{"type": "Speak"}', 1008, "DATA-0000"),
        ('{"type": "Finalize"}', 1008, "DATA-0000"),
        (b"\x00\x01", 1003, "MESSAGE-0000"),
    ],
)
async def test_bad_frames_close_the_socket(
    autojump_clock: trio.abc.Clock, frame: str | bytes, code: int, reason: str
) -> None:
    async with session(MockSpeakServer()) as (client, log):
        await client.ws.send_message(frame)
        closed = await client.wait_closed()
    assert (closed.code, closed.reason) == (code, reason) and len(log.problems) == 1


async def test_idle_timeout_when_scripted(autojump_clock: trio.abc.Clock) -> None:
    async with session(MockSpeakServer(script=SpeakScript(idle_timeout=30))) as (client, log):
        t0 = trio.current_time()
        closed = await client.wait_closed()
        assert trio.current_time() - t0 == pytest.approx(30)
    assert (closed.code, closed.reason, log.close_reason) == (1011, "NET-0001", "idle")


# -- REST -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "content_type", "header"),
    [
        ("encoding=mulaw&sample_rate=8000&container=none", "audio/mulaw;rate=8000", 0),
        ("encoding=linear16&sample_rate=16000", "audio/wav", 44),
    ],  # container: wav by default
)
async def test_rest_streams_the_audio_chunked_after_first_byte_delay(
    autojump_clock: trio.abc.Clock, query: str, content_type: str, header: int
) -> None:
    server = MockSpeakRestServer()
    arrivals: list[tuple[float, bytes]] = []
    async with open_memory_transport({"api.deepgram.com": server}) as transport:
        async with httpx.AsyncClient(transport=transport) as client:
            t0 = trio.current_time()
            async with client.stream(
                "POST",
                f"{URL}?model=aura-2-thalia-en&{query}",
                json={"text": "Please hold."},
                headers={"Authorization": "Token test-key"},
            ) as response:
                async for chunk in response.aiter_raw():
                    arrivals.append((trio.current_time() - t0, chunk))
    (speech,) = server.speeches
    assert response.status_code == 200 and response.headers["content-type"] == content_type
    assert response.headers["dg-request-id"] == speech.request_id
    assert response.headers["dg-model-name"] == "aura-2-thalia-en"
    assert response.headers["dg-char-count"] == "12"
    assert response.headers["transfer-encoding"] == "chunked"
    body = b"".join(c for _, c in arrivals)
    width = 2 if header else 1
    rate = 16000 if header else 8000
    assert len(body) == header + 720 * rate // 1000 * width  # 12 chars x 60 ms
    assert arrivals[0][0] == pytest.approx(0.15)
    assert arrivals[-1][0] == pytest.approx(0.15 + 7 * 0.025)
    assert speech.audio_ms_sent == 720 and speech.bytes_sent == len(body)
    if header:
        with wave.open(io.BytesIO(body)) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnframes()) == (16000, 2, 11520)
    assert server.records[0].completed


OK = {"text": "x"}


@pytest.mark.parametrize(
    ("script", "method", "query", "body", "key", "status", "code"),
    [
        (SpeakScript(), "POST", "encoding=mulaw", {"txt": "x"}, "test-key", 400, "INVALID_INPUT"),
        (SpeakScript(), "POST", "encoding=mp3", OK, "test-key", 400, "UNSUPPORTED_IN_MOCK"),
        (
            SpeakScript(),
            "POST",
            "model=aura-2-thalia-en",
            OK,
            "test-key",
            400,
            "UNSUPPORTED_IN_MOCK",
        ),  # no encoding: openapi's default is mp3
        (SpeakScript(), "POST", "encoding=wav", OK, "test-key", 400, "INVALID_QUERY_PARAMETER"),
        (SpeakScript(), "GET", "encoding=mulaw", None, "test-key", 405, "METHOD_NOT_ALLOWED"),
        (SpeakScript(), "POST", "encoding=mulaw", OK, "nope", 401, "INVALID_AUTH"),
        (
            SpeakScript(reject_with_status=503),
            "POST",
            "encoding=mulaw",
            OK,
            "test-key",
            503,
            "SERVICE_UNAVAILABLE",
        ),
        (
            SpeakScript(fail_request=1),
            "POST",
            "encoding=mulaw",
            OK,
            "test-key",
            500,
            "INTERNAL_SERVER_ERROR",
        ),
    ],
)
async def test_rest_errors_are_deepgram_json(
    autojump_clock: trio.abc.Clock,
    script: SpeakScript,
    method: str,
    query: str,
    body: dict[str, str] | None,
    key: str,
    status: int,
    code: str,
) -> None:
    server = MockSpeakRestServer(script=script)
    async with open_memory_transport({"api.deepgram.com": server}) as transport:
        async with httpx.AsyncClient(transport=transport) as client:
            r = await client.request(
                method, f"{URL}?{query}", json=body, headers={"Authorization": f"Token {key}"}
            )
            again = await client.post(
                f"{URL}?encoding=mulaw", json=OK, headers={"Authorization": "Token test-key"}
            )
    speech = server.speeches[0]
    assert r.status_code == status == speech.status
    assert (
        r.json()
        == {"err_code": code, "err_msg": r.json()["err_msg"], "request_id": speech.request_id}
        == speech.error
    )
    assert r.headers["dg-error"] == r.json()["err_msg"]
    assert again.status_code == (503 if script.reject_with_status else 200)  # 1st one failed


async def test_rest_disconnect_request_drops_the_body_halfway(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = MockSpeakRestServer(script=SpeakScript(disconnect_request=1))
    got = b""
    async with open_memory_transport({"api.deepgram.com": server}) as transport:
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                async with client.stream(
                    "POST",
                    f"{URL}?encoding=mulaw&container=none",
                    json={"text": "x" * 20},
                    headers={"Authorization": "Token test-key"},
                ) as response:
                    async for chunk in response.aiter_raw():
                        got += chunk
    assert len(got) == 600 * 8 and server.speeches[0].disconnected
    assert server.records[0].disconnected


# -- real sockets and the process ------------------------------------------------------------------
async def test_process_serves_the_websocket_and_rest_over_tcp(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    os.mkfifo(ready)  # opening a FIFO blocks until the writer does: no polling
    cmd = [
        sys.executable,
        "-m",
        "tests.mocks.deepgram_speak",
        "--port",
        "0",
        "--rest-port",
        "0",
        "--ready",
        str(ready),
        "--api-key",
        "K",
        "--send-rate",
        "0",
        "--first-byte-delay",
        "0",
    ]
    proc = await trio.lowlevel.open_process(cmd, cwd=ROOT, stdin=subprocess.PIPE)
    try:
        with trio.fail_after(30):
            info = json.loads(
                await trio.to_thread.run_sync(ready.read_text, abandon_on_cancel=True)
            )
            assert info["pid"] == proc.pid
            async with await trio.open_tcp_stream("127.0.0.1", info["port"]) as stream:
                async with trio.open_nursery() as nursery:
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,
                        "localhost",
                        f"{PATH}?{MULAW}",
                        extra_headers=[(b"Authorization", b"Token K")],
                    )
                    got = [json.loads(await ws.get_message())["type"]]
                    await ws.send_message(json.dumps({"type": "Speak", "text": "Hello."}))
                    await ws.send_message(json.dumps({"type": "Close"}))
                    nbytes = 0
                    with pytest.raises(trio_websocket.ConnectionClosed):
                        while m := await ws.get_message():
                            if isinstance(m, bytes):
                                nbytes += len(m)
                            else:
                                got.append(json.loads(m)["type"])
                    nursery.cancel_scope.cancel()
            async with httpx.AsyncClient() as client:
                r = await client.post(
                    f"http://127.0.0.1:{info['rest_port']}/v1/speak?{MULAW}&container=none",
                    json={"text": "Hello."},
                    headers={"Authorization": "Token K"},
                )
            assert got == ["Metadata", "Flushed"] and nbytes == 360 * 8
            assert r.status_code == 200 and len(r.content) == 360 * 8
            assert proc.stdin is not None
            await proc.stdin.aclose()
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if proc.stdin is not None:
            await proc.stdin.aclose()
