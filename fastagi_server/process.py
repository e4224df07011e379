"""The FastAGI control plane as a process: ``agi-voice fastagi``, and one of ``agi-voice
serve``'s two.

- Start-up: ready once FastAGI listens (a ``ready`` line on the status pipe under ``serve``).
  Calls are answered from then on; until the media plane is ready they get
  ``AI_STATUS=FAILED`` at once ("media plane not ready: starting"). A fatal start-up error
  (the FastAGI address in use, AMI credentials holding a line break) is one line, no
  traceback (``-v`` logs it), exit status 1.
- SIGTERM or SIGINT: drain (:meth:`~fastagi_server.server.FastAgiServer.drain`): new calls
  get ``AI_REASON=draining``; the process exits 0 once every AGI connection is done (at most
  ``drain.deadline_seconds`` + :data:`DRAIN_GRACE_SECONDS`). A second one stops at once.
- SIGHUP: reload the config file for new calls; an invalid one is refused with its error
  logged and the running one stays (``reloaded`` / ``reload-failed`` on the status pipe).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from media_sidecar.config.loader import ConfigError, load_config
from media_sidecar.config.schema import Config
from media_sidecar.ops.status import (
    StatusPipe,
    die_with_parent,
    find_startup_error,
    startup_failure_line,
)

from .server import FastAgiServer

log = logging.getLogger("agi_voice.fastagi")

DRAIN_GRACE_SECONDS = 10.0
"""After the drain deadline, how long this plane still waits for its AGI connections: the
sidecar's hand-offs and records (``media_sidecar.server.lifecycle.HANDOFF_GRACE_SECONDS``)
come first, and a call's outcome is sent from here."""


def main(cfg: Config, config_path: str | None, status_fd: int | None = None) -> int:
    """Run the FastAGI server until drained or stopped; the exit status."""
    status = StatusPipe(status_fd)
    if status.supervised:
        die_with_parent()
    server = FastAgiServer(cfg)
    try:
        asyncio.run(_serve(server, config_path, status))
    except Exception as exc:
        if find_startup_error(exc) is None and server.ready.is_set():
            raise  # a crash while serving: the traceback, and the supervisor restarts it
        log.debug("start-up failed", exc_info=exc)
        status.fatal("fastagi", startup_failure_line(exc))
        return 1
    return 0


async def _serve(server: FastAgiServer, config_path: str | None, status: StatusPipe) -> None:
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[int] = asyncio.Queue()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, signals.put_nowait, signum)
    try:
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(server.run())
            listener = tg.create_task(_on_signals(server, running, signals, config_path,
                                                  status, tg))
            ready = tg.create_task(server.ready.wait())
            await asyncio.wait([running, ready], return_when=asyncio.FIRST_COMPLETED)
            if ready.done():
                status.ready()
            # until drained, or cancelled by a second signal (a failure ends the group)
            await asyncio.wait([running])
            listener.cancel()
            ready.cancel()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)


async def _on_signals(server: FastAgiServer, running: asyncio.Task[None],
                      signals: asyncio.Queue[int], config_path: str | None,
                      status: StatusPipe, tg: asyncio.TaskGroup) -> None:
    """SIGTERM/SIGINT: drain (a second one: stop now); SIGHUP: reload. Runs until cancelled."""
    draining = False
    reloading = asyncio.Lock()
    while True:
        signum = await signals.get()
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            if not server.ready.is_set() or draining:
                log.info("SIGHUP ignored: %s", "draining" if draining else
                         "still starting (the config was read at start)")
                continue
            tg.create_task(_reload(server, config_path, status, reloading))
        elif not server.ready.is_set() or draining:
            if draining:
                log.warning("%s again: stopping now; calls in progress drop", name)
            running.cancel()
        else:
            draining = True
            limit = server.cfg.drain.deadline_seconds + DRAIN_GRACE_SECONDS
            tg.create_task(server.drain(limit))


async def _reload(server: FastAgiServer, config_path: str | None, status: StatusPipe,
                  lock: asyncio.Lock) -> None:
    """Load and validate the config file again and route new calls with it; an error is
    logged and reported on the status pipe, and the running config stays."""
    async with lock:
        try:
            new = await asyncio.to_thread(load_config, config_path)
        except ConfigError as exc:
            log.error("config reload refused: %s; the running config stays", exc)
            status.reloaded(False, str(exc))
            return
        restart_only = server.reload(new)
        if restart_only:
            log.warning("config reload: %s changed, which needs a restart; kept as it was",
                        ", ".join(restart_only))
        log.info("config reloaded from %s: new calls use it, live calls keep theirs",
                 new.source)
        status.reloaded(True)
