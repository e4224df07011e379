"""Fuzzed connections over real loopback sockets, while a real call goes on.

The whole product runs (tests/e2e/stack.py). A normal call through the Asterisk emulator runs
while fuzzed connections hit the same ports one after another:

* AudioSocket: garbage before a UUID, unknown UUIDs, and, for UUIDs offered over the control
  link exactly as the FastAGI side offers them, a valid UUID followed by a mutated stream of
  audio, DTMF and hangup frames;
* FastAGI: mutated request blocks (hostile caller fields included), then mutated replies to
  whatever the server asks.

Each fuzzed connection must end: the server closes it at once when the bytes are malformed
(the sans-I/O decoder, run on the same bytes, says which), and at the latest when we close our
side. Afterwards no server socket is left in CLOSE-WAIT, and the normal call completed.
"""

from __future__ import annotations

import dataclasses
import random
import uuid as uuidlib

import pytest
import trio
from trio_websocket import open_websocket_url

from fastagi_server.agi.protocol import AgiProtocolError, EnvParser
from fastagi_server.emulator.caller import CallerScript
from fastagi_server.emulator.channel import ChannelSpec, env_block
from media_sidecar.config.loader import load_config
from media_sidecar.protocol import control as c
from media_sidecar.protocol.audiosocket import (
    AudioSocketDecoder,
    AudioSocketError,
    encode_audio,
    encode_dtmf,
    encode_hangup,
    encode_uuid,
)
from tests.e2e.stack import open_stack
from tests.fakes import caller_says

from .budget import examples, rng

pytestmark = pytest.mark.e2e

BASE = load_config()
CFG = dataclasses.replace(BASE, assistants=(dataclasses.replace(
    BASE.assistants[0], brain=dataclasses.replace(BASE.assistants[0].brain,
                                                  greeting="Hi, how can I help?")),))
CLOSE_WITHIN = 5.0
INTERESTING = [b"\n", b"\n\n", b"\r\n", b"\x00", b"\xff\xff", b"\x10\xff\xff", b"\x01\x00\x10",
               b"agi_channel: Local/x\n", b"agi_arg_1: AI_ASSISTANT=nosuch\n", b"HANGUP\n",
               b"200 result=1 (x)\n", b"520-usage\n", b"\xc3\x28", "é".encode()]


def mutate(r: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(r.randint(1, 4)):
        if not b:
            b += r.randbytes(r.randint(1, 8))
            continue
        i = r.randrange(len(b))
        op = r.randrange(5)
        if op == 0:
            b[i] = r.randrange(256)
        elif op == 1:
            del b[i:i + r.randint(1, 16)]
        elif op == 2:
            b[i:i] = r.randbytes(r.randint(1, 16))
        elif op == 3:
            b[i:i] = r.choice(INTERESTING)
        else:
            del b[i:]
    return bytes(b)


def close_wait_ports() -> set[int]:
    """Local ports of this host's TCP sockets in CLOSE-WAIT (from /proc)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "08":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


async def send_and_expect_close(port: int, data: bytes, *, malformed: bool,
                                replies: list[bytes] = ()) -> None:
    """Send ``data``; a malformed stream must be closed by the server without our EOF.
    Otherwise send ``replies`` too (the server reads them as the answers to what it asks),
    close our side, and require EOF."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        with trio.fail_after(CLOSE_WITHIN):
            try:
                await stream.send_all(data)
                if malformed:
                    while await stream.receive_some(65536):
                        pass
                    return
                await stream.send_all(b"".join(replies))
                await stream.send_eof()
                while await stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                return  # reset by the server: closed too
    finally:
        await trio.aclose_forcefully(stream)


async def audiosocket_fuzz(r: random.Random, port: int, offer) -> int:
    """One fuzzed AudioSocket connection; returns 1."""
    kind = r.randrange(4)
    frames = [encode_audio(r.randbytes(320)) for _ in range(r.randint(0, 6))]
    frames += [encode_dtmf(r.choice("0123456789*#")) for _ in range(r.randint(0, 2))]
    r.shuffle(frames)
    if r.random() < 0.3:
        frames.append(encode_hangup())
    body = b"".join(frames)
    if kind == 0:  # garbage before any UUID
        data = mutate(r, body or b"\x10\x00\x01\x00")
    elif kind == 1:  # a UUID nobody offered
        data = encode_uuid(uuidlib.uuid4()) + body
    else:  # an offered call, then a mutated stream
        data = encode_uuid(await offer()) + mutate(r, body)
    decoder = AudioSocketDecoder()
    try:
        decoder.receive_data(data)
        malformed = kind == 1 or (kind == 0 and bool(data))
    except AudioSocketError:
        malformed = True
    await send_and_expect_close(port, data, malformed=malformed)
    return 1


def agi_fuzz_data(r: random.Random) -> tuple[bytes, bool, list[bytes]]:
    hostile = r.choice(["Eve", "x\nagi_arg_1: AI_ASSISTANT=nosuch", "\n\n200 result=1 (x)",
                        "${SHELL(id)}", "A" * 9000, "Zo\udcc3"])
    spec = ChannelSpec(calleridname=hostile, uniqueid=f"1795267{r.randrange(10**6)}.1",
                       channel=f"Local/fuzz@test-{r.randrange(10**8):08x};2")
    block = mutate(r, env_block(spec, "agi://127.0.0.1/agent"))
    try:
        complete = EnvParser().feed(block) is not None
    except AgiProtocolError:
        return block, True, []
    # a complete block: the server asks Asterisk things; answer with mutated replies
    replies = [mutate(r, r.choice([b"200 result=1 (x)\n", b"HANGUP\n", b"511 Dead\n",
                                   b"200 result=0\n", b"520-x\n520 End\n"]))
               for _ in range(r.randint(0, 4) if complete else 0)]
    return block, False, replies


@pytest.mark.timeout(600)
async def test_fuzzed_connections_end_and_a_concurrent_call_completes(tmp_path):
    r = rng()
    n = examples(0.4)
    async with open_stack(CFG, str(tmp_path / "calls.jsonl")) as stack:
        assert stack.sidecar is not None
        control = f"ws://127.0.0.1:{stack.sidecar.control}/control"
        results: dict[str, object] = {}
        call_done = trio.Event()

        async def normal_call() -> None:
            script = CallerScript().speak_after_agent_quiet(caller_says("goodbye"), 2500)
            results["call"] = await stack.call(script, seconds=120)
            call_done.set()

        async with open_websocket_url(control) as ws, trio.open_nursery() as nursery:
            await ws.send_message(c.encode(c.Hello(role="fuzz")))
            assert isinstance(c.decode(await ws.get_message()), c.Hello)
            accepted: dict[str, trio.Event] = {}

            async def reader() -> None:
                while True:
                    try:
                        msg = c.decode(await ws.get_message())
                    except c.ControlError:
                        continue
                    if isinstance(msg, c.Accept) and msg.uuid in accepted:
                        accepted[msg.uuid].set()

            async def offer() -> uuidlib.UUID:
                u = uuidlib.uuid4()
                accepted[str(u)] = trio.Event()
                await ws.send_message(c.encode(c.Offer(
                    str(u), CFG.assistants[0].name,
                    c.CallContext(channel=f"Local/fuzz-{u.hex[:8]}", uniqueid="1.1"))))
                with trio.fail_after(5):
                    await accepted[str(u)].wait()
                return u

            nursery.start_soon(reader)
            nursery.start_soon(normal_call)
            done = 0
            for _ in range(n):
                done += await audiosocket_fuzz(r, stack.sidecar.audiosocket, offer)
                block, malformed, replies = agi_fuzz_data(r)
                await send_and_expect_close(stack.agi_port, block, malformed=malformed,
                                            replies=replies)
                done += 1
            print(f"{done} fuzzed connections")
            await call_done.wait()
            nursery.cancel_scope.cancel()
        await stack.settle()
        ours = {stack.sidecar.audiosocket, stack.agi_port}
        for _ in range(100):  # the kernel has no event for it: poll /proc for up to 10 s
            if not close_wait_ports() & ours:
                break
            await trio.sleep(0.1)
        assert not close_wait_ports() & ours, "a server socket was left in CLOSE-WAIT"
    call = results["call"]
    assert call.variables["AI_STATUS"] == "COMPLETED", call.variables  # type: ignore[attr-defined]
    assert call.audiosocket[0].closed_by == "sidecar_hangup"  # type: ignore[attr-defined]
