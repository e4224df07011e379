"""Drain and reload of a running media sidecar (what SIGTERM and SIGHUP ask for).

The process shell (:mod:`media_sidecar.process`) maps SIGTERM/SIGINT to :meth:`drain` and
SIGHUP to :meth:`reload`; tests call them directly on a sidecar from
:func:`media_sidecar.app.run_sidecar`, which hands this object what they act on once it serves.

The drain: new offers are refused at once (reason ``draining``: the FastAGI side sets
``AI_STATUS=FAILED``, ``AI_REASON=draining`` and the dialplan falls back; counted in
``agi_voice_offers_refused{reason="draining"}``) and ``/ready`` answers 503. Live calls get
``drain.deadline_seconds`` to finish. At the deadline each call still live hears the
announcement and goes to its assistant's fallback destination through the ordinary transfer
path (or is handed back with ``FAILED``, reason ``draining``). The drain returns once every
call's record is written; each record waits for the control plane's ``outcome`` as always,
which is why the FastAGI process must outlive this one (the supervisor stops it last).

The reload: the new config is validated by the caller; here its engines and prompts are
prepared in a worker thread (models are cached per process, so an unchanged config costs only
the prompts), then swapped in at once. Calls that start afterwards use it; a live call keeps
the ``AssistantConfig`` it started with. If the new config's engines cannot load, the reload
is refused and the running config stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from ..config.reload import for_reload
from ..config.schema import Config
from ..protocol.control import DRAINING
from ..session.call import CallServices
from .audiosocket_server import AudioSocketServer
from .health import SidecarHealth
from .registry import CallRegistry

log = logging.getLogger("agi_voice.lifecycle")

HANDOFF_GRACE_SECONDS = 8.0
"""After the deadline: the announcements, the transfers (at most
``session.base.TRANSFER_ANSWER_TIMEOUT`` each) and the records, which wait for the control
plane's outcome (``protocol.control.OUTCOME_WAIT_SECONDS``). A call not done by then is left
to the process exit. The supervisor's own margin (:mod:`fastagi_server.supervisor`) is above
this."""


class ReloadError(Exception):
    """The new config cannot be used (its engines do not load); the running one stays."""


@dataclass
class Assets:
    """What a config needs loaded before calls can use it."""

    services: CallServices | None
    unavailable: dict[str, str]
    prompts: dict[str, bytes]
    announcements: dict[str, bytes]


AssetLoader = Callable[[Config, CallServices | None], Assets]
"""Blocking (run in a worker thread): the assets of a config, given the running services."""


class SidecarLifecycle:
    def __init__(self, load_assets: AssetLoader | None = None) -> None:
        self.load_assets = load_assets
        """For a reload; None: the services stay and only the prompts are rendered again."""
        self.cfg: Config | None = None
        self.registry: CallRegistry | None = None
        self.server: AudioSocketServer | None = None
        self.health: SidecarHealth | None = None
        self.draining = False
        self.handed_off = 0
        """Calls handed to their fallback at the drain deadline."""
        self.serving = trio.Event()

    def attach(self, cfg: Config, registry: CallRegistry, server: AudioSocketServer,
               health: SidecarHealth) -> None:
        """Called by ``run_sidecar`` once it serves."""
        self.cfg, self.registry, self.server, self.health = cfg, registry, server, health
        self.serving.set()

    def _parts(self) -> tuple[Config, CallRegistry, AudioSocketServer, SidecarHealth]:
        if self.cfg is None or self.registry is None or self.server is None \
                or self.health is None:
            raise RuntimeError("the sidecar is not serving yet")
        return self.cfg, self.registry, self.server, self.health

    def idle(self) -> bool:
        """No call in progress (records written) and no offer waiting for its AudioSocket."""
        _, registry, server, _ = self._parts()
        return server.active == 0 and registry.pending_offers == 0

    async def _wait_idle(self) -> None:
        _, registry, _, _ = self._parts()
        while not self.idle():
            await registry.wait_changed()

    async def drain(self, deadline: float | None = None) -> int:
        """Drain (see the module docstring); ``deadline`` defaults to
        ``drain.deadline_seconds``. Returns the number of calls handed off at the deadline.
        Cancellation stops waiting (the calls are then left to the process exit)."""
        cfg, registry, server, health = self._parts()
        limit = cfg.drain.deadline_seconds if deadline is None else deadline
        self.draining = True
        registry.draining = True
        health.set_draining()
        log.info("draining: new calls are refused; %d call(s) in progress get up to %g s",
                 server.active + registry.pending_offers, limit)
        with trio.move_on_after(limit):
            await self._wait_idle()
        if not self.idle():
            withdrawn = registry.withdraw_all()
            for _uuid, call in registry.live():
                announcement = server.announcements.get(call.assistant.name, b"")
                if call.hand_off(announcement, DRAINING):
                    self.handed_off += 1
            log.warning("drain deadline (%g s): %d call(s) handed to their fallback%s", limit,
                        self.handed_off,
                        f", {withdrawn} call(s) not yet connected dropped" if withdrawn else "")
            with trio.move_on_after(HANDOFF_GRACE_SECONDS):
                await self._wait_idle()
            if not self.idle():
                log.warning("drain: %d call(s) still not done %g s after the deadline",
                            server.active, HANDOFF_GRACE_SECONDS)
        log.info("drained: every call's record is written")
        return self.handed_off

    async def reload(self, new: Config) -> list[str]:
        """Use ``new`` (validated) for calls that start from now on. Returns the key paths
        that differ but need a restart (kept as they were). Raises :class:`ReloadError` when
        the new config's engines cannot load; nothing changes then."""
        cfg, registry, server, _ = self._parts()
        effective, restart_only = for_reload(cfg, new)
        if self.load_assets is not None:
            assets = await trio.to_thread.run_sync(self.load_assets, effective, server.services)
        else:
            from ..app import load_announcements, load_prompts

            prompts = await trio.to_thread.run_sync(load_prompts, effective, server.services)
            announcements = await trio.to_thread.run_sync(load_announcements, effective,
                                                          server.services)
            assets = Assets(server.services, dict(registry.unavailable), prompts,
                            announcements)
        if assets.unavailable:
            name, why = next(iter(assets.unavailable.items()))
            raise ReloadError(f"assistant {name} cannot take calls: {why}")
        # One step, no await: an offer sees the old config or the new one, never a mix.
        registry.cfg = server.cfg = self.cfg = effective
        registry.unavailable = dict(assets.unavailable)
        server.services = assets.services
        server.prompts = dict(assets.prompts)
        server.announcements = dict(assets.announcements)
        return restart_only
