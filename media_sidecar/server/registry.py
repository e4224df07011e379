"""Which calls the control plane offered, and which are live, in this sidecar process.

An AudioSocket connection is accepted only for a UUID that was offered here and not yet
claimed or expired; that is the only thing that ties a TCP connection to a call (Asterisk does
not enforce UUID uniqueness), so an unknown UUID is closed without a byte.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import trio

from ..config.schema import Config
from ..protocol.control import Accept, Dtmf, Hangup, Offer, Refuse

log = logging.getLogger("agi_voice.registry")


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

    def _expire(self) -> None:
        now = trio.current_time()
        for key in [k for k, p in self._offers.items() if p.expires <= now]:
            del self._offers[key]
