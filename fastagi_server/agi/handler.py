"""One FastAGI connection: read the request, pick the assistant, hand the call to the sidecar.

Flow: env block (with a timeout) -> the call's identity and AI_* inputs read from Asterisk (one
``GET FULL VARIABLE``; the env block is caller-forgeable, see :mod:`.identity`) -> routing ->
the call placed on the least-loaded media worker that accepts its offer
(:mod:`fastagi_server.placement`) -> ANSWER if needed -> ``EXEC AudioSocket
"<uuid>,<host:port>"`` at that worker's address for a slin assistant, or
``EXEC Dial "AudioSocket/<host:port>/<uuid>/c(<codec>),5,g"`` for a ulaw, alaw or slin16 one
(either blocks for the conversation) -> outcome variables. Any failure before the conversation sets ``AI_STATUS=FAILED`` and
``AI_REASON`` at once and returns, so the dialplan falls through to its fallback: a caller never
sits in dead air because a component is down.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import secrets
import time
import uuid as uuidlib
from dataclasses import dataclass

from media_sidecar.config.schema import Config
from media_sidecar.protocol import control as c
from media_sidecar.protocol.control import DRAINING

from ..calls import (
    REDIRECTED_REASON,
    CallerRateLimit,
    CallTracker,
    TrackedCall,
    supports_handback,
)
from ..control_client import ControlUnavailable
from ..placement import MediaPool
from ..routing import RouteInput, call_variables, choose_assistant
from .connection import AgiConnection
from .identity import (
    CallIdentity,
    IdentityError,
    ai_var_names,
    cut_short_by,
    decode_value,
    encoded,
    identity_expression,
    parse_identity,
    parse_vars,
    tamper_report,
    vars_expression,
)
from .protocol import (
    AgiConnectionClosed,
    AgiError,
    AgiRequest,
    UnsafeValueError,
    cmd_get_full_variable,
    log_safe,
    raise_for,
)

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
    channel: str = ""
    uniqueid: str = ""
    """The call's channel and uniqueid as Asterisk gave them (the env block's when the read
    failed)."""
    worker: str = ""
    """The media worker the call was placed on (empty: never placed)."""


RATE_LIMITED = "rate-limited"
"""``AI_REASON`` of a call refused for ``fastagi.caller_rate_limit``."""


def refusal_reason(reason: str) -> str:
    """``AI_REASON`` for a call every media worker refused: ``draining``, ``busy`` (every
    worker at ``sidecar.max_calls``; also an older worker's "at its limit" wording), else
    ``sidecar refused: <its reason>``."""
    if reason == DRAINING:
        return DRAINING
    if reason.startswith(c.BUSY) or "at its limit of" in reason:
        return c.BUSY
    return f"sidecar refused: {reason}"


def _safe(value: str, limit: int = 512) -> str:
    """A value fit for SET VARIABLE: control characters become spaces, length capped."""
    return _CONTROL_CHARS.sub(" ", value)[:limit].strip()


VERDICT_WAIT_SECONDS = 1.0
"""After the media leg ended normally (result 0), how long the sidecar's ``ended`` may take;
0.3 s after a hangup (its verdict is then only CALLER_HANGUP). The sidecar's
``OUTCOME_WAIT_SECONDS`` covers this plus ``calls.DISPOSITION_WAIT_SECONDS``."""
HANGUP_VERDICT_WAIT_SECONDS = 0.3
HANGUP_LINE_WAIT_SECONDS = 0.2
"""After ``EXEC AudioSocket`` returned -1 with no verdict: how long to look for the ``HANGUP``
line that tells a hangup from a failure to connect (it follows the result at once)."""

WITHDRAW_SEND_SECONDS = 1.0
"""Bound on sending ``withdraw`` to the call's media worker (a stalled link does not hold the
AGI session)."""

DIAL_ANSWER_TIMEOUT_SECONDS = 5
"""Dial's answer timeout for the AudioSocket leg. chan_audiosocket connects to the sidecar
(bounded at 2 s) while Dial requests the channel and answers as soon as it is called, so this
only ends a leg that never answers (DIALSTATUS=NOANSWER, AI_STATUS=FAILED) instead of leaving
the caller in silence."""
DIAL_COULD_NOT_CONNECT = ("CHANUNAVAIL", "CONGESTION")
"""DIALSTATUS when no AudioSocket channel could be made: chan_audiosocket failed to connect to
the sidecar (or to parse the UUID or codec), cause 38 -> CHANUNAVAIL."""
_FORMAT_NAME = re.compile(r"^[a-z][a-z0-9]{1,15}$")


def audiosocket_dial(audio_format: str, uuid: str, address: str) -> str:
    """The argument of ``EXEC Dial`` that bridges the caller to an AudioSocket channel
    carrying ``audio_format`` (an Asterisk format name: ulaw, alaw, slin16) both ways.

    ``AudioSocket/<host:port>/<uuid>/c(<format>)`` is the channel (chan_audiosocket splits its
    resource on ``/``), then the answer timeout, then ``g``: go on (back to this AGI, Dial
    returns 0) when the AudioSocket leg hangs up, the way the AudioSocket() application
    returns when the sidecar ends the session. Quoting for AGI is ``cmd_exec``'s job.
    Raises ValueError for a format name that is not one.
    """
    if not _FORMAT_NAME.match(audio_format):
        raise ValueError(f"{audio_format!r} is not an Asterisk format name")
    return f"AudioSocket/{address}/{uuid}/c({audio_format}),{DIAL_ANSWER_TIMEOUT_SECONDS},g"


class AgiCallHandler:
    def __init__(self, cfg: Config, control: MediaPool, tracker: CallTracker) -> None:
        self.cfg = cfg
        self.control = control
        self.tracker = tracker
        self.outcomes: list[AgiOutcome] = []
        """Recent outcomes (bounded), for tests and the health view."""
        self.draining = False
        """Set by the drain: every new call is refused at once with ``AI_REASON=draining``."""
        self.refused: collections.Counter[str] = collections.Counter()
        """Calls this side refused without offering them, by reason (``draining``,
        ``rate-limited``); reported to the sidecar's metrics with the offers that got no
        answer."""
        self.rate_limit = CallerRateLimit(cfg.fastagi.caller_rate_limit,
                                          cfg.fastagi.caller_rate_window)

    async def handle(self, conn: AgiConnection) -> AgiOutcome | None:
        """Serve one AGI connection; never raises for call-level faults."""
        try:
            req = await conn.read_env(self.cfg.fastagi.env_timeout)
        except (AgiError, TimeoutError, ConnectionError) as exc:
            log.debug("FastAGI connection dropped before a request: %s", exc)
            return None
        t_start = time.perf_counter()
        ident: CallIdentity | None = None
        try:
            if self.draining:  # the dialplan falls back at once; nothing is read or offered
                self.refused[DRAINING] += 1
                outcome = await self._finish(conn, AgiOutcome("FAILED", reason=DRAINING))
            else:
                ident = await self._identify(conn, req)
                outcome = await self._run(conn, req, ident, t_start)
        except IdentityError as exc:  # not Asterisk's reply, a cut value, a block cut short
            outcome = await self._finish(conn, AgiOutcome("FAILED", reason=str(exc)))
        except (AgiConnectionClosed, ConnectionError) as exc:
            log.info("AGI connection for %s closed: %s", log_safe(req.channel), exc)
            outcome = AgiOutcome("CALLER_HANGUP", reason="AGI connection closed")
        except AgiError as exc:  # 511 after a hangup, a desynchronised connection, ...
            log.info("AGI call on %s ended: %s", log_safe(req.channel), exc)
            outcome = AgiOutcome("CALLER_HANGUP" if conn.hung_up else "FAILED", reason=str(exc))
        outcome.channel = ident.channel if ident is not None else req.channel
        outcome.uniqueid = ident.uniqueid if ident is not None else req.uniqueid
        self.outcomes.append(outcome)
        del self.outcomes[:-100]
        log.info("AGI %s (%s): AI_STATUS=%s %s%s", log_safe(outcome.channel),
                 log_safe(outcome.uniqueid), outcome.status, outcome.reason,
                 f" (media worker {outcome.worker})" if outcome.worker else "")
        return outcome

    async def _identify(self, conn: AgiConnection, req: AgiRequest) -> CallIdentity:
        """Read who the call is from Asterisk itself, in one ``GET FULL VARIABLE`` round trip
        (:mod:`.identity`), and log one WARNING when the env block was tampered with (lines the
        parser did not believe, or values that disagree with Asterisk's; escaped).

        Raises :class:`IdentityError` when the reply is not Asterisk's, a value came back cut,
        or a caller-controlled value ended the env block early (its arguments are then not the
        dialplan's); ``AgiError`` / ``ConnectionError`` when the read fails (a 511, EOF, no
        reply within ``fastagi.env_timeout``).
        """
        nonce = secrets.token_hex(8)
        ident: CallIdentity | None = None
        try:
            line = cmd_get_full_variable(identity_expression(nonce))
            resp = raise_for(await conn.command(line, self.cfg.fastagi.env_timeout))
            ident = parse_identity(resp.data if resp.result == "1" else None, nonce)
            if cut := cut_short_by(ident):
                raise IdentityError(
                    f"a blank line in {', '.join(cut)} ended the AGI request block early: its "
                    "arguments are not the dialplan's"
                )
        except IdentityError as exc:
            refused = tamper_report(req, ident) or (
                f"AGI request for {log_safe(req.channel)} ({log_safe(req.uniqueid)}) not trusted"
            )
            log.warning("%s; call refused: %s", refused, exc)
            raise
        except (AgiError, ConnectionError):
            if (failed := tamper_report(req, None)) is not None:
                log.warning("%s", failed)
            raise
        if (report := tamper_report(req, ident)) is not None:
            log.warning("%s", report)
        return ident

    async def _read_var(self, conn: AgiConnection, name: str) -> str | None:
        """Read one channel variable safely: through BASE64_ENCODE (a value holding ')' or a
        newline cannot confuse the line protocol) with a nonce after the value (never an empty
        argument, so no Asterisk warning). None when unset, empty, or returned cut."""
        nonce = secrets.token_hex(8)
        raw = await conn.get_full_variable(encoded(name, nonce))
        return decode_value(raw or "", nonce) or None

    async def _variables(self, conn: AgiConnection, ident: CallIdentity) -> dict[str, str]:
        """AI_ASSISTANT, AI_LANGUAGE and AI_VARS from the identity read, plus ``AI_VAR_<name>``
        for each name AI_VARS lists, in one more round trip (only when it lists any). Raises
        as :meth:`_identify`."""
        out = dict(ident.inputs)
        names = ai_var_names(out.get("AI_VARS", ""))
        if names:
            nonce = secrets.token_hex(8)
            line = cmd_get_full_variable(vars_expression(nonce, names))
            resp = raise_for(await conn.command(line, self.cfg.fastagi.env_timeout))
            out.update(parse_vars(resp.data if resp.result == "1" else None, nonce, names))
        return out

    async def _run(self, conn: AgiConnection, req: AgiRequest, ident: CallIdentity,
                   t_start: float) -> AgiOutcome:
        """Route and serve the call. Everything that names or routes the call comes from
        ``ident`` (Asterisk); from ``req`` only the script, query and arguments, which a caller
        cannot forge (see ``EnvParser``)."""
        if not self.rate_limit.admit(ident.callerid, asyncio.get_running_loop().time()):
            log.warning("call on %s from %s refused: over fastagi.caller_rate_limit (%d calls "
                        "in %.0f s)", log_safe(ident.channel), log_safe(ident.callerid),
                        self.rate_limit.limit, self.rate_limit.window)
            self.refused[RATE_LIMITED] += 1
            return await self._finish(conn, AgiOutcome("FAILED", reason=RATE_LIMITED))
        variables = await self._variables(conn, ident)
        for arg in req.args:  # AGI(agi://.../agent,AI_VAR_ACCOUNT=123) also works
            key, sep, value = arg.partition("=")
            if sep and key.startswith("AI_") and _VAR_NAME.match(key):
                variables.setdefault(key, value)
        decision = choose_assistant(self.cfg, RouteInput(
            script=req.script, query=dict(req.query), dnid=ident.dnid,
            extension=ident.extension, callerid=ident.callerid, context=ident.context,
            variables=variables))
        if not decision.ok or decision.assistant is None:
            return await self._finish(conn, AgiOutcome("FAILED", reason=decision.error or
                                                       "no assistant"))
        assistant = self.cfg.assistant(decision.assistant)
        assert assistant is not None
        call_uuid = str(uuidlib.uuid4())
        call_vars = call_variables(variables)
        ctx = c.CallContext(
            channel=ident.channel, uniqueid=ident.uniqueid, linkedid=ident.linkedid,
            callerid=ident.callerid, calleridname=ident.calleridname, dnid=ident.dnid,
            extension=ident.extension, context=ident.context,
            language=call_vars.get("AI_LANGUAGE") or req.language,
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
            reason = refusal_reason(reply.reason)
            return await self._finish(conn, AgiOutcome("FAILED", reason=reason,
                                                       assistant=assistant.name))
        worker = self.control.worker(call_uuid)
        tracked = TrackedCall(uuid=call_uuid, channel=ident.channel, uniqueid=ident.uniqueid,
                              assistant=assistant, handback=supports_handback(req.version),
                              audiosocket_address=self.control.audiosocket_address(call_uuid),
                              worker=worker.name if worker is not None else "")
        try:
            return await self._placed(conn, tracked, t_start)
        finally:
            self.control.forget(call_uuid)

    async def _placed(self, conn: AgiConnection, tracked: TrackedCall,
                      t_start: float) -> AgiOutcome:
        """Serve a call its media worker accepted, then report its outcome to that worker."""
        call_uuid = tracked.uuid
        self.tracker.add(tracked)
        try:
            outcome = await self._converse(conn, tracked, t_start)
        except Exception as exc:  # the AGI session ended under us (EOF, 511, ...): re-raised
            await self._withdraw(tracked, f"the AGI session ended: {exc}")
            raise
        finally:
            tracked.agi_closed = True
        outcome.worker = tracked.worker
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
        # the worker the call was placed on (tests that drive this alone: the configured one)
        assistant = tracked.assistant
        address = tracked.audiosocket_address or self.cfg.audiosocket_address
        dialstatus: str | None = None  # None: the AudioSocket() application served the call
        if assistant.media_path == "dial":
            # The caller's codec straight through: Asterisk bridges the caller to an
            # AudioSocket channel; Dial blocks like the application does, and DIALSTATUS says
            # whether that channel ever connected to the sidecar.
            result = await conn.exec(
                "Dial", audiosocket_dial(assistant.audio_format, tracked.uuid, address))
            dialstatus = await conn.get_variable("DIALSTATUS") or ""
        else:
            result = await conn.exec("AudioSocket", f"{tracked.uuid},{address}")
        verdict = None
        if dialstatus in (None, "ANSWER"):  # a leg that never connected has no verdict coming
            verdict = await self.control.wait_ended(
                tracked.uuid, VERDICT_WAIT_SECONDS if result == 0 else HANGUP_VERDICT_WAIT_SECONDS)
        if verdict is None:  # Asterisk is done connecting: free the worker's slot now
            app = "AudioSocket" if dialstatus is None else f"Dial (DIALSTATUS={dialstatus})"
            await self._withdraw(tracked, f"EXEC {app} returned {result} with no verdict")
        if verdict is None and result == -1 and dialstatus is None and not conn.hung_up:
            # -1 is also what a hangup gives. Asterisk then writes HANGUP right after the EXEC
            # result, and nothing reads it until the next command: look for it before calling
            # this a failure to connect. (The Dial path's GET VARIABLE has read it already.)
            try:
                async with asyncio.timeout(HANGUP_LINE_WAIT_SECONDS):
                    await conn.wait_hangup()
            except TimeoutError:
                pass
        out = AgiOutcome("FAILED", uuid=tracked.uuid, assistant=assistant.name,
                         setup_ms=round(setup_ms, 3))
        if tracked.redirected_to:
            out.status, out.transfer_to = "TRANSFERRED", tracked.redirected_to
            out.reason = f"transferred to {tracked.redirected_to} by AMI Redirect"
        elif verdict is not None:
            out.status, out.reason = verdict.status, verdict.reason
            out.transfer_to, out.summary = verdict.transfer_to, verdict.summary
            if tracked.goto is not None and out.status == "TRANSFERRED" and not conn.hung_up:
                await self._finish(conn, out)
                await self._goto(conn, tracked, tracked.goto)
                return out
        elif conn.hung_up:
            out.status, out.reason = "CALLER_HANGUP", "channel hung up"
        elif tracked.worker and self.control.lost(tracked.uuid):
            out.reason = (f"media worker {tracked.worker} stopped during the call (its control "
                          "link closed)")
        elif dialstatus in DIAL_COULD_NOT_CONNECT:
            out.reason = (f"Dial(AudioSocket/...) could not connect to the media sidecar "
                          f"(DIALSTATUS={dialstatus})")
        elif dialstatus not in (None, "ANSWER"):
            out.reason = f"Dial(AudioSocket/...) ended with DIALSTATUS={dialstatus or '(unset)'}"
        elif result == -1 and dialstatus is None:
            out.reason = "AudioSocket could not connect to the media sidecar"
        else:
            out.reason = "the media sidecar gave no verdict"
        return await self._finish(conn, out)

    async def _withdraw(self, tracked: TrackedCall, reason: str) -> None:
        """Tell the call's media worker that its AudioSocket connection will not come, so the
        offer's ``max_calls`` slot is free at once (``protocol.control`` ``withdraw``; a no-op
        there for a call that did connect). Bounded; never raises for a link that is down."""
        try:
            async with asyncio.timeout(WITHDRAW_SEND_SECONDS):
                sent = await self.control.send(c.Withdraw(uuid=tracked.uuid, reason=_safe(reason)))
        except TimeoutError:
            sent = False
        if not sent:
            log.info("call %s: withdraw not sent (control link down); the worker frees the "
                     "slot after sidecar.offer_ttl", tracked.uuid)

    async def _goto(self, conn: AgiConnection, tracked: TrackedCall,
                    target: tuple[str, str, str]) -> None:
        """Send the channel to an assistant's transfer destination: the AGI then ends and the
        dialplan goes on there (``Goto`` inside AGI leaves the priority so that the PBX loop
        lands on it). If Asterisk refuses, the dialplan after AGI() still has AI_STATUS and
        AI_TRANSFER_TO to route by (asterisk_conf's [agi-voice-transfer])."""
        try:
            result = await conn.exec("Goto", ",".join(target))
        except (AgiError, ConnectionError, UnsafeValueError) as exc:
            result, detail = None, str(exc)
        else:
            detail = f"result {result}"
        if result == 0:
            log.info("call %s: transferred to %s by dialplan Goto", tracked.uuid,
                     ",".join(target))
        else:
            log.warning("call %s: Goto %s failed (%s); the dialplan routes by AI_TRANSFER_TO",
                        tracked.uuid, ",".join(target), detail)

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
