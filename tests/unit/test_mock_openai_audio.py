"""The mock OpenAI audio REST server (TTS 5.2, STT 5.3 of reference/providers.md) against a real
httpx.AsyncClient: over the memory transport under the autojump clock (exact virtual timings),
and once over loopback TCP. The WAV files sent are written by the stdlib ``wave`` module."""

from __future__ import annotations

import io
import json
import struct
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
import trio

from media_sidecar.dsp.g711 import ulaw_encode
from tests.mocks.http import open_memory_transport
from tests.mocks.openai_audio import AudioScript, MockAudioServer
from tests.mocks.openai_audio.transcription import WavError, parse_wav

AUTH = {"Authorization": "Bearer test-key"}
SPEECH = {"model": "gpt-4o-mini-tts", "input": "hello world", "voice": "coral",
          "response_format": "pcm"}


@asynccontextmanager
async def openai(server: MockAudioServer, headers: dict[str, str] | None = None
                 ) -> AsyncIterator[httpx.AsyncClient]:
    async with open_memory_transport({"api.openai.com": server}) as transport:
        async with httpx.AsyncClient(transport=transport, base_url="https://api.openai.com/v1",
                                     headers=AUTH if headers is None else headers) as client:
            yield client


def make_wav(seconds: float, amplitude: int, rate: int = 8000, channels: int = 1) -> bytes:
    """A 16-bit WAV of a 1 kHz tone (amplitude 0: silence)."""
    t = np.arange(round(seconds * rate)) / rate
    pcm = (amplitude * np.sin(2 * np.pi * 1000 * t)).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm, channels).tobytes())
    return out.getvalue()


TONE, SILENCE = make_wav(1.0, 8000), make_wav(1.0, 0)


async def transcribe(client: httpx.AsyncClient, audio: bytes = TONE, filename: str = "turn.wav",
                     **fields: str) -> httpx.Response:
    data = {"model": "gpt-4o-transcribe", **fields}
    return await client.post("/audio/transcriptions", data=data,
                             files={"file": (filename, audio, "audio/wav")})


def sse(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\n\n")
    return [json.loads(e.removeprefix("data: ")) for e in text.strip().split("\n\n")]


# -- speech ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("speed", [1.0, 2.0, 0.5])
async def test_speech_pcm_length_first_byte_and_pacing(autojump_clock: trio.abc.Clock,
                                                       speed: float) -> None:
    server = MockAudioServer()
    arrivals: list[tuple[float, int]] = []
    async with openai(server) as client:
        async with client.stream("POST", "/audio/speech", json={**SPEECH, "speed": speed}) as r:
            assert r.status_code == 200 and r.headers["content-type"] == "audio/pcm"
            assert r.headers["transfer-encoding"] == "chunked"
            assert r.headers["x-request-id"].startswith("req_")
            async for chunk in r.aiter_raw():
                arrivals.append((trio.current_time(), len(chunk)))
    ms = 60 * len("hello world") / speed
    assert sum(n for _, n in arrivals) == round(24000 * ms / 1000) * 2
    assert [n for _, n in arrivals[:-1]] == [4800] * (len(arrivals) - 1)  # 100 ms chunks
    # the first chunk after the TTS latency, the rest at 4 x real time: 25 ms apart
    assert [t for t, _ in arrivals] == pytest.approx([0.25 + i * 0.025
                                                      for i in range(len(arrivals))])
    log = await server.wait_for_speech(1)
    assert log.status == 200 and log.completed and not log.client_closed and log.rendered
    assert log.audio_ms_total == ms and log.bytes_sent == log.audio_bytes_total
    assert log.first_byte_at == 0.25 and log.finished_at == pytest.approx(arrivals[-1][0])
    assert log.chunks_sent == len(arrivals) and log.body is not None
    assert log.body["speed"] == speed


async def test_speech_minimum_length_unpaced_and_scripted_pcm(
        autojump_clock: trio.abc.Clock) -> None:
    pcm = bytes(range(200)) * 10
    server = MockAudioServer(script=AudioScript(send_rate=0, first_byte_delay=0.5))
    scripted = MockAudioServer(script=AudioScript(pcm16=pcm, chunk_ms=1))
    async with openai(server) as client:
        short = await client.post("/audio/speech", json={**SPEECH, "input": "hi"})
    async with openai(scripted) as client:
        given = await client.post("/audio/speech", json={**SPEECH, "input": "anything"})
    assert len(short.content) == 24000 * 200 // 1000 * 2  # at least 200 ms
    assert (await server.wait_for_speech(1)).finished_at == 0.5  # unpaced: all at once
    assert given.content == pcm
    assert (await scripted.wait_for_speech(1)).chunks_sent == 42  # 48 bytes per 1 ms


async def test_speech_wav_header_and_compressed_formats_are_opaque(
        autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer()
    async with openai(server) as client:
        wav = await client.post("/audio/speech", json={**SPEECH, "response_format": "wav",
                                                       "voice": {"id": "voice_123"}})
        mp3 = await client.post("/audio/speech", json={**SPEECH, "response_format": "mp3",
                                                       "model": "tts-1"})
        styled = await client.post("/audio/speech", json={**SPEECH, "instructions": "Calm."})
    with wave.open(io.BytesIO(wav.content)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        assert w.getnframes() == 24 * 660
    assert wav.headers["content-type"] == "audio/wav"
    assert mp3.headers["content-type"] == "audio/mpeg" and 0 < len(mp3.content) < 100
    assert [s.rendered for s in server.speeches[:2]] == [True, False]
    assert server.speeches[1].audio_ms_total == 0
    assert styled.status_code == 200  # instructions are fine with gpt-4o-mini-tts


@pytest.mark.parametrize(("change", "param"), [
    ({"model": "tts-2"}, "model"),
    ({"input": None}, "input"),
    ({"input": "x" * 4097}, "input"),
    ({"voice": "bob"}, "voice"),
    ({"voice": {"name": "x"}}, "voice"),
    ({"model": "tts-1-hd", "instructions": "Speak slowly."}, "instructions"),
    ({"speed": 0.2}, "speed"),
    ({"speed": 4.5}, "speed"),
    ({"response_format": "ogg"}, "response_format"),
    ({"model": "tts-1", "stream_format": "sse"}, "stream_format"),
])
async def test_speech_validation_is_400_naming_the_param(
        autojump_clock: trio.abc.Clock, change: dict[str, Any], param: str) -> None:
    server = MockAudioServer()
    body = {k: v for k, v in {**SPEECH, **change}.items() if v is not None}
    async with openai(server) as client:
        r = await client.post("/audio/speech", json=body)
    assert r.status_code == 400 and trio.current_time() == 0  # refused at once
    assert r.json()["error"]["param"] == param
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert server.speeches[0].status == 400 and server.speeches[0].error == r.json()["error"]


async def test_auth_routing_and_scripted_rejection(autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer()
    async with openai(server, headers={}) as client:
        missing = await client.post("/audio/speech", json=SPEECH)
        wrong = await client.post("/audio/speech", json=SPEECH,
                                  headers={"Authorization": "Bearer sk-wrong-key-123"})
        token = await client.post("/audio/speech", json=SPEECH,
                                  headers={"Authorization": "Token test-key"})
        nowhere = await client.get("/audio/speech", headers=AUTH)
        bad_json = await client.post("/audio/speech", content=b"{", headers=AUTH)
    for r in (missing, wrong, token):
        assert r.status_code == 401
        assert r.json() == {"error": {"message": r.json()["error"]["message"],
                                      "type": "invalid_request_error", "param": None,
                                      "code": "invalid_api_key"}}
    assert "sk-wrong-key-123" not in wrong.text
    assert nowhere.status_code == 404 and "GET /v1/audio/speech" in nowhere.json()["error"]["message"]
    assert bad_json.status_code == 400
    assert len(server.speeches) == 1  # only the authenticated POST is logged
    down = MockAudioServer(script=AudioScript(reject_status=503))
    async with openai(down) as client:
        r = await transcribe(client)
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"


async def test_speech_fail_then_retry(autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer(script=AudioScript(fail_request=1))
    async with openai(server) as client:
        failed = await client.post("/audio/speech", json=SPEECH)
        failed_at = trio.current_time()
        ok = await client.post("/audio/speech", json=SPEECH)
    assert failed.status_code == 500 and failed_at == 0.25  # after the TTS latency
    assert failed.json()["error"]["type"] == "server_error"
    assert ok.status_code == 200 and len(ok.content) == 24 * 660 * 2
    assert [s.fault for s in server.speeches] == ["fail", None]


async def test_speech_disconnect_halfway_is_a_client_error(
        autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer(script=AudioScript(disconnect_request=1))
    received = b""
    async with openai(server) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/audio/speech", json=SPEECH) as r:
                async for chunk in r.aiter_raw():
                    received += chunk
    log = await server.wait_for_speech(1)
    assert len(received) == log.bytes_sent == 3 * 4800  # 3 of 7 chunks (660 ms)
    assert log.disconnected and not log.completed and log.fault == "disconnect"


async def test_client_closing_early_is_logged(autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer()
    async with openai(server) as client:
        async with client.stream("POST", "/audio/speech", json=SPEECH) as r:
            with trio.CancelScope() as scope:  # a barge-in: stop reading by cancellation
                async for _ in r.aiter_raw():
                    scope.cancel()
        log = await server.wait_for_speech(1)
    assert log.client_closed and not log.completed and log.bytes_sent == 4800
    assert log.finished_at == 0.25


async def test_speech_sse_stream_format(autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer()
    async with openai(server) as client:
        r = await client.post("/audio/speech", json={**SPEECH, "stream_format": "sse"})
    events = sse(r.text)
    assert r.headers["content-type"] == "text/event-stream"
    assert [e["type"] for e in events] == ["speech.audio.delta"] * 7 + ["speech.audio.done"]
    usage = events[-1]["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


# -- transcription ---------------------------------------------------------------------------------

async def test_transcription_json_usage_delay_and_log(autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer(script=AudioScript(transcripts=["What time do you open?"]))
    async with openai(server) as client:
        r = await transcribe(client, language="en", prompt="ACME", temperature="0.2")
        answered_at = trio.current_time()
    body = r.json()
    assert answered_at == 0.3 and r.headers["content-type"] == "application/json"
    assert body["text"] == "What time do you open?"
    usage = body["usage"]
    assert usage["type"] == "tokens" and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    log = await server.wait_for_transcription(1)
    assert log.fields == {"model": "gpt-4o-transcribe", "language": "en", "prompt": "ACME",
                          "temperature": "0.2"}
    assert (log.filename, log.audio_seconds, log.rate, log.channels) == ("turn.wav", 1.0, 8000, 1)
    assert log.rms == pytest.approx(8000 / 2**0.5, rel=0.01) and not log.silent
    assert log.text == "What time do you open?" and log.completed
    assert (log.started_at, log.finished_at) == (0, 0.3)


async def test_transcripts_in_order_silence_is_empty(autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer(script=AudioScript(transcripts=["one", "two"]))
    loud = MockAudioServer(script=AudioScript(silence_is_empty=False))
    async with openai(server) as client:
        texts = [(await transcribe(client, audio)).json()["text"]
                 for audio in (TONE, SILENCE, make_wav(0.5, 3000, 16000, 2), TONE)]
    async with openai(loud) as client:
        heard = (await transcribe(client, SILENCE)).json()["text"]
    assert texts == ["one", "", "two", "utterance 3"]
    assert [t.silent for t in server.transcriptions] == [False, True, False, False]
    assert server.transcriptions[2].channels == 2 and server.transcriptions[2].rate == 16000
    assert heard == "utterance 1"


async def test_whisper_formats_and_model_format_rules(autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer(script=AudioScript(transcripts=["a", "b", "c", "d"]))
    async with openai(server) as client:
        duration = await transcribe(client, make_wav(1.5, 8000), model="whisper-1")
        text = await transcribe(client, response_format="text")
        verbose = await transcribe(client, model="whisper-1", response_format="verbose_json")
        srt = await transcribe(client, model="whisper-1", response_format="srt")
        refused = await transcribe(client, response_format="verbose_json")
        ignored = await transcribe(client, model="whisper-1", stream="true")
    assert duration.json() == {"text": "a", "usage": {"type": "duration", "seconds": 1.5}}
    assert text.text == "b\n" and text.headers["content-type"].startswith("text/plain")
    assert verbose.json()["duration"] == 1.0 and verbose.json()["segments"][0]["text"] == " c"
    assert srt.text == "1\n00:00:00,000 --> 00:00:01,000\nd\n\n"
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "response_format"
    assert ignored.json()["text"] == "utterance 5"  # whisper-1 does not stream


async def test_transcription_stream(autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer(script=AudioScript(transcripts=["What time do you open?"]))
    arrivals: list[tuple[float, bytes]] = []
    async with openai(server) as client:
        data = {"model": "gpt-4o-mini-transcribe", "stream": "true"}
        async with client.stream("POST", "/audio/transcriptions", data=data,
                                 files={"file": ("turn.wav", TONE, "audio/wav")}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            async for chunk in r.aiter_raw():
                arrivals.append((trio.current_time(), chunk))
    events = sse(b"".join(c for _, c in arrivals).decode())
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 5 + ["transcript.text.done"]
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"] == "What time do you open?"
    assert events[-1]["usage"]["type"] == "tokens"
    assert [t for t, _ in arrivals] == pytest.approx([0.3 + 0.05 * i for i in range(6)])


BAD_WAV = b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + b"\x00" * 8


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"filename": "turn.raw"}, "file"),
    ({"filename": "turn"}, "file"),
    ({"model": "gpt-5"}, "model"),
    ({"audio": BAD_WAV}, "file"),
    ({"audio": b"ID3 not a wav"}, "file"),
    ({"audio": make_wav(0.05, 8000)}, "file"),
    ({"response_format": "srt"}, "response_format"),
    ({"temperature": "2"}, "temperature"),
])
async def test_transcription_validation_is_400(autojump_clock: trio.abc.Clock,
                                               kwargs: dict[str, Any], param: str) -> None:
    server = MockAudioServer()
    async with openai(server) as client:
        r = await transcribe(client, **kwargs)
    assert r.status_code == 400 and trio.current_time() == 0
    assert r.json()["error"]["param"] == param
    assert server.transcriptions[0].text is None and server.transcripts_used == 0


async def test_transcription_not_multipart_and_opaque_files(
        autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer()
    async with openai(server) as client:
        r = await client.post("/audio/transcriptions", json={"model": "whisper-1"})
        mp3 = await transcribe(client, b"\xff\xfb" * 100, "turn.mp3")
    assert r.status_code == 400
    assert mp3.json()["text"] == "utterance 1"
    assert server.transcriptions[1].audio_seconds is None


async def test_transcription_faults_do_not_consume_transcripts(
        autojump_clock: trio.abc.Clock) -> None:
    server = MockAudioServer(script=AudioScript(transcripts=["one"], fail_request=1,
                                                disconnect_request=2, faults_on=["transcription"]))
    async with openai(server) as client:
        failed = await transcribe(client)
        with pytest.raises(httpx.RemoteProtocolError):
            await transcribe(client)
        retried = await transcribe(client)
        spoken = await client.post("/audio/speech", json=SPEECH)
    assert failed.status_code == 500 and retried.json()["text"] == "one"
    assert [t.fault for t in server.transcriptions] == ["fail", "disconnect", None]
    assert spoken.status_code == 200  # speech request 1 is not faulted


def test_parse_wav_mulaw_extensible_list_chunk_and_open_ended_data() -> None:
    pcm = (8000 * np.sin(np.arange(800) / 3)).astype("<i2")
    law = ulaw_encode(pcm)
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)
    mulaw = (b"RIFF\xff\xff\xff\xffWAVE" + b"LIST\x03\x00\x00\x00abc\x00"
             + b"fmt \x10\x00\x00\x00" + fmt + b"data\xff\xff\xff\xff" + law)
    info = parse_wav(mulaw)
    assert (info.encoding, info.rate, info.frames, info.seconds) == ("mulaw", 8000, 800, 0.1)
    assert info.rms == pytest.approx(8000 / 2**0.5, rel=0.05)
    ext = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 16000, 2, 16, 22, 16, 4) + b"\x01\x00" + b"\0" * 14
    info = parse_wav(b"RIFF\0\0\0\0WAVEfmt \x28\0\0\0" + ext + b"data\x00\x02\0\0" + pcm[:256].tobytes())
    assert (info.encoding, info.frames) == ("pcm16", 256)
    for bad in (b"RIFX", BAD_WAV, TONE[:20] + b"\x03\x00" + TONE[22:]):
        with pytest.raises(WavError):
            parse_wav(bad)


async def test_speech_and_transcription_over_loopback_tcp() -> None:
    server = MockAudioServer(script=AudioScript(first_byte_delay=0, transcribe_delay=0,
                                                send_rate=0, transcripts=["hi"]))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1",
                                     headers=AUTH) as client:
            audio = await client.post("/audio/speech", json=SPEECH)
            text = await transcribe(client, make_wav(0.5, 8000, 24000))
        nursery.cancel_scope.cancel()
    assert len(audio.content) == 24 * 660 * 2 and text.json()["text"] == "hi"
