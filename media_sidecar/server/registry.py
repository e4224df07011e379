"""Which calls the control plane offered, and which are live, in this sidecar process.

An AudioSocket connection is accepted only for a UUID that was offered here and not yet
claimed or expired; that is the only thing that ties a TCP connection to a call (Asterisk does
not enforce UUID uniqueness), so an unknown UUID is closed without a byte.

It also holds the control plane's final ``outcome`` of each call until the call's handler picks
it up for the call record (:meth:`CallRegistry.wait_outcome`), and knows whether the control
link is up (a record is not held for an outcome that cannot come).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from ..config.schema import AssistantConfig, Config
from ..protocol.control import BUSY, DRAINING, Accept, Dtmf, Hangup, Offer, Outcome, Refuse

log = logging.getLogger("agi_voice.registry")

MAX_HELD_OUTCOMES = 1024
"""Outcomes held for calls whose handler is not waiting yet (one that arrived before the media
session wound down, or after the handler gave up): the oldest goes first beyond this."""


class LiveCall(Protocol):
    assistant: AssistantConfig

    def deliver_control(self, msg: object) -> None: ...

    def hand_off(self, announcement: bytes, reason: str) -> bool: ...

    def snapshot(self) -> dict[str, Any]: ...


@dataclass
class _Pending:
    offer: Offer
    expires: float


class CallRegistry:
    def __init__(self, cfg: Config, unavailable: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.unavailable = unavailable or {}
        """assistant name -> why it cannot take calls (e.g. speech engines not installed)."""
        self._offers: dict[str, _Pending] = {}
        self._live: dict[str, LiveCall] = {}
        self.refused = 0
        self.withdrawn = 0
        """Offers the control plane withdrew (``withdraw``, or a ``hangup`` first)."""
        self.unknown_uuid = 0
        self.link_up = False
        """Whether a control link to the FastAGI server is up (set by the control hub)."""
        self._outcomes: dict[str, Outcome] = {}
        self._outcome_waiters: dict[str, trio.Event] = {}
        self.draining = False
        """Set by the drain: every new offer is refused with reason ``draining``."""
        self._changed = trio.Event()

    def offer(self, o: Offer) -> Accept | Refuse:
        """Validate an offer and remember it until the AudioSocket connection claims it."""
        self._expire()
        key = o.uuid.lower()
        reason = ""
        if self.draining:
            reason = DRAINING
        elif self.cfg.assistant(o.assistant) is None:
            reason = f"unknown assistant {o.assistant!r}"
        elif o.assistant in self.unavailable:
            reason = self.unavailable[o.assistant]
        elif key in self._offers or key in self._live:
            reason = "duplicate call uuid"
        elif len(self._offers) + len(self._live) >= self.cfg.sidecar.max_calls:
            reason = f"{BUSY}: at the limit of {self.cfg.sidecar.max_calls} calls"
        if reason:
            self.refused += 1
            log.log(logging.INFO if reason == DRAINING else logging.WARNING,
                    "refused call %s: %s", o.uuid, reason)
            return Refuse(uuid=o.uuid, reason=reason)
        self._offers[key] = _Pending(o, trio.current_time() + self.cfg.sidecar.offer_ttl)
        return Accept(uuid=o.uuid)

    def claim(self, uuid: str) -> Offer | None:
        """Take the offer for ``uuid`` (once). None if it was never offered or has expired."""
        self._expire()
        pending = self._offers.pop(uuid.lower(), None)
        if pending is None:
            self.unknown_uuid += 1
            return None
        self.notify()
        return pending.offer

    def withdraw(self, uuid: str) -> bool:
        """Forget a pending offer (its AudioSocket will not come): its ``max_calls`` slot is
        free at once. True when there was one; a call already connected is not touched."""
        if self._offers.pop(uuid.lower(), None) is None:
            return False
        self.withdrawn += 1
        self.notify()
        return True

    def notify(self) -> None:
        """Wake whoever waits for the calls to change (the drain): an offer claimed or
        withdrawn, a call over (its record written: the AudioSocket server calls this)."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Until the next :meth:`notify`. (An offer's expiry does not notify.)"""
        await self._changed.wait()

    def attach(self, uuid: str, call: LiveCall) -> None:
        self._live[uuid.lower()] = call

    def detach(self, uuid: str) -> None:
        self._live.pop(uuid.lower(), None)

    def live(self) -> list[tuple[str, LiveCall]]:
        """(uuid, call) of every live call, for the drain."""
        return list(self._live.items())

    def snapshot(self) -> list[dict[str, Any]]:
        """Each live call as :meth:`MediaSession.snapshot
        <media_sidecar.session.base.MediaSession.snapshot>` gives it (the health listener's
        ``/calls``, for the dashboard), oldest first; without the caller's and the agent's words
        when the records keep no transcripts. A call whose snapshot fails is left out (logged):
        the view never touches a call."""
        out = []
        for uuid, call in list(self._live.items()):
            try:
                snap = call.snapshot()
            except Exception:
                log.exception("call %s: no live snapshot", uuid)
                continue
            if not self.cfg.sidecar.records.transcripts:
                snap = {**snap, "last_caller": "", "last_agent": ""}
            out.append(snap)
        return out

    @property
    def pending_offers(self) -> int:
        """Offers accepted whose AudioSocket has not connected yet (and not expired)."""
        self._expire()
        return len(self._offers)

    def withdraw_all(self) -> int:
        """Forget every pending offer (the drain's deadline); returns how many there were.
        Their AudioSocket connections, if they still come, are closed without a byte."""
        n = len(self._offers)
        self._offers.clear()
        self.notify()
        return n

    def deliver(self, msg: Dtmf | Hangup) -> bool:
        """Hand a control message to its live call. A hangup withdraws a pending offer."""
        call = self._live.get(msg.uuid.lower())
        if call is not None:
            call.deliver_control(msg)
            return True
        if isinstance(msg, Hangup):
            self.withdraw(msg.uuid)
        return False

    # -- the control plane's final outcome -----------------------------------------------------

    def set_link(self, up: bool) -> None:
        """The control link came up or went down. Down wakes every outcome waiter: nothing
        more will come over that link for the calls it carried."""
        self.link_up = up
        if not up:
            for waiter in self._outcome_waiters.values():
                waiter.set()

    def outcome_arrived(self, msg: Outcome) -> None:
        """Keep an ``outcome`` for its call's handler (waiting or not yet). An outcome for a
        call that was offered but never connected withdraws the offer: the call is over."""
        key = msg.uuid.lower()
        if self.withdraw(key):
            return
        self._outcomes.pop(key, None)
        self._outcomes[key] = msg
        while len(self._outcomes) > MAX_HELD_OUTCOMES:
            del self._outcomes[next(iter(self._outcomes))]
        waiter = self._outcome_waiters.get(key)
        if waiter is not None:
            waiter.set()

    async def wait_outcome(self, uuid: str, time_limit: float) -> Outcome | None:
        """The control plane's final outcome for a finished call, or None.

        Returns at once when it is already here, or (None) when the control link is down;
        otherwise waits up to ``time_limit`` seconds, and returns None early if the link goes
        down meanwhile. Cancellation propagates (callers shield it with the record write).
        """
        key = uuid.lower()
        if key not in self._outcomes and self.link_up:
            waiter = self._outcome_waiters[key] = trio.Event()
            try:
                with trio.move_on_after(time_limit):
                    await waiter.wait()
            finally:
                self._outcome_waiters.pop(key, None)
        return self._outcomes.pop(key, None)

    def _expire(self) -> None:
        now = trio.current_time()
        for key in [k for k, p in self._offers.items() if p.expires <= now]:
            del self._offers[key]
