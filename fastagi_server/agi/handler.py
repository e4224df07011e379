"""One FastAGI connection: read the request, pick the assistant, hand the call to the sidecar.

Flow: env block (with a timeout) -> channel variables -> routing -> offer over the control link
-> ANSWER if needed -> ``EXEC AudioSocket "<uuid>,<host:port>"`` (blocks for the conversation)
-> outcome variables. Any failure before the conversation sets ``AI_STATUS=FAILED`` and
``AI_REASON`` at once and returns, so the dialplan falls through to its fallback: a caller never
sits in dead air because a component is down.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
import uuid as uuidlib
from dataclasses import dataclass

from media_sidecar.config.schema import Config
from media_sidecar.protocol import control as c

from ..calls import REDIRECTED_REASON, CallTracker, TrackedCall
from ..control_client import ControlClient, ControlUnavailable
from ..routing import RouteInput, call_variables, choose_assistant
from .connection import AgiConnection
from .protocol import AgiConnectionClosed, AgiError, AgiRequest, UnsafeValueError

log = logging.getLogger("agi_voice.agi")

CHANNEL_UP = 6
_VAR_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass
class AgiOutcome:
    status: str
    reason: str = ""
    transfer_to: str = ""
    summary: str = ""
    uuid: str = ""
    assistant: str = ""
    setup_ms: float = 0.0
    """From the end of the env block to EXEC AudioSocket sent."""


def _safe(value: str, limit: int = 512) -> str:
    """A value fit for SET VARIABLE: control characters become spaces, length capped."""
    return _CONTROL_CHARS.sub(" ", value)[:limit].strip()


VERDICT_WAIT_SECONDS = 1.0
"""After the media leg ended normally (result 0), how long the sidecar's ``ended`` may take;
0.3 s after a hangup (its verdict is then only CALLER_HANGUP). The sidecar's
``OUTCOME_WAIT_SECONDS`` covers this plus ``calls.DISPOSITION_WAIT_SECONDS``."""
HANGUP_VERDICT_WAIT_SECONDS = 0.3


class AgiCallHandler:
    def __init__(self, cfg: Config, control: ControlClient, tracker: CallTracker) -> None:
        self.cfg = cfg
        self.control = control
        self.tracker = tracker
        self.outcomes: list[AgiOutcome] = []
        """Recent outcomes (bounded), for tests and the health view."""

    async def handle(self, conn: AgiConnection) -> AgiOutcome | None:
        """Serve one AGI connection; never raises for call-level faults."""
        try:
            req = await conn.read_env(self.cfg.fastagi.env_timeout)
        except (AgiError, TimeoutError, ConnectionError) as exc:
            log.warning("FastAGI connection dropped before a request: %s", exc)
            return None
        try:
            outcome = await self._run(conn, req)
        except (AgiConnectionClosed, ConnectionError) as exc:
            log.info("AGI connection for %s closed: %s", req.channel, exc)
            outcome = AgiOutcome("CALLER_HANGUP", reason="AGI connection closed")
        except AgiError as exc:  # 511 after a hangup, a desynchronised connection, ...
            log.info("AGI call on %s ended: %s", req.channel, exc)
            outcome = AgiOutcome("CALLER_HANGUP" if conn.hung_up else "FAILED", reason=str(exc))
        self.outcomes.append(outcome)
        del self.outcomes[:-100]
        log.info("AGI %s (%s): AI_STATUS=%s %s", req.channel, req.uniqueid, outcome.status,
                 outcome.reason)
        return outcome

    async def _read_var(self, conn: AgiConnection, name: str) -> str | None:
        """Read a channel variable safely: through BASE64_ENCODE, so a value holding ')' or a
        newline cannot confuse the line protocol."""
        raw = await conn.get_full_variable(f"${{BASE64_ENCODE(${{{name}}})}}")
        if raw is None or raw == "":
            return None
        try:
            return base64.b64decode(raw, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return None

    async def _variables(self, conn: AgiConnection) -> dict[str, str]:
        out: dict[str, str] = {}
        for name in ("AI_ASSISTANT", "AI_LANGUAGE", "AI_VARS"):
            v = await self._read_var(conn, name)
            if v is not None:
                out[name] = v
        for extra in (out.get("AI_VARS") or "").split(",")[:32]:
            extra = extra.strip()
            if _VAR_NAME.match(extra):
                v = await self._read_var(conn, f"AI_VAR_{extra}")
                if v is not None:
                    out[f"AI_VAR_{extra}"] = v
        return out

    async def _run(self, conn: AgiConnection, req: AgiRequest) -> AgiOutcome:
        t_start = time.perf_counter()
        variables = await self._variables(conn)
        for arg in req.args:  # AGI(agi://.../agent,AI_VAR_ACCOUNT=123) also works
            key, sep, value = arg.partition("=")
            if sep and key.startswith("AI_") and _VAR_NAME.match(key):
                variables.setdefault(key, value)
        decision = choose_assistant(self.cfg, RouteInput(
            script=req.script, query=dict(req.query), dnid=req.dnid, extension=req.extension,
            callerid=req.callerid, context=req.context, variables=variables))
        if not decision.ok or decision.assistant is None:
            return await self._finish(conn, AgiOutcome("FAILED", reason=decision.error or
                                                       "no assistant"))
        assistant = self.cfg.assistant(decision.assistant)
        assert assistant is not None
        call_uuid = str(uuidlib.uuid4())
        call_vars = call_variables(variables)
        ctx = c.CallContext(
            channel=req.channel, uniqueid=req.uniqueid, callerid=req.callerid,
            calleridname=req.calleridname, dnid=req.dnid, extension=req.extension,
            context=req.context, language=call_vars.get("AI_LANGUAGE") or req.language,
            script=req.script, query=dict(req.query), args=list(req.args),
            variables=call_vars,
        )
        offer = c.Offer(uuid=call_uuid, assistant=assistant.name, context=ctx,
                        ami=self.tracker.ami_connected)
        try:
            reply = await self.control.offer(offer, self.cfg.fastagi.offer_timeout)
        except ControlUnavailable as exc:
            return await self._finish(conn, AgiOutcome("FAILED", reason=str(exc),
                                                       assistant=assistant.name))
        if isinstance(reply, c.Refuse):
            return await self._finish(conn, AgiOutcome("FAILED", reason=f"sidecar refused: "
                                                       f"{reply.reason}", assistant=assistant.name))
        tracked = TrackedCall(uuid=call_uuid, channel=req.channel, uniqueid=req.uniqueid,
                              assistant=assistant)
        self.tracker.add(tracked)
        try:
            outcome = await self._converse(conn, tracked, t_start)
        finally:
            tracked.agi_closed = True
            self.control.forget(call_uuid)
        how = ""
        try:
            if not tracked.disposition and not tracked.redirected_to and conn.hung_up:
                # Asterisk tells a hangup from a redirect on AMI only once the AGI socket has
                # closed, so close it first (the outcome variables were written above).
                await conn.close()
                how = await self.tracker.wait_disposition(tracked)
                log.info("call %s: AGI saw HANGUP; AMI says %s", call_uuid, how)
                if how == "redirect":
                    outcome.status, outcome.reason = "TRANSFERRED", REDIRECTED_REASON
        finally:
            self.tracker.remove(tracked)
        # The sidecar holds the call record until it hears what the channel finally says: the
        # same values as the AI_* variables (written by _finish, then by AMI for a redirect).
        await self.control.report_outcome(c.Outcome(
            uuid=call_uuid, status=outcome.status, reason=_safe(outcome.reason),
            transfer_to=_safe(outcome.transfer_to)))
        if how == "redirect":
            await self.tracker.mark_redirected(tracked)
        return outcome

    async def _converse(self, conn: AgiConnection, tracked: TrackedCall,
                        t_start: float) -> AgiOutcome:
        if await conn.channel_status() != CHANNEL_UP and self.cfg.fastagi.answer:
            await conn.answer()
        setup_ms = (time.perf_counter() - t_start) * 1000
        result = await conn.exec("AudioSocket", f"{tracked.uuid},{self.cfg.audiosocket_address}")
        verdict = await self.control.wait_ended(
            tracked.uuid, VERDICT_WAIT_SECONDS if result == 0 else HANGUP_VERDICT_WAIT_SECONDS)
        out = AgiOutcome("FAILED", uuid=tracked.uuid, assistant=tracked.assistant.name,
                         setup_ms=round(setup_ms, 3))
        if tracked.redirected_to:
            out.status, out.transfer_to = "TRANSFERRED", tracked.redirected_to
            out.reason = f"transferred to {tracked.redirected_to} by AMI Redirect"
        elif verdict is not None:
            out.status, out.reason = verdict.status, verdict.reason
            out.transfer_to, out.summary = verdict.transfer_to, verdict.summary
        elif conn.hung_up:
            out.status, out.reason = "CALLER_HANGUP", "channel hung up"
        elif result == -1:
            out.reason = "AudioSocket could not connect to the media sidecar"
        else:
            out.reason = "the media sidecar gave no verdict"
        return await self._finish(conn, out)

    async def _finish(self, conn: AgiConnection, out: AgiOutcome) -> AgiOutcome:
        """Write the outcome variables (SET VARIABLE works on a hung-up channel too)."""
        values = {"AI_STATUS": out.status, "AI_REASON": out.reason,
                  "AI_TRANSFER_TO": out.transfer_to, "AI_SUMMARY": out.summary}
        try:
            for name, value in values.items():
                if value or name in ("AI_STATUS", "AI_TRANSFER_TO"):
                    await conn.set_variable(name, _safe(value))
        except (AgiError, ConnectionError, UnsafeValueError) as exc:
            log.info("could not set outcome variables: %s", exc)
        return out
