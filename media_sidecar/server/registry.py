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
from typing import Protocol

import trio

from ..config.schema import Config
from ..protocol.control import Accept, Dtmf, Hangup, Offer, Outcome, Refuse

log = logging.getLogger("agi_voice.registry")

MAX_HELD_OUTCOMES = 1024
"""Outcomes held for calls whose handler is not waiting yet (one that arrived before the media
session wound down, or after the handler gave up): the oldest goes first beyond this."""


class LiveCall(Protocol):
    def deliver_control(self, msg: object) -> None: ...


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
        self.unknown_uuid = 0
        self.link_up = False
        """Whether a control link to the FastAGI server is up (set by the control hub)."""
        self._outcomes: dict[str, Outcome] = {}
        self._outcome_waiters: dict[str, trio.Event] = {}

    def offer(self, o: Offer) -> Accept | Refuse:
        """Validate an offer and remember it until the AudioSocket connection claims it."""
        self._expire()
        key = o.uuid.lower()
        reason = ""
        if self.cfg.assistant(o.assistant) is None:
            reason = f"unknown assistant {o.assistant!r}"
        elif o.assistant in self.unavailable:
            reason = self.unavailable[o.assistant]
        elif key in self._offers or key in self._live:
            reason = "duplicate call uuid"
        elif len(self._offers) + len(self._live) >= self.cfg.sidecar.max_calls:
            reason = f"sidecar is at its limit of {self.cfg.sidecar.max_calls} calls"
        if reason:
            self.refused += 1
            log.warning("refused call %s: %s", o.uuid, reason)
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
        return pending.offer

    def withdraw(self, uuid: str) -> None:
        self._offers.pop(uuid.lower(), None)

    def attach(self, uuid: str, call: LiveCall) -> None:
        self._live[uuid.lower()] = call

    def detach(self, uuid: str) -> None:
        self._live.pop(uuid.lower(), None)

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
        if key in self._offers:
            del self._offers[key]
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
