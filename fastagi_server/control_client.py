"""The FastAGI server's end of the control link to one media worker (asyncio ``websockets``).

Keeps one connection to the worker, reconnecting with exponential backoff when it drops or the
worker restarts (a restart loses only the calls that were on that worker). While the link is
down, :meth:`offer` fails at once, so the call is placed on another worker, or, when none takes
it, the AGI call sets ``AI_STATUS=FAILED`` and the dialplan falls through to its fallback
without making the caller wait. :class:`~fastagi_server.placement.MediaPool` holds one client per
worker and places each call.

Load: right after ``hello`` the client sends ``watch_load``; the worker's ``load`` reports
(calls running + offers waiting for their AudioSocket) are what :attr:`ControlClient.load`
starts from, plus the offers this client has in flight and the ones accepted since the last
report (the worker sends a report right after each accept, which then replaces that count). A
worker that sends no reports (an older release) gets the calls this client placed there and
has not forgotten yet.

Shared secret (:mod:`media_sidecar.protocol.control_auth`): a worker with a secret answers
``hello`` with a challenge; the client answers it with ``secret`` and checks the worker's proof
in turn. A worker whose URL is not loopback must authenticate: a link to one that does not ask
is refused (anyone could listen there). Each such refusal is a WARNING (once per reason while
it repeats), never a silent retry.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from media_sidecar.config.addresses import is_loopback_host
from media_sidecar.protocol import control as c
from media_sidecar.protocol import control_auth as auth

log = logging.getLogger("agi_voice.control_client")

TransferHandler = Callable[[c.TransferRequest], Awaitable[c.TransferResult]]

STILL_DOWN_WARNING_SECONDS = 10.0
"""A link that is not up yet is logged at DEBUG (at start-up the sidecar is still loading its
models: that race is normal); one WARNING once it has been down this long."""


STARTUP_RETRY_MAX = 0.5
"""Longest wait between tries before the link was ever up."""


class ControlUnavailable(Exception):
    """The sidecar cannot be reached (link down, or it closed while we waited)."""


class ControlAuthError(Exception):
    """The control link's shared-secret handshake failed (module doc)."""


NOT_READY_STARTING = "media plane not ready: starting (the media sidecar is not connected yet)"
NOT_READY_DOWN = "media plane not ready: the media sidecar is not connected"


class ControlClient:
    def __init__(self, url: str, on_transfer: TransferHandler, *, backoff_min: float = 0.2,
                 backoff_max: float = 5.0, name: str = "", audiosocket_address: str = "",
                 local: bool = True, secret: str = "",
                 secret_env: str = "AGI_VOICE_CONTROL_SECRET") -> None:
        self.url = url
        self.secret = secret
        """The control link's shared secret ("" none)."""
        self.secret_env = secret_env
        """Where the secret comes from, for log lines (never the value)."""
        self.require_auth = not is_loopback_host(urlsplit(url).hostname or "")
        """The worker is not on loopback: it must prove it holds the secret."""
        self._auth_warned = ""
        self.name = name
        """The worker's name (a local worker's index) for logs and ``offer.worker``."""
        self.audiosocket_address = audiosocket_address
        """Where Asterisk connects AudioSocket for the calls placed on this worker."""
        self.local = local
        """One of ``serve``'s own workers (its offers name it), not a ``fastagi.media`` one."""
        self.reported: c.Load | None = None
        """The worker's latest ``load`` report on the current link (None: none yet)."""
        self._since_report = 0
        self._in_flight = 0
        self._placed: set[str] = set()
        self._lost: set[str] = set()
        """Placed calls whose link closed before the AGI side was done with them."""
        self.on_transfer = on_transfer
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self._ws: ClientConnection | None = None
        self._offers: dict[str, asyncio.Future[c.Accept | c.Refuse]] = {}
        self._ended: dict[str, _Verdict] = {}
        self._up = asyncio.Event()
        self.ever_up = False
        """The link has been up once: a link down now is an outage, not the start-up."""
        self.reconnects = 0
        self.unanswered: collections.Counter[str] = collections.Counter()
        """Offers that got no answer, by reason (``sidecar_unreachable``, ``sidecar_timeout``):
        reported to the sidecar's metrics as refused offers."""

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def load(self) -> int:
        """Calls and pending offers on the worker as this side knows them now (module doc)."""
        if self.reported is not None:
            base = self.reported.calls + self.reported.offers + self._since_report
        else:
            base = len(self._placed)
        return base + self._in_flight

    @property
    def knows_worker(self) -> bool:
        """The worker reports load, so it knows ``offer.worker`` (protocol.control)."""
        return self.reported is not None

    async def wait_connected(self, time_limit: float) -> bool:
        try:
            await asyncio.wait_for(self._up.wait(), time_limit)
            return True
        except TimeoutError:
            return False

    async def run(self) -> None:
        """Keep the link up until cancelled. Transfer requests are served in a TaskGroup."""
        delay = self.backoff_min
        loop = asyncio.get_running_loop()
        down_since: float | None = loop.time()
        while True:
            try:
                async with connect(self.url, open_timeout=2, ping_interval=5, ping_timeout=5,
                                   max_size=c.MAX_MESSAGE_BYTES) as ws:
                    await ws.send(c.encode(c.Hello(role="fastagi")))
                    hello = c.decode(await self._handshake(ws))
                    if not isinstance(hello, c.Hello):
                        raise c.ControlError("sidecar did not answer hello")
                    await ws.send(c.encode(c.WatchLoad()))
                    self._ws = ws
                    self._up.set()
                    self.ever_up = True
                    delay = self.backoff_min
                    down_since = None
                    self._auth_warned = ""
                    log.info("control link up: %s", self.url)
                    async with asyncio.TaskGroup() as tg:
                        try:
                            async for text in ws:
                                self._dispatch(text, tg)
                        except ConnectionClosed as exc:  # inside the group: not an ExceptionGroup
                            log.warning("control link to %s closed: %s", self.url, exc)
            except ControlAuthError as exc:
                if str(exc) != self._auth_warned:
                    log.warning("control link to %s refused: %s", self.url, exc)
                    self._auth_warned = str(exc)
                else:
                    log.debug("control link to %s refused: %s", self.url, exc)
            except (OSError, ConnectionClosed, InvalidHandshake, InvalidURI, TimeoutError,
                    c.ControlError) as exc:
                why = exc or type(exc).__name__
                if self._ws is not None:
                    log.warning("control link to %s down: %s", self.url, why)
                elif down_since is not None and loop.time() - down_since >= \
                        STILL_DOWN_WARNING_SECONDS:
                    log.warning("control link to %s still down after %.0f s: %s (retrying)",
                                self.url, loop.time() - down_since, why)
                    down_since = None  # once per outage
                else:
                    log.debug("control link to %s not up: %s", self.url, why)
            finally:
                if self._ws is not None:
                    down_since = loop.time()
                self._link_lost()
            self.reconnects += 1
            await asyncio.sleep(delay)
            # Until the first link, the sidecar is loading its models: retry often (a refused
            # loopback connection costs nothing) so calls are served as soon as it is ready.
            delay = min(delay * 2, self.backoff_max if self.ever_up else STARTUP_RETRY_MAX)

    async def _handshake(self, ws: ClientConnection) -> str | bytes:
        """After our ``hello``: answer the worker's challenge if it sends one (module doc);
        returns the worker's ``hello`` text. Raises ControlAuthError, TimeoutError,
        ConnectionClosed."""
        first = await asyncio.wait_for(ws.recv(), 2)
        if not auth.is_auth_message(first):
            if self.require_auth:
                raise ControlAuthError("the media worker is not on loopback and did not ask for "
                                       "the control link secret: not an authenticated worker")
            return first
        if not self.secret:
            raise ControlAuthError(f"the media worker requires the control link secret and "
                                   f"{self.secret_env} is not set here")
        try:
            challenge = auth.decode(first)
            if not isinstance(challenge, auth.Challenge):
                raise auth.AuthError("expected a challenge")
            response = auth.answer(self.secret, challenge)
            await ws.send(auth.encode(response))
            try:
                proof = auth.decode(await asyncio.wait_for(ws.recv(), 2))
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == 1008:
                    raise ControlAuthError(f"the media worker rejected the control link "
                                           f"secret ({self.secret_env} differs)") from None
                raise
            if not isinstance(proof, auth.Proof) or not auth.verify(
                    auth.server_mac(self.secret, challenge.nonce, response.nonce), proof.mac):
                raise ControlAuthError("the media worker did not prove it holds the control "
                                       "link secret")
        except auth.AuthError as exc:
            raise ControlAuthError(f"bad handshake from the media worker: {exc}") from None
        return await asyncio.wait_for(ws.recv(), 2)

    def _link_lost(self) -> None:
        self._ws = None
        self._up.clear()
        self.reported, self._since_report = None, 0  # the next link may reach another release
        self._lost |= self._placed
        for fut in self._offers.values():
            if not fut.done():
                fut.set_exception(ControlUnavailable("control link lost"))
        self._offers.clear()
        for verdict in self._ended.values():
            verdict.event.set()  # no verdict will come over this link

    def _dispatch(self, text: str | bytes, tg: asyncio.TaskGroup) -> None:
        try:
            msg = c.decode(text)
        except c.ControlError as exc:
            log.warning("bad control message ignored: %s", exc)
            return
        if isinstance(msg, (c.Accept, c.Refuse)):
            fut = self._offers.pop(msg.uuid.lower(), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
                if isinstance(msg, c.Accept):  # counted before the load report behind it
                    self._placed.add(msg.uuid.lower())
                    if self.reported is not None:
                        self._since_report += 1
        elif isinstance(msg, c.Ended):
            # the slot exists from the offer until the AGI side forgets the call; a verdict
            # after that (the AGI session ended first: a caller hang-up) has no one to wait for
            # it, and making a slot for it kept ~1 KiB per such call for the life of the
            # process (the soak's FastAGI growth)
            verdict = self._ended.get(msg.uuid.lower())
            if verdict is None:
                log.debug("verdict for %s after its AGI session ended: dropped", msg.uuid)
                return
            verdict.value = msg
            verdict.event.set()
        elif isinstance(msg, c.TransferRequest):
            tg.create_task(self._serve_transfer(msg))
        elif isinstance(msg, c.Load):
            numbers = (msg.calls, msg.offers, msg.max_calls)
            if all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
                self.reported, self._since_report = msg, 0
            else:
                log.warning("load report with bad numbers ignored: %s", msg)
        else:
            log.warning("unexpected control message %s ignored", msg.TYPE)

    async def _serve_transfer(self, req: c.TransferRequest) -> None:
        try:
            result = await self.on_transfer(req)
        except Exception as exc:
            log.exception("transfer for %s failed", req.uuid)
            result = c.TransferResult(uuid=req.uuid, ok=False, method="dialplan", detail=str(exc))
        await self.send(result)

    async def send(self, msg: c.ControlMessage) -> bool:
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(c.encode(msg))
            return True
        except ConnectionClosed:
            return False

    async def report_outcome(self, outcome: c.Outcome) -> bool:
        """Tell the sidecar the AI_* values finally set on a call's channel (for its call
        record), on whatever link is up now, a reconnected one too. With no link it is dropped
        with a log line (the sidecar then writes the record with its own verdict)."""
        if await self.send(outcome):
            return True
        log.warning("control link down: outcome of %s (%s) not reported to the sidecar",
                    outcome.uuid, outcome.status)
        return False

    async def offer(self, offer: c.Offer, time_limit: float) -> c.Accept | c.Refuse:
        """Offer a call; raises ControlUnavailable at once if the link is down (the media plane
        is starting, or down), or on timeout. The sidecar accepts the link only once its
        models are loaded, so a link up means a media plane ready for calls."""
        if self._ws is None:
            self.unanswered["sidecar_unreachable"] += 1
            raise ControlUnavailable(NOT_READY_DOWN if self.ever_up else NOT_READY_STARTING)
        fut: asyncio.Future[c.Accept | c.Refuse] = asyncio.get_running_loop().create_future()
        self._offers[offer.uuid.lower()] = fut
        self._verdict(offer.uuid)
        self._in_flight += 1
        try:
            if not await self.send(offer):
                self.unanswered["sidecar_unreachable"] += 1
                raise ControlUnavailable(NOT_READY_DOWN)
            reply = await asyncio.wait_for(fut, time_limit)
        except TimeoutError:
            self.unanswered["sidecar_timeout"] += 1
            # it may still take the offer: withdraw it, so it does not count as load there
            await self.send(c.Hangup(uuid=offer.uuid, cause="offer timed out"))
            raise ControlUnavailable(f"media sidecar did not answer within {time_limit:.1f} s") from None
        finally:
            self._in_flight -= 1
            self._offers.pop(offer.uuid.lower(), None)
        if not isinstance(reply, c.Accept):
            self.forget(offer.uuid)
        return reply

    def _verdict(self, uuid: str) -> _Verdict:
        key = uuid.lower()
        verdict = self._ended.get(key)
        if verdict is None:
            verdict = self._ended[key] = _Verdict()
        return verdict

    async def wait_ended(self, uuid: str, time_limit: float) -> c.Ended | None:
        """The sidecar's verdict for a call, or None if it does not come in time."""
        verdict = self._verdict(uuid)
        try:
            await asyncio.wait_for(verdict.event.wait(), time_limit)
        except TimeoutError:
            return None
        return verdict.value

    def forget(self, uuid: str) -> None:
        """The AGI side is done with the call: drop its verdict slot and its placement."""
        self._ended.pop(uuid.lower(), None)
        self._placed.discard(uuid.lower())
        self._lost.discard(uuid.lower())

    def lost(self, uuid: str) -> bool:
        """The link closed while the call was placed here (the worker died or restarted)."""
        return uuid.lower() in self._lost


class _Verdict:
    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.value: c.Ended | None = None
