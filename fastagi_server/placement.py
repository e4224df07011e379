"""Placing calls on media workers: one control link per worker, the least-loaded one first.

The FastAGI side keeps a :class:`~fastagi_server.control_client.ControlClient` per media
worker: ``serve``'s local workers and the ``fastagi.media`` ones on other hosts
(:func:`media_sidecar.config.workers.media_targets`). :meth:`MediaPool.offer` offers a call to
the worker with the lowest load (calls running + offers waiting for their AudioSocket, as the
worker reports them; ties go to the first listed), and on a refusal (busy, draining, an
assistant it cannot serve), a link that is down, or no answer in time, to the next; the whole
placement stays within ``fastagi.offer_timeout`` (each worker but the last connected one gets
at most half of what is left, so one stuck worker cannot use it all). Once placed, every
message about the call goes on that worker's link and ``EXEC AudioSocket`` points at that
worker's address (:meth:`MediaPool.audiosocket_address`), so an offer and its AudioSocket
connection always meet. A worker that dies loses only its own calls.

Only when no worker takes the call does the offer fail: with the first refusal that is not
``draining`` (else ``draining``), or, with no refusal at all, :class:`ControlUnavailable`
("media plane not ready: starting" until some link has been up once).

The FastAGI side is ready when at least one worker's link is up (:attr:`MediaPool.connected`).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Callable

from media_sidecar.config.schema import Config
from media_sidecar.config.workers import media_targets
from media_sidecar.ops.control_secret import control_secret, secret_env_name
from media_sidecar.protocol import control as c

from .control_client import (
    NOT_READY_DOWN,
    NOT_READY_STARTING,
    ControlClient,
    ControlUnavailable,
    TransferHandler,
)

log = logging.getLogger("agi_voice.placement")

ClientFactory = Callable[..., ControlClient]


class MediaPool:
    """The media workers this FastAGI server places calls on (see the module doc)."""

    def __init__(self, clients: list[ControlClient]) -> None:
        if not clients:
            raise ValueError("no media workers to place calls on")
        self.clients = clients
        self._owner: dict[str, ControlClient] = {}
        self.unanswered: collections.Counter[str] = collections.Counter()
        """Calls no worker answered, by reason (``sidecar_unreachable``,
        ``sidecar_timeout``): reported to the workers' metrics as refused offers."""

    @classmethod
    def from_config(cls, cfg: Config, on_transfer: TransferHandler,
                    client: ClientFactory = ControlClient) -> MediaPool:
        """One client per :func:`~media_sidecar.config.workers.media_targets` entry, each
        with the control link's shared secret from the environment
        (:mod:`media_sidecar.ops.control_secret`)."""
        secret = control_secret(cfg)
        return cls([client(t.control_url, on_transfer, name=t.name,
                           audiosocket_address=t.audiosocket_address, local=t.local,
                           secret=secret, secret_env=secret_env_name(cfg))
                    for t in media_targets(cfg)])

    # -- links -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """At least one worker's link is up: calls can be placed."""
        return any(cl.connected for cl in self.clients)

    @property
    def ever_up(self) -> bool:
        return any(cl.ever_up for cl in self.clients)

    @property
    def url(self) -> str:
        return ", ".join(cl.url for cl in self.clients)

    async def run(self) -> None:
        """Keep every worker's link up until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for cl in self.clients:
                tg.create_task(cl.run())

    async def wait_connected(self, time_limit: float) -> bool:
        """Until some worker's link is up (True), or ``time_limit`` seconds (False)."""
        if self.connected:
            return True
        waits = [asyncio.ensure_future(cl.wait_connected(time_limit)) for cl in self.clients]
        try:
            for fut in asyncio.as_completed(waits):
                if await fut:
                    return True
            return False
        finally:
            for fut in waits:
                fut.cancel()

    # -- placement ---------------------------------------------------------------------------

    async def offer(self, offer: c.Offer, time_limit: float) -> c.Accept | c.Refuse:
        """Place the call (module doc). Returns the accepting worker's ``accept``, or a
        refusal when every worker that answered refused; raises :class:`ControlUnavailable`
        when none answered within ``time_limit`` seconds overall."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_limit
        order = sorted(range(len(self.clients)),
                       key=lambda i: (not self.clients[i].connected, self.clients[i].load, i))
        refusals: list[c.Refuse] = []
        timed_out: ControlUnavailable | None = None
        for k, i in enumerate(order):
            cl = self.clients[i]
            left = deadline - loop.time()
            if left <= 0:
                break
            more = any(self.clients[j].connected for j in order[k + 1:])
            named = offer
            if cl.local and cl.knows_worker:
                named = dataclasses.replace(offer, worker=cl.name)
            try:
                reply = await cl.offer(named, left / 2 if more else left)
            except ControlUnavailable as exc:
                if "did not answer" in str(exc):
                    timed_out = exc
                    log.warning("call %s: media worker %s did not answer the offer; trying "
                                "the next", offer.uuid, cl.name)
                continue
            if isinstance(reply, c.Accept):
                self._owner[offer.uuid.lower()] = cl
                log.debug("call %s placed on media worker %s (load %d)", offer.uuid, cl.name,
                          cl.load)
                return reply
            log.info("call %s: media worker %s refused: %s", offer.uuid, cl.name, reply.reason)
            refusals.append(reply)
        if refusals:
            return next((r for r in refusals if r.reason != c.DRAINING), refusals[0])
        if timed_out is not None:
            self.unanswered["sidecar_timeout"] += 1
            raise timed_out
        self.unanswered["sidecar_unreachable"] += 1
        raise ControlUnavailable(NOT_READY_DOWN if self.ever_up else NOT_READY_STARTING)

    def worker(self, uuid: str) -> ControlClient | None:
        """The worker a call is placed on (None: not placed, or forgotten)."""
        return self._owner.get(uuid.lower())

    def audiosocket_address(self, uuid: str) -> str:
        """Where Asterisk connects AudioSocket for this call: its worker's address."""
        cl = self.worker(uuid)
        return cl.audiosocket_address if cl is not None else ""

    # -- per call, on the call's worker -------------------------------------------------------

    async def send(self, msg: c.ControlMessage) -> bool:
        """A call's message on its worker's link; a message about no call (``stats``) on every
        link that is up. False when nothing was sent."""
        uuid = getattr(msg, "uuid", None)
        if uuid is not None:
            cl = self.worker(uuid)
            return cl is not None and await cl.send(msg)
        sent = [await cl.send(msg) for cl in self.clients if cl.connected]
        return any(sent)

    async def report_outcome(self, outcome: c.Outcome) -> bool:
        cl = self.worker(outcome.uuid)
        if cl is None:
            log.warning("outcome of %s (%s) not reported: the call was never placed",
                        outcome.uuid, outcome.status)
            return False
        return await cl.report_outcome(outcome)

    def lost(self, uuid: str) -> bool:
        """The call's worker went away (its link closed) while the call was placed there."""
        cl = self.worker(uuid)
        return cl is not None and cl.lost(uuid)

    async def wait_ended(self, uuid: str, time_limit: float) -> c.Ended | None:
        """The call's worker's verdict, or None if it does not come in time."""
        cl = self.worker(uuid)
        return None if cl is None else await cl.wait_ended(uuid, time_limit)

    def forget(self, uuid: str) -> None:
        """The AGI side is done with the call (its outcome reported): nothing more about it
        goes to its worker, which no longer counts it."""
        cl = self._owner.pop(uuid.lower(), None)
        if cl is not None:
            cl.forget(uuid)
