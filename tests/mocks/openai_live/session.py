"""One mock connection's client event handlers (section 1.4): ``session.start`` (strict),
``session.update`` (delegation and triggers only), the appends, mute, fixtures, the responses
delegation's ``response.item.create`` / ``response.create``, and ``session.close``."""

from __future__ import annotations

from typing import Any

import trio

from tests.mocks.openai_live.agent import _Agent, _Job
from tests.mocks.openai_live.wire import WireError, check_session

DEFAULT_VOICE = "marin"


class _Session(_Agent):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.handlers = {
            "session.start": self._on_start,
            "session.update": self._on_update,
            "session.input_audio.mute": self._on_mute,
            "session.input_audio.unmute": self._on_mute,
            "session.instructions.append": self._on_append,
            "session.thinking.append": self._on_append,
            "session.commentary.append": self._on_append,
            "session.output_audio.fixture.play": self._on_fixture,
            "response.item.create": self._on_item_create,
            "response.create": self._on_response_create,
            "session.close": self._on_close,
        }

    def _ack(self, event: dict[str, Any], kind: str, **fields: Any) -> dict[str, Any]:
        out = {"type": kind, **fields}
        if isinstance(event.get("event_id"), str):
            out["client_event_id"] = event["event_id"]
        return out

    def _delegation_type(self) -> str:
        return str(((self.log.session or {}).get("delegation") or {}).get("type"))

    async def _on_start(self, event: dict[str, Any]) -> None:
        self.log.start = event
        refusal = self.script.refuse_start
        if refusal is not None:
            code, message = refusal
            await self.error(code, message, event=event)
            await self.close_ws("refused_start")
            return
        try:
            config = check_session(event.get("session"))
        except WireError as exc:
            await self.error(exc.code, exc.message, param=exc.param, event=event,
                             problem=f"session.start refused: {exc.code}: {exc.message}")
            await self.close_ws("refused_start")
            return
        self.started, self.started_at = True, trio.current_time()
        self.log.session = {"id": self.new_id("sess"), "status": "active",
                            "expires_at": 1_798_761_600 + self.script.expires_in, **config}
        await self.send(self._ack(event, "session.started", session=self.log.session))
        self.setup_audio(config["audio"]["format"])

    async def _on_update(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        if not isinstance(session, dict):
            raise WireError("invalid_type", "Invalid type for 'session'.", "session")
        for key in session:
            if key not in ("delegation", "triggers"):
                raise WireError("immutable_parameter",
                                f"'session.{key}' cannot be changed after session.start.",
                                f"session.{key}")
        delegation = session.get("delegation")
        if isinstance(delegation, dict) and delegation.get("type", self._delegation_type()) != (
                self._delegation_type()):
            raise WireError("immutable_parameter", "The delegation type cannot change.",
                            "session.delegation.type")
        await self.send(self._ack(event, "session.updated", session=self.log.session))

    async def _on_mute(self, event: dict[str, Any]) -> None:
        self.muted = event["type"].endswith(".mute")
        if self.muted and self.log.muted_at is None:
            self.log.muted_at = trio.current_time()
        await self.send(self._ack(event, event["type"].replace("mute", "muted")))

    async def _on_append(self, event: dict[str, Any]) -> None:
        delegation_id = event.get("delegation_id")
        if delegation_id is not None and self._delegation_type() == "responses":
            raise WireError("invalid_value", "A non-null delegation_id is refused under "
                            "responses delegation.", "delegation_id")
        if event["type"] == "session.commentary.append":
            self.log.commentary.append(event)
            self.enqueue(_Job("commentary", event["content"]))
        now = self.timeline_ms
        kind = event["type"].replace(".append", ".appended")
        await self.send(self._ack(event, kind, start_ms=now, end_ms=now))

    async def _on_fixture(self, event: dict[str, Any]) -> None:
        self.interrupt()  # playing a fixture interrupts the model (its audio is not modelled)
        await self.send(self._ack(event, "session.output_audio.fixture.playing"))
        await self.send(self._ack(event, "session.output_audio.fixture.played"))

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        if self._delegation_type() != "responses":
            raise WireError("invalid_request", "response.item.create requires responses "
                            "delegation.")
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") != "function_call_output":
            return  # other Responses input items are queued; the mock has no use for them
        pending = self.pending
        call_id = item.get("call_id")
        if not isinstance(item.get("output"), str):
            raise WireError("invalid_type", "Invalid type for 'item.output': expected a string.",
                            "item.output")
        if pending is None or call_id not in pending.calls:
            raise WireError("invalid_value", f"No function call with call_id {call_id!r} is "
                            "awaiting an output.", "item.call_id")
        self.log.function_outputs.append(item)
        del pending.calls[call_id]

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        if self._delegation_type() != "responses":
            raise WireError("invalid_request", "response.create requires responses delegation.")
        pending = self.pending
        if pending is not None and pending.calls:
            raise WireError("function_call_outputs_required",
                            f"Function call outputs are required for: {sorted(pending.calls)}.")
        self.log.response_creates += 1
        if pending is not None:
            pending.go.set()

    async def _on_close(self, event: dict[str, Any]) -> None:
        await self.send({"type": "session.usage.updated", "usage": self.usage()})
        client_id = event.get("event_id")
        await self.close_session("close_requested",
                                 client_id if isinstance(client_id, str) else None)
