"""The output side of a mock session: ``response.create`` / ``response.cancel``, planning what a
response says (reply text, scripted function call), streaming it with the event sequences of
reference/providers.md 1.7 (audio) and 1.9 (function call), and cancelling it with the closing
events of 1.8 (barge-in)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket

from tests.mocks.openai_realtime.connection import _Connection
from tests.mocks.openai_realtime.wire import RATE_LIMITS, USAGE


@dataclass(eq=False)
class _Item:
    """An output item in flight: which of its closing events have been sent."""

    item: dict[str, Any]
    output_index: int
    previous_item_id: str | None
    part_added: bool = False
    audio_done: bool = False
    transcript_done: bool = False
    part_done: bool = False
    transcript: str = ""
    arguments: str = ""


@dataclass(eq=False)
class _Response:
    id: str
    fmt: dict[str, Any]
    voice: str
    metadata: Any
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    output: list[dict[str, Any]] = field(default_factory=list)
    open: _Item | None = None
    finished: bool = False
    garbage: bool = False
    """``garbage_mid_response``: this response turns to garbage halfway through its audio."""

    def body(self, status: str, details: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": details,
            "output": list(self.output),
            "conversation_id": "conv_001",
            "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": self.fmt, "voice": self.voice}},
            "usage": USAGE if status != "in_progress" else None,
            "metadata": self.metadata,
        }


class _Responses(_Connection):
    """Responses of one connection. Each response streams in its own task and cancel scope; the
    closing events of a cancelled response are sent by whoever cancelled it, after the response
    task has stopped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.active: _Response | None = None
        self.audio_sent = False
        self.replies_used = 0
        self.pending_transcript: str | None = None
        """User input (transcript or text) the next response answers."""
        self.after_tool: str | None = None
        """Tool name of a ``function_call_output`` the next response answers ("" if its call
        is unknown); None if there is none."""

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        if self.active is not None:
            await self.error(
                "conversation_already_has_active_response",
                "Conversation already "
                f"has an active response in progress: {self.active.id}. Wait until "
                "the response is finished before creating a new one.",
                client_event=event,
            )
            return
        request = event.get("response")
        await self._start_response(request if isinstance(request, dict) else {})

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        active = self.active
        if (
            active is None
            or (wanted and wanted != active.id)
            or not await self._cancel_active("client_cancelled")
        ):
            await self.error(
                "response_cancel_not_active",
                "Cancellation failed: no active response found.",
                client_event=event,
            )

    async def _start_response(self, request: dict[str, Any]) -> None:
        """Send response.created (and rate limits) now; stream the rest in a task."""
        self.log.responses += 1
        self.log.response_instructions.append(request.get("instructions"))
        n = self.log.responses
        if self.script.error_after_responses == n:
            await self.error(
                "server_error",
                "The server had an error while processing your request. Sorry about that!",
                kind="server_error",
            )
            return
        output = (request.get("audio") or {}).get("output") or {}
        fmt = output["format"] if isinstance(output.get("format"), dict) else self.out_fmt
        voice = output.get("voice") or self.config["audio"]["output"]["voice"]
        resp = _Response(self.new_id("resp"), fmt, voice, request.get("metadata"))
        text, call = self._plan(request)
        self.active = resp
        await self.send("response.created", response=resp.body("in_progress", None))
        await self.send("rate_limits.updated", rate_limits=RATE_LIMITS)
        resp.garbage = self.script.garbage_mid_response == n
        disconnect = self.script.disconnect_mid_response == n
        self.nursery.start_soon(self._run_response, resp, text, call, disconnect)

    def _plan(
        self, request: dict[str, Any]
    ) -> tuple[str | None, tuple[str, dict[str, Any]] | None]:
        """(reply text or None, function call or None) for the next response."""
        heard, self.pending_transcript = self.pending_transcript, None
        if self.after_tool is not None:
            tool, self.after_tool = self.after_tool, None
            return self.script.after_tool_replies.get(tool, self.script.after_tool_reply), None
        if heard is not None:
            for trigger, call in self.script.function_calls.items():
                if trigger in heard:
                    problem = self._uncallable(call[0], request)
                    if problem is None:
                        return self.script.speak_before_call, call
                    self.log.problems.append(f"scripted call to {call[0]!r} not made: {problem}")
                    break
        self.replies_used += 1
        r = self.script.replies
        return (
            r[self.replies_used - 1]
            if self.replies_used <= len(r)
            else f"reply {self.replies_used}"
        ), None

    def _uncallable(self, name: str, request: dict[str, Any]) -> str | None:
        """Why this response cannot call tool ``name`` (the response's ``tools`` and
        ``tool_choice`` override the session's), or None if it can."""
        tools = request.get("tools", self.config.get("tools")) or []
        if request.get("tool_choice", self.config.get("tool_choice")) == "none":
            return "tool_choice is 'none'"
        declared = [t.get("name") for t in tools if isinstance(t, dict)]
        if name not in declared:
            return f"the session declares no such tool (declared: {declared})"
        return None

    async def _run_response(
        self,
        resp: _Response,
        text: str | None,
        call: tuple[str, dict[str, Any]] | None,
        disconnect: bool,
    ) -> None:
        try:
            with resp.scope:
                if text is not None:
                    await self._stream_message(resp, text, disconnect)
                if call is not None:
                    await self._stream_call(resp, *call)
                await trio.lowlevel.checkpoint_if_cancelled()
                await self.send("response.done", response=resp.body("completed", None))
                resp.finished = True
                self.active = None
        finally:
            resp.done.set()

    async def _send_garbage_forever(self, ids: dict[str, Any]) -> None:
        """``garbage_mid_response``: unusable frames, every 250 ms, until the client leaves."""
        frames: list[str | bytes] = [
            "<html><body>502 Bad Gateway</body></html>",
            b"\x00\xff\xfe garbage",
            json.dumps({"type": 42, "event_id": "event_x"}),
            json.dumps({"type": "response.output_audio.delta", **ids, "delta": "%%%not base64"}),
            "{" * 50,
        ]
        k = 0
        while True:
            await trio.sleep(0.25)
            with trio.CancelScope(shield=True):
                try:
                    await self.ws.send_message(frames[k % len(frames)])
                except trio_websocket.ConnectionClosed:
                    return
            k += 1

    async def _rsend(self, type_name: str, **fields: Any) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.send(type_name, **fields)

    async def _open_item(self, resp: _Response, item: dict[str, Any]) -> _Item:
        previous = self.last_item_id
        self._store(item)
        resp.open = _Item(item, len(resp.output), previous)
        await self._rsend(
            "response.output_item.added",
            response_id=resp.id,
            output_index=resp.open.output_index,
            item=item,
        )
        await self._rsend("conversation.item.added", previous_item_id=previous, item=item)
        return resp.open

    async def _close_item(self, resp: _Response, o: _Item, final: dict[str, Any]) -> None:
        self.items[final["id"]] = final
        await self._rsend(
            "response.output_item.done",
            response_id=resp.id,
            output_index=o.output_index,
            item=final,
        )
        resp.output.append(final)
        resp.open = None
        await self.send("conversation.item.done", previous_item_id=o.previous_item_id, item=final)

    async def _stream_message(self, resp: _Response, text: str, disconnect: bool) -> None:
        item_id = self.new_id("item")
        o = await self._open_item(
            resp,
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        )
        ids = {
            "response_id": resp.id,
            "item_id": item_id,
            "output_index": o.output_index,
            "content_index": 0,
        }
        await self._rsend(
            "response.content_part.added", **ids, part={"type": "audio", "transcript": ""}
        )
        o.part_added = True
        chunks = self.server.clip(resp.fmt).chunks
        words = text.split(" ") if text else []
        sent_words = 0
        log = self.log
        log.assistant_audio_ms[item_id] = 0.0
        if self.script.first_byte_delay > 0:
            await trio.sleep(self.script.first_byte_delay)
        step = (
            self.script.chunk_ms / 1000 / self.script.send_rate if self.script.send_rate > 0 else 0
        )
        t0 = trio.current_time()
        for k in range(max(len(chunks), 1)):
            if k:
                if step:
                    await trio.sleep_until(t0 + k * step)
                else:
                    await trio.lowlevel.checkpoint()
            due = math.ceil((k + 1) * len(words) / max(len(chunks), 1))
            if due > sent_words:
                delta = (" " if sent_words else "") + " ".join(words[sent_words:due])
                await self._rsend("response.output_audio_transcript.delta", **ids, delta=delta)
                o.transcript += delta
                sent_words = due
            if not chunks:
                break
            if resp.garbage and k == len(chunks) // 2:
                await self._send_garbage_forever(ids)
            if disconnect and k == len(chunks) // 2:
                await self._abort("disconnect_mid_response")
                await trio.lowlevel.checkpoint()  # the nursery is cancelled: raises Cancelled
            b64, ms, nbytes = chunks[k]
            await self._rsend("response.output_audio.delta", **ids, delta=b64)
            self.audio_sent = True
            log.assistant_audio_ms[item_id] += ms
            log.audio_out_ms += ms
            log.audio_out_bytes += nbytes
        await self._rsend("response.output_audio.done", **ids)
        o.audio_done = True
        await self._rsend("response.output_audio_transcript.done", **ids, transcript=text)
        o.transcript_done = True
        await self._rsend(
            "response.content_part.done", **ids, part={"type": "audio", "transcript": text}
        )
        o.part_done = True
        await self._close_item(
            resp,
            o,
            {
                **o.item,
                "status": "completed",
                "content": [{"type": "output_audio", "transcript": text}],
            },
        )

    async def _stream_call(self, resp: _Response, name: str, arguments: dict[str, Any]) -> None:
        item_id, call_id = self.new_id("item"), self.new_id("call")
        args = json.dumps(arguments, separators=(",", ":"))
        o = await self._open_item(
            resp,
            {
                "id": item_id,
                "object": "realtime.item",
                "type": "function_call",
                "status": "in_progress",
                "name": name,
                "call_id": call_id,
                "arguments": "",
            },
        )
        ids = {
            "response_id": resp.id,
            "item_id": item_id,
            "output_index": o.output_index,
            "call_id": call_id,
        }
        half = len(args) // 2
        for delta in (args[:half], args[half:]):
            if delta:
                await self._rsend("response.function_call_arguments.delta", **ids, delta=delta)
                o.arguments += delta
        await self._rsend("response.function_call_arguments.done", **ids, name=name, arguments=args)
        final = {**o.item, "status": "completed", "arguments": args}
        await self._close_item(resp, o, final)
        self.log.function_calls.append(final)

    async def _cancel_active(self, reason: str) -> bool:
        """Stop the active response and send its closing events (providers.md 1.8). False if
        there was nothing left to cancel."""
        resp = self.active
        if resp is None or resp.finished:
            return False
        resp.scope.cancel()
        await resp.done.wait()
        if resp.finished:
            return False
        self.active = None
        o = resp.open
        if o is not None:
            item = o.item
            content: list[dict[str, Any]] = []
            if item["type"] == "message" and o.part_added:
                ids = {
                    "response_id": resp.id,
                    "item_id": item["id"],
                    "output_index": o.output_index,
                    "content_index": 0,
                }
                if not o.audio_done:
                    await self.send("response.output_audio.done", **ids)
                if not o.transcript_done:
                    await self.send(
                        "response.output_audio_transcript.done", **ids, transcript=o.transcript
                    )
                if not o.part_done:
                    await self.send(
                        "response.content_part.done",
                        **ids,
                        part={"type": "audio", "transcript": o.transcript},
                    )
                content = [{"type": "output_audio", "transcript": o.transcript}]
            final = {**item, "status": "incomplete"}
            if item["type"] == "message":
                final["content"] = content
            else:
                final["arguments"] = o.arguments
            self.items[item["id"]] = final
            await self.send(
                "response.output_item.done",
                response_id=resp.id,
                output_index=o.output_index,
                item=final,
            )
            resp.output.append(final)
            resp.open = None
        details = {"type": "cancelled", "reason": reason}
        await self.send("response.done", response=resp.body("cancelled", details))
        return True
