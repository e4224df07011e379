"""One mock connection's conversation: ``session.update``, the input audio buffer with its energy
VAD (``server_vad`` / ``semantic_vad``) or manual commits, and conversation items (create,
retrieve, delete, truncate checked against the audio generated for the item). The output side
is :class:`_Responses`; the plumbing is :class:`_Connection`."""

from __future__ import annotations

import base64
import binascii
import copy
import math
from typing import Any

import numpy as np

from tests.mocks.openai_realtime.responses import _Responses
from tests.mocks.openai_realtime.script import Truncation
from tests.mocks.openai_realtime.wire import (
    MIN_COMMIT_MS,
    SEMANTIC_VAD_DEFAULTS,
    SERVER_VAD_DEFAULTS,
    TRANSCRIPTION_USAGE,
    VAD_FRAME_MS,
    bytes_per_ms,
    decode,
    merge,
    rate_of,
    session_deviations,
    validate_update,
)


class _Session(_Responses):
    """One connection's conversation. The reader task handles client events in order (see
    :meth:`_Connection.run`); responses stream in tasks of their own (:class:`_Responses`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # input audio, on the input clock (ms of audio received)
        self.audio_ms = 0.0
        self.buffer_ms = 0.0
        self.committed_ms = 0.0
        self.remainder = np.empty(0, dtype=np.int16)
        self.speaking = False
        self.loud_ms = 0
        self.loud_start_ms = 0.0
        self.quiet_ms = 0
        self.user_item_id: str | None = None
        self.turns = 0
        self.handlers = {
            "session.update": self._on_session_update,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_truncate,
            "conversation.item.delete": self._on_item_delete,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }

    # -- session.update ---------------------------------------------------------------------------
    async def _on_session_update(self, event: dict[str, Any]) -> None:
        patch = event.get("session")
        if not isinstance(patch, dict):
            await self.error(
                "missing_required_parameter",
                "Missing required parameter: 'session'.",
                param="session",
                client_event=event,
            )
            return
        problem = validate_update(
            patch,
            voice_now=self.config["audio"]["output"]["voice"],
            audio_sent=self.audio_sent,
        )
        if problem is not None:
            code, message, param = problem
            await self.error(code, message, param=param, client_event=event)
            return
        self.log.problems += session_deviations(patch, self.log.model or "")
        config = copy.deepcopy(self.config)
        merge(config, {k: v for k, v in patch.items() if k != "model"})
        audio_in = config["audio"]["input"]
        td = audio_in.get("turn_detection")
        if isinstance(td, dict):
            defaults = SERVER_VAD_DEFAULTS if td["type"] == "server_vad" else SEMANTIC_VAD_DEFAULTS
            audio_in["turn_detection"] = {**defaults, **td}
        if self.script.confirm_format is not None:
            config["audio"]["output"]["format"] = dict(self.script.confirm_format)
        if config["audio"]["input"]["format"] != self.in_fmt:
            self.remainder = np.empty(0, dtype=np.int16)
        self.config = self.log.session = config
        self.log.tools = config.get("tools") or []
        await self.send("session.updated", session=config)

    # -- input audio ------------------------------------------------------------------------------
    async def _on_append(self, event: dict[str, Any]) -> None:
        try:
            raw = base64.b64decode(event.get("audio") or b"", validate=True)
        except (binascii.Error, TypeError, ValueError):
            await self.error(
                "invalid_value",
                "Invalid 'audio'. Expected base64-encoded audio.",
                param="audio",
                client_event=event,
            )
            return
        log = self.log
        log.append_count += 1
        log.audio_in_bytes += len(raw)
        kind = self.in_fmt["type"]
        ms = len(raw) / bytes_per_ms(self.in_fmt)
        log.audio_in_ms += ms
        self.buffer_ms += ms
        if self.turn_detection is None:
            self.audio_ms += ms
            return
        samples = decode(kind, raw)
        if self.remainder.size:
            samples = np.concatenate((self.remainder, samples))
        frame = rate_of(self.in_fmt) * VAD_FRAME_MS // 1000
        n = samples.size // frame
        self.remainder = samples[n * frame :]
        if n == 0:
            return
        x = samples[: n * frame].astype(np.float32).reshape(n, frame)
        # RMS > vad_rms, without the sqrt and mean: sum of squares against a scaled threshold
        loud = np.einsum("ij,ij->i", x, x) > self.script.vad_rms**2 * frame
        for is_loud in loud.tolist():
            await self._vad_frame(is_loud)

    async def _vad_frame(self, loud: bool) -> None:
        start = self.audio_ms
        self.audio_ms += VAD_FRAME_MS
        td = self.turn_detection
        if td is None:
            return
        if not self.speaking:
            if not loud:
                self.loud_ms = 0
                return
            if self.loud_ms == 0:
                self.loud_start_ms = start
            self.loud_ms += VAD_FRAME_MS
            if self.loud_ms >= self.script.vad_start_ms:
                await self._speech_started(td)
        elif loud:
            self.quiet_ms = 0
        else:
            self.quiet_ms += VAD_FRAME_MS
            if self.quiet_ms >= td.get("silence_duration_ms", 500):
                await self._speech_stopped(td)

    async def _speech_started(self, td: dict[str, Any]) -> None:
        self.speaking, self.quiet_ms, self.loud_ms = True, 0, 0
        item_id = self.user_item_id = self.new_id("item")
        start = max(self.loud_start_ms - td.get("prefix_padding_ms", 300), self.committed_ms)
        await self.send(
            "input_audio_buffer.speech_started", audio_start_ms=int(start), item_id=item_id
        )
        if td.get("interrupt_response", True):
            await self._cancel_active("turn_detected")

    async def _speech_stopped(self, td: dict[str, Any]) -> None:
        item_id = self.user_item_id or self.new_id("item")
        await self.send(
            "input_audio_buffer.speech_stopped", audio_end_ms=int(self.audio_ms), item_id=item_id
        )
        await self._commit(item_id)
        if td.get("create_response", True) and self.active is None:
            await self._start_response({})

    async def _commit(self, item_id: str) -> None:
        """Commit the buffer as a user audio item (committed, item added/done, transcription)."""
        self.speaking, self.quiet_ms, self.loud_ms, self.user_item_id = False, 0, 0, None
        self.buffer_ms, self.committed_ms = 0.0, self.audio_ms
        self.turns += 1
        t = self.script.transcripts
        transcript = t[self.turns - 1] if self.turns <= len(t) else f"utterance {self.turns}"
        self.pending_transcript = transcript
        self.log.user_transcripts.append(transcript)
        previous = self.last_item_id
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._store(item)
        await self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        await self.send("conversation.item.added", previous_item_id=previous, item=item)
        await self.send("conversation.item.done", previous_item_id=previous, item=item)
        if self.config["audio"]["input"].get("transcription"):
            ids = {"item_id": item_id, "content_index": 0}
            await self.send(
                "conversation.item.input_audio_transcription.delta", **ids, delta=transcript
            )
            await self.send(
                "conversation.item.input_audio_transcription.completed",
                **ids,
                transcript=transcript,
                usage=TRANSCRIPTION_USAGE,
            )

    async def _on_commit(self, event: dict[str, Any]) -> None:
        if self.buffer_ms < MIN_COMMIT_MS:
            await self.error(
                "input_audio_buffer_commit_empty",
                "Error committing input audio "
                f"buffer: buffer too small. Expected at least 100ms of audio, but "
                f"buffer only has {self.buffer_ms:.2f}ms of audio.",
                client_event=event,
            )
            return
        await self._commit(self.user_item_id or self.new_id("item"))

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self.speaking, self.quiet_ms, self.loud_ms, self.user_item_id = False, 0, 0, None
        self.buffer_ms, self.committed_ms = 0.0, self.audio_ms
        self.remainder = np.empty(0, dtype=np.int16)
        await self.send("input_audio_buffer.cleared")

    # -- conversation items -----------------------------------------------------------------------
    async def _on_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        kind = item.get("type") if isinstance(item, dict) else None
        if not isinstance(item, dict) or kind not in (
            "message",
            "function_call",
            "function_call_output",
        ):
            await self.error(
                "invalid_value", f"Invalid 'item': {item!r}.", param="item", client_event=event
            )
            return
        if kind == "function_call_output" and not (
            isinstance(item.get("call_id"), str) and isinstance(item.get("output"), str)
        ):
            await self.error(
                "missing_required_parameter",
                "A function_call_output needs 'call_id' and 'output' strings.",
                param="item",
                client_event=event,
            )
            return
        previous = event.get("previous_item_id", self.last_item_id)
        stored = {
            "id": item.get("id") or self.new_id("item"),
            "object": "realtime.item",
            **{k: v for k, v in item.items() if k != "id"},
            "status": "completed",
        }
        self._store(stored)
        if kind == "function_call_output":
            self.log.function_outputs.append(stored)
            self.after_tool = self._tool_of(item["call_id"])
        elif kind == "message" and item.get("role") == "user":
            texts = [
                str(part.get("text", ""))
                for part in item.get("content") or []
                if isinstance(part, dict) and part.get("type") == "input_text"
            ]
            self.log.user_texts.extend(texts)
            if texts:  # the next response answers it, as it would a spoken turn's transcript
                self.pending_transcript = " ".join(texts)
        previous = None if previous == "root" else previous
        await self.send("conversation.item.added", previous_item_id=previous, item=stored)
        await self.send("conversation.item.done", previous_item_id=previous, item=stored)

    def _tool_of(self, call_id: str) -> str:
        """Name of the function call this output answers ("" and a problem if none). The call
        is a conversation item (the server's or one the client created) or, if deleted since,
        one the server made."""
        for call in (*reversed(self.items.values()), *self.log.function_calls):
            if call.get("type") == "function_call" and call.get("call_id") == call_id:
                return str(call.get("name", ""))
        self.log.problems.append(f"function_call_output for unknown call_id {call_id!r}")
        return ""

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.items.get(str(event.get("item_id")))
        if item is None:
            await self._no_item(event)
        else:
            await self.send("conversation.item.retrieved", item=item)

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        item = self.items.pop(str(event.get("item_id")), None)
        if item is None:
            await self._no_item(event)
        else:
            await self.send("conversation.item.deleted", item_id=item["id"])

    async def _no_item(self, event: dict[str, Any]) -> None:
        await self.error(
            "invalid_value",
            f"Item with item_id '{event.get('item_id')}' not found.",
            param="item_id",
            client_event=event,
        )

    async def _on_truncate(self, event: dict[str, Any]) -> None:
        item_id, end = str(event.get("item_id")), event.get("audio_end_ms")
        content_index = event.get("content_index", 0)
        item = self.items.get(item_id)
        if item is None:
            await self._no_item(event)
            return
        if item.get("type") != "message" or item.get("role") != "assistant":
            await self.error(
                "invalid_value",
                "Only assistant messages can be truncated.",
                param="item_id",
                client_event=event,
            )
            return
        generated = self.log.assistant_audio_ms.get(item_id, 0.0)
        if isinstance(end, bool) or not isinstance(end, int) or end < 0:
            await self.error(
                "invalid_value",
                "'audio_end_ms' must be a non-negative integer.",
                param="audio_end_ms",
                client_event=event,
            )
            return
        if end > math.ceil(generated):
            await self.error(
                "invalid_value",
                f"Audio content of {generated:.0f}ms is already shorter than {end}ms",
                param="audio_end_ms",
                client_event=event,
            )
            return
        self.log.truncations.append(Truncation(item_id, content_index, end))
        await self.send(
            "conversation.item.truncated",
            item_id=item_id,
            content_index=content_index,
            audio_end_ms=end,
        )
