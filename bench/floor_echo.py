"""The floor for the scale benchmark: a minimal asyncio AudioSocket echo server.

    python bench/floor_echo.py --port 0 --ready FILE

What any Python AudioSocket server has to do at the least, written plainly: accept, read the
UUID message, then send one 20 ms slin frame every 20 ms, paced on an absolute grid
(``loop.time()``; after a stall the grid is re-clamped to now, no burst), echoing the oldest
frame received and not yet sent (silence when there is none; at most 5 frames are kept, the
oldest dropped). A hang-up message or EOF ends the call. One reader task and one pacing task
per call, nothing else: no codec, no VAD, no provider, no records. Imports nothing of the
project, so it runs under any Python 3.10+. Writes ``{"port": N, "pid": P}`` to ``--ready``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
from collections import deque

FRAME_S = 0.02
PAYLOAD = 320
SILENCE = b"\x10\x01\x40" + bytes(PAYLOAD)


async def pace(writer: asyncio.StreamWriter, frames: deque[bytes]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time()
    while True:
        payload = frames.popleft() if frames else None
        writer.write(SILENCE if payload is None else
                     b"\x10" + len(payload).to_bytes(2, "big") + payload)
        deadline += FRAME_S
        now = loop.time()
        if deadline < now:  # fell behind: re-clamp, never burst
            deadline = now
        await asyncio.sleep(deadline - now)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frames: deque[bytes] = deque(maxlen=5)
    pacer: asyncio.Task[None] | None = None
    try:
        head = await reader.readexactly(3)
        if head[0] != 0x01:
            return
        await reader.readexactly(int.from_bytes(head[1:3], "big"))
        pacer = asyncio.create_task(pace(writer, frames))
        while True:
            head = await reader.readexactly(3)
            payload = await reader.readexactly(int.from_bytes(head[1:3], "big"))
            if head[0] == 0x00:
                return
            if head[0] == 0x10:
                frames.append(payload)
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        if pacer is not None:
            pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await pacer
        writer.close()


def write_ready(path: str, info: dict[str, object]) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(path + ".tmp", path)


async def main(port: int, ready: str | None) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    bound = server.sockets[0].getsockname()[1]
    if ready:
        write_ready(ready, {"port": bound, "pid": os.getpid()})
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ready", help="write the bound port and pid here (JSON)")
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.port, args.ready))
