"""Calls the control plane is handling, correlated with AMI by Uniqueid.

AMI events reach calls here: ``Hangup`` ends the call's media session, ``DTMFEnd`` (received)
delivers digits on every Asterisk version, ``BlindTransfer``/``AttendedTransfer`` are recorded.
Transfers the assistant asks for are checked against the assistant's allowed destinations and
done as a dialplan Goto after the sidecar's hand-back where Asterisk supports it (20.14, 21.9,
22.4, 23.0 and later), else with AMI ``Setvar`` + ``Redirect``. A Redirect by anyone looks
exactly like a hangup on the AGI side (``HANGUP`` line); Asterisk tells them apart on AMI: a
hang-up sends ``HangupRequest``/``SoftHangupRequest`` (and then runs the ``h`` extension), a
redirect sends neither and a ``Newexten`` at its target once the AGI connection closed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from media_sidecar.config.schema import AssistantConfig
from media_sidecar.protocol import control as c

log = logging.getLogger("agi_voice.calls")

REDIRECTED_REASON = "redirected by AMI, not by the assistant"

DISPOSITION_WAIT_SECONDS = 3.0
"""How long, after the AGI socket closed on a ``HANGUP``, AMI gets to say hangup or redirect
(the sidecar holds the call record longer: ``control.OUTCOME_WAIT_SECONDS``)."""


class AmiActions(Protocol):
    @property
    def connected(self) -> bool: ...

    async def redirect(self, channel: str, context: str, exten: str, priority: str) -> Any: ...

    async def setvar(self, channel: str, variable: str, value: str) -> Any: ...


class ControlSender(Protocol):
    async def send(self, msg: c.ControlMessage) -> bool: ...


@dataclass
class TrackedCall:
    uuid: str
    channel: str
    uniqueid: str
    assistant: AssistantConfig
    redirected_to: str = ""
    agi_closed: bool = False
    disposition: str = ""
    """After the AGI side saw HANGUP: "hangup" or "redirect" as AMI tells it."""
    disposed: asyncio.Event = field(default_factory=asyncio.Event)
    transfers_seen: list[str] = field(default_factory=list)
    hangup_requested: bool = False
    """AMI said the channel is being hung up (HangupRequest / SoftHangupRequest). A redirect
    sends neither; a caller's hang-up sends one before the ``h`` extension runs."""
    handback: bool = False
    """Asterisk continues the dialplan after AudioSocket's ``00 00 00`` (20.14, 21.9, 22.4,
    23.0 and later): a transfer can then be a dialplan Goto instead of an AMI Redirect."""
    goto: tuple[str, str, str] | None = None
    """(context, exten, priority) the FastAGI side sends the channel to after the hand-back."""
    audiosocket_address: str = ""
    """host:port of the media worker the call is placed on (``EXEC AudioSocket`` goes there)."""
    worker: str = ""
    """That worker's name (logs)."""


def supports_handback(version: str) -> bool:
    """True for an Asterisk whose ``AudioSocket()`` returns 0 to the dialplan on ``00 00 00``
    (telephony.md A.3): 20.14+, 21.9+, 22.4+, 23+. Unknown or certified versions: False."""
    parts = version.split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return False
    need = {20: 14, 21: 9, 22: 4}
    return major >= 23 or (major in need and minor >= need[major])


class CallerRateLimit:
    """At most ``limit`` calls per caller ID within a sliding ``window`` of seconds
    (``fastagi.caller_rate_limit``; 0: no limit). Pure: the caller passes the time
    (``loop.time()``).

    Only admitted calls count (a caller who keeps retrying while over the limit is let in as
    soon as the window has room). Callers without a number (``""``, ``unknown``, ``anonymous``)
    share one count. Memory is bounded: at most ``limit`` stamps per caller, and callers whose
    stamps all expired are dropped once more than :attr:`MAX_CALLERS` are tracked (the oldest
    caller goes first if they are all still within the window).
    """

    MAX_CALLERS = 10_000

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._stamps: dict[str, collections.deque[float]] = {}
        self.limited = 0
        """Calls refused for the limit."""

    @staticmethod
    def _key(callerid: str) -> str:
        return "" if callerid.strip().lower() in ("", "unknown", "anonymous") else callerid

    def admit(self, callerid: str, now: float) -> bool:
        """True (and counted) when the caller is within the limit; False when over it."""
        if self.limit <= 0:
            return True
        key = self._key(callerid)
        stamps = self._stamps.get(key)
        if stamps is None:
            stamps = collections.deque()
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if len(stamps) >= self.limit:
            self.limited += 1
            return False
        stamps.append(now)
        self._stamps.pop(key, None)
        self._stamps[key] = stamps  # most recently used last
        if len(self._stamps) > self.MAX_CALLERS:
            self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._stamps.items() if not s or s[-1] <= now - self.window]:
            del self._stamps[key]
        while len(self._stamps) > self.MAX_CALLERS:
            del self._stamps[next(iter(self._stamps))]

    def __len__(self) -> int:
        return len(self._stamps)


def _get(ev: Mapping[str, Any] | Any, key: str) -> str:
    getter = getattr(ev, "get", None)
    value = getter(key) if getter is not None else getattr(ev, key, None)
    return "" if value is None else str(value)


class CallTracker:
    def __init__(self, control: ControlSender, ami: AmiActions | None = None,
                 transfer_mode: str = "auto") -> None:
        self.control = control
        self.ami = ami
        self.transfer_mode = transfer_mode
        """auto: a dialplan Goto after the hand-back where Asterisk supports it, else AMI
        Redirect; goto / redirect: always that one."""
        self._by_uuid: dict[str, TrackedCall] = {}
        self._by_uniqueid: dict[str, TrackedCall] = {}

    @property
    def ami_connected(self) -> bool:
        return self.ami is not None and self.ami.connected

    def add(self, call: TrackedCall) -> None:
        self._by_uuid[call.uuid.lower()] = call
        if call.uniqueid:
            self._by_uniqueid[call.uniqueid] = call

    def remove(self, call: TrackedCall) -> None:
        self._by_uuid.pop(call.uuid.lower(), None)
        if self._by_uniqueid.get(call.uniqueid) is call:
            del self._by_uniqueid[call.uniqueid]

    def get(self, uuid: str) -> TrackedCall | None:
        return self._by_uuid.get(uuid.lower())

    def __len__(self) -> int:
        return len(self._by_uuid)

    # -- AMI events ----------------------------------------------------------------------------

    async def on_ami_event(self, ev: Mapping[str, Any] | Any) -> None:
        """Route one AMI event to its call; events for other channels are ignored."""
        name = _get(ev, "Event")
        call = self._by_uniqueid.get(_get(ev, "Uniqueid"))
        if name in ("BlindTransfer", "AttendedTransfer"):
            for key in ("TransfererUniqueid", "TransfereeUniqueid", "OrigTransfererUniqueid",
                        "SecondTransfererUniqueid"):
                other = self._by_uniqueid.get(_get(ev, key))
                if other is not None:
                    other.transfers_seen.append(f"{name} {_get(ev, 'Result')}")
                    log.info("call %s: %s %s", other.uuid, name, _get(ev, "Result"))
            return
        if call is None:
            return
        if name in ("HangupRequest", "SoftHangupRequest"):
            call.hangup_requested = True
            if call.agi_closed:
                self._dispose(call, "hangup")
        elif name == "Hangup":
            self._dispose(call, "hangup")
            if not call.agi_closed:
                await self.control.send(c.Hangup(uuid=call.uuid, cause=_get(ev, "Cause-txt")))
        elif name == "DTMFEnd" and _get(ev, "Direction") in ("Received", ""):
            digit = _get(ev, "Digit")
            if len(digit) == 1 and not call.agi_closed:
                await self.control.send(c.Dtmf(uuid=call.uuid, digit=digit, source="ami"))
        elif name == "Newexten" and call.agi_closed:
            # A hang-up runs the h extension (and hangup handlers) too: only a channel nobody
            # hung up that goes on in the dialplan was redirected.
            hanging_up = call.hangup_requested or _get(ev, "Exten") == "h"
            self._dispose(call, "hangup" if hanging_up else "redirect")

    @staticmethod
    def _dispose(call: TrackedCall, how: str) -> None:
        if not call.disposition:
            call.disposition = how
        call.disposed.set()

    # -- transfers -----------------------------------------------------------------------------

    async def transfer(self, req: c.TransferRequest) -> c.TransferResult:
        """Do an assistant's transfer, only to a destination it allows.

        Returns ok=True with method "goto" when the channel can be sent there by the FastAGI
        side after the sidecar's hand-back (see ``transfer_mode``), else ok=True with method
        "redirect" after an AMI Redirect; ok=False with method "dialplan" when AMI is
        unavailable or fails (the sidecar
        then hands the call back with AI_STATUS=TRANSFERRED for the dialplan to route), and
        ok=False with method "refused" for a destination the assistant does not allow.
        """
        call = self.get(req.uuid)
        if call is None:
            return c.TransferResult(uuid=req.uuid, ok=False, method="refused", detail="unknown call")
        dest = call.assistant.destination(req.destination)
        if dest is None or (dest.context, dest.exten, dest.priority) != (
                req.context, req.exten, req.priority):
            log.warning("call %s: transfer to %r refused (not allowed for %s)", call.uuid,
                        req.destination, call.assistant.name)
            return c.TransferResult(uuid=req.uuid, ok=False, method="refused",
                                    detail="destination not allowed")
        if self.transfer_mode == "goto" or (self.transfer_mode == "auto" and call.handback):
            # The sidecar hands the call back (00 00 00) after the announcement; the FastAGI
            # side then sends the channel to the destination with EXEC Goto: no AMI needed, and
            # none of the warnings Asterisk logs when a Redirect pulls a channel out of the
            # AudioSocket application.
            call.goto = (dest.context, dest.exten, dest.priority)
            log.info("call %s: transfer to %s by dialplan Goto after the hand-back", call.uuid,
                     req.destination)
            return c.TransferResult(uuid=req.uuid, ok=True, method="goto")
        if self.ami is None or not self.ami.connected:
            return c.TransferResult(uuid=req.uuid, ok=False, method="dialplan",
                                    detail="AMI not connected")
        try:
            await self.ami.setvar(call.channel, "AI_STATUS", "TRANSFERRED")
            await self.ami.setvar(call.channel, "AI_TRANSFER_TO", req.destination)
            await self.ami.redirect(call.channel, dest.context, dest.exten, dest.priority)
        except Exception as exc:  # AMI errors and timeouts: fall back to the dialplan
            log.warning("call %s: AMI redirect failed: %s", call.uuid, exc)
            return c.TransferResult(uuid=req.uuid, ok=False, method="dialplan", detail=str(exc))
        call.redirected_to = req.destination
        log.info("call %s redirected to %s (%s,%s,%s)", call.uuid, req.destination, dest.context,
                 dest.exten, dest.priority)
        return c.TransferResult(uuid=req.uuid, ok=True, method="redirect")

    async def resolve_disposition(self, call: TrackedCall,
                                  time_limit: float = DISPOSITION_WAIT_SECONDS) -> str:
        """After the AGI side saw HANGUP without our own redirect: hangup or redirect?

        :meth:`wait_disposition`, then, for a redirect, :meth:`mark_redirected`.
        Returns "hangup", "redirect" or "unknown" (no AMI, or no event in time).
        """
        how = await self.wait_disposition(call, time_limit)
        if how == "redirect":
            await self.mark_redirected(call)
        return how

    async def wait_disposition(self, call: TrackedCall,
                               time_limit: float = DISPOSITION_WAIT_SECONDS) -> str:
        """Wait for AMI to say hangup or redirect (Asterisk emits the events only after the AGI
        socket closed). Returns "hangup", "redirect" or "unknown" (no AMI, or no event in
        time). Cancellation propagates."""
        if not self.ami_connected:
            return "unknown"
        if call.hangup_requested:  # AMI already said so while the AGI was still open
            self._dispose(call, "hangup")
        try:
            await asyncio.wait_for(call.disposed.wait(), time_limit)
        except TimeoutError:
            return "unknown"
        return call.disposition

    async def mark_redirected(self, call: TrackedCall) -> None:
        """Set AI_STATUS=TRANSFERRED and AI_REASON on a channel a third party redirected (it is
        alive at the redirect target; AGI can no longer reach it). Each variable is tried on
        its own; AMI errors are logged (the channel may already be gone)."""
        if self.ami is None:
            return
        for name, value in (("AI_STATUS", "TRANSFERRED"), ("AI_REASON", REDIRECTED_REASON)):
            try:
                await self.ami.setvar(call.channel, name, value)
            except Exception as exc:
                log.info("call %s: could not set %s on the redirected channel: %s", call.uuid,
                         name, exc)
