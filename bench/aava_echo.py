"""The `asterisk-ai-voice-agent` package's AudioSocket server, as an echo, for the scale benchmark.

    /tmp/.../bin/python bench/aava_echo.py --port 0 --ready FILE   # in the venv that has the package

Its server (``asterisk_ai_voice_agent.agent.main``) cannot run a call without its cloud speech
and LLM providers (Whisper or Scribe, Claude: keys and network), so this harness keeps exactly
its media path and replaces only the STT -> LLM -> TTS pipeline by an echo: the listener as
``main`` opens it (``asyncio.start_server``, ``TCP_NODELAY`` in ``on_call``), the package's
``AudioSocketTransport`` (``handshake`` reads the UUID, ``read_audio`` for every inbound frame,
``play`` paces one 320-byte frame every 20 ms on its own absolute grid after its 5 silence
pre-roll frames), fed with the oldest received frame not yet sent (silence when none; at most
5 kept), as the floor (``floor_echo.py``) does. Writes ``{"port", "pid", "version"}`` to
``--ready``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
from collections import deque
from importlib.metadata import version

from asterisk_ai_voice_agent.audiosocket import SILENCE_FRAME
from asterisk_ai_voice_agent.transport import AudioSocketTransport


async def on_call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    transport = AudioSocketTransport(reader, writer)
    if not await transport.handshake():
        await transport.close()
        return
    frames: deque[bytes] = deque(maxlen=5)
    ended = False

    async def outbound():  # what the TTS stream would be: a frame whenever play() asks
        while not ended:
            yield frames.popleft() if frames else SILENCE_FRAME

    player = asyncio.create_task(transport.play(outbound(), lambda: ended))
    try:
        while True:
            chunk = await transport.read_audio()
            if chunk is None:
                break
            if chunk:
                frames.append(chunk)
    finally:
        ended = True
        player.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await player
        await transport.close()


def write_ready(path: str, info: dict[str, object]) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(path + ".tmp", path)


async def main(port: int, ready: str | None) -> None:
    server = await asyncio.start_server(on_call, "127.0.0.1", port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    if ready:
        write_ready(ready, {"port": bound, "pid": os.getpid(),
                            "version": version("asterisk-ai-voice-agent")})
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready")
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.port, args.ready))
