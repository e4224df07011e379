"""The echo assistant: the caller's own audio comes back, relayed in provider-sized chunks.

It has no connection and no model. Caller frames are collected into ``chunk_ms`` chunks and
handed to the relay exactly as a provider's audio deltas would be, so the echo assistant
exercises the whole relay path (inbound reader, chunked agent audio, paced playout) and is
what the capacity benchmark measures. It never starts a barge-in (it has no VAD).
"""

from __future__ import annotations

import itertools

import trio

from ..config.schema import EchoConfig
from ..constants import FRAME_BYTES, FRAME_MS
from .base import RelayPort

_ids = itertools.count(1)


class EchoSession:
    name = "echo"
    local_turns = False
    speaks_after_tool = False

    def __init__(self, cfg: EchoConfig) -> None:
        self._chunk_bytes = max(1, cfg.chunk_ms // FRAME_MS) * FRAME_BYTES
        self._buf = bytearray()
        self._port: RelayPort | None = None
        self._item = f"echo_{next(_ids)}"

    async def run(self, port: RelayPort, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._port = port
        task_status.started()
        await trio.sleep_forever()

    def send_caller_audio(self, pcm: bytes) -> None:
        if self._port is None:
            return
        self._buf += pcm
        if len(self._buf) >= self._chunk_bytes:
            chunk = bytes(self._buf)
            self._buf.clear()
            self._port.agent_audio(chunk, self._item, trio.current_time())

    def send_user_text(self, text: str) -> None:
        pass  # the echo assistant has no model: digits are only recorded by the call

    def interrupt(self, cut: tuple[str, int] | None) -> None:
        self._buf.clear()
        self._item = f"echo_{next(_ids)}"

    def commit_turn(self) -> None:
        pass

    def closing(self) -> None:
        pass
