"""What every chat mock server shares: the script, the per-request :class:`ChatLog` list with
its waiters, reply choice with undeclared tools dropped, pacing and the scripted faults."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import trio

from tests.mocks.http import HttpRequest, MockHttpServer

from .script import ChatLog, ChatScript, Reply, choose_reply

__all__ = ["ChatServer"]


class ChatServer(MockHttpServer):
    """A :class:`MockHttpServer` that answers chat requests from a :class:`ChatScript`; one
    :class:`ChatLog` per chat request in ``chats`` (numbered from 1 across its endpoints)."""

    def __init__(self, script: ChatScript | None = None) -> None:
        super().__init__()
        self.script = script if script is not None else ChatScript()
        self.chats: list[ChatLog] = []
        self._chat_added = trio.Event()

    def new_chat(self, request: HttpRequest) -> ChatLog:
        """Record a chat request that is being handled."""
        record = self.records[request.n - 1]
        log = ChatLog(n=len(self.chats) + 1, path=request.path, record=record,
                      started_at=record.started_at)
        self.chats.append(log)
        self._chat_added.set()
        self._chat_added = trio.Event()
        return log

    async def wait_for_chat(self, n: int = 1) -> ChatLog:
        """The n-th chat request's log (1-based), once the request has been received."""
        while len(self.chats) < n:
            await self._chat_added.wait()
        return self.chats[n - 1]

    async def wait_chat_finished(self, n: int = 1) -> ChatLog:
        """The n-th chat's log once its response ended (completed, client closed or dropped)."""
        log = await self.wait_for_chat(n)
        await log.record.ended.wait()
        return log

    def choose(self, log: ChatLog, messages: list[dict[str, Any]], tool_name: str | None,
               declared: list[str]) -> Reply:
        """The scripted reply, minus tool calls the request did not declare (each a problem);
        sets ``log.reply`` and ``log.tool_call_ids``."""
        reply = choose_reply(self.script, messages, log.n, tool_name)
        calls = []
        for call in reply.tool_calls:
            if call.name in declared:
                calls.append(call)
            else:
                log.problems.append(f"scripted tool call {call.name!r} not emitted: the request "
                                    f"declares {declared}")
        log.reply = replace(reply, tool_calls=tuple(calls))
        log.tool_call_ids = [f"call_{log.n}_{i + 1}" for i in range(len(calls))]
        return log.reply

    def due(self, log: ChatLog, i: int) -> float:
        """When delta i (0-based) of this chat goes out, on the runtime clock."""
        return log.started_at + self.script.first_token_delay + i * self.script.token_delay

    def fault(self, log: ChatLog, sent: int) -> Literal["disconnect", "error"] | None:
        """The scripted fault due once ``sent`` deltas of this chat are out, if any."""
        s = self.script
        if s.disconnect_request == (log.n, sent):
            log.error = f"connection dropped after {sent} deltas (scripted)"
            return "disconnect"
        if s.error_event_request == (log.n, sent):
            log.error = f"The server had an error while processing your request (scripted, " \
                        f"after {sent} deltas)."
            return "error"
        return None

    def fault_point(self, log: ChatLog) -> tuple[Literal["disconnect", "error"], int] | None:
        """(kind, after k deltas) of this chat's scripted stream fault, if any."""
        s = self.script
        if s.disconnect_request is not None and s.disconnect_request[0] == log.n:
            return "disconnect", s.disconnect_request[1]
        if s.error_event_request is not None and s.error_event_request[0] == log.n:
            return "error", s.error_event_request[1]
        return None
