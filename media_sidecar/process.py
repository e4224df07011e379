"""The media sidecar as a process: ``agi-voice sidecar [--worker I]``, and each of the media
workers ``agi-voice serve`` runs.

- Worker ``I`` (default 0) listens on the configured AudioSocket, control and health ports +
  ``I * sidecar.worker_port_step`` (:mod:`media_sidecar.config.workers`), and refuses an offer
  that names another worker.

- Start-up: the engines load, then AudioSocket and the control link listen; then the process
  is ready (a ``ready`` line on the status pipe under ``serve``). A fatal start-up error (a
  listener that cannot bind, an assistant whose local models do not load) is one line, no
  traceback (``-v`` logs it), exit status 1.
- SIGTERM or SIGINT: drain (:class:`~media_sidecar.server.lifecycle.SidecarLifecycle`), then
  exit 0. A second one stops at once (live calls drop).
- SIGHUP: reload the config file for new calls; an invalid one is refused with its error
  logged and the running one stays (``reloaded`` / ``reload-failed`` on the status pipe).
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
from collections.abc import AsyncIterator

import trio

from .app import load_assets, run_sidecar
from .config.loader import ConfigError, load_config
from .config.schema import Config
from .config.workers import worker_config
from .ops import slowsteps
from .ops.heap import FULL_COLLECTION_SECONDS, full_collection
from .ops.status import StatusPipe, die_with_parent, find_startup_error, startup_failure_line
from .server.lifecycle import ReloadError, SidecarLifecycle

log = logging.getLogger("agi_voice.sidecar")


class _State:
    ready = False
    draining = False
    worker = 0


def main(cfg: Config, config_path: str | None, status_fd: int | None = None,
         worker: int = 0) -> int:
    """Run the sidecar (media worker ``worker``) until drained or stopped; the exit status."""
    status = StatusPipe(status_fd)
    if status.supervised:
        die_with_parent()
    state = _State()
    state.worker = worker
    try:
        trio.run(_serve, worker_config(cfg, worker), config_path, status, state,
                 instruments=slowsteps.from_env())
    except Exception as exc:
        if find_startup_error(exc) is None and state.ready:
            raise  # a crash while serving: the traceback, and the supervisor restarts it
        log.debug("start-up failed", exc_info=exc)
        status.fatal("sidecar", startup_failure_line(exc))
        return 1
    return 0


GC_THRESHOLDS = (20_000, 1 << 30, 1 << 30)
"""The cyclic collector's thresholds in a media process (CPython's: 700, 10, 10): young
collections only, never an automatic older one. Any collection holds the event loop, so the
frame clock, for as long as it walks its objects. Measured: with the defaults, at 100
speech-to-speech calls, full collections of 50-65 ms every ~1.4 s; with (20000, 20, 20), at
500 echo calls, one generation-1 collection of 75 ms (0 objects collected) while the calls
were being set up: a late frame for all 500. A generation-0 collection walks at most 20,000
objects (a few ms). Reference counting frees nearly everything a call allocates (a finished
call breaks its own cycles: :meth:`MediaSession.release`), so the only older collection is
:func:`collect_periodically`'s full one every :data:`FULL_COLLECTION_SECONDS`: without it the
soak (bench/soak.py) saw 200 concurrent calls grow a worker from 70 to 316 MiB before calls
broke their cycles."""


async def collect_periodically(every: float = FULL_COLLECTION_SECONDS) -> None:
    """A full collection every ``every`` seconds, until cancelled (:mod:`.ops.heap`)."""
    while True:
        await trio.sleep(every)
        full_collection(log)


def settle_heap() -> None:
    """Once started: collect, move everything loaded so far (modules, config, models' Python
    side, rendered prompts) to the permanent generation that no collection walks again
    (``gc.freeze``), and run the collector less often (:data:`GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _serve(cfg: Config, config_path: str | None, status: StatusPipe,
                 state: _State) -> None:
    lifecycle = SidecarLifecycle(load_assets)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, signals, lifecycle, config_path, status, state,
                               nursery)
            await nursery.start(functools.partial(run_sidecar, cfg, lifecycle=lifecycle,
                                                  strict=True, worker=str(state.worker)))
            state.ready = True
            settle_heap()
            nursery.start_soon(collect_periodically)
            status.ready()


async def _on_signals(signals: AsyncIterator[int], lifecycle: SidecarLifecycle,
                      config_path: str | None, status: StatusPipe, state: _State,
                      nursery: trio.Nursery) -> None:
    """SIGTERM/SIGINT: drain, then end the process (a second one: end it now); SIGHUP:
    reload. Runs until the nursery is cancelled."""
    reloading = trio.Lock()
    async for signum in signals:
        if signum == signal.SIGHUP:
            if not state.ready or state.draining:
                log.info("SIGHUP ignored: %s", "still starting (the config was read at start)"
                         if not state.ready else "draining")
                continue
            nursery.start_soon(_reload, lifecycle, config_path, status, reloading,
                               state.worker)
        elif not state.ready:
            log.info("%s while starting: stopping", signal.Signals(signum).name)
            nursery.cancel_scope.cancel()
        elif state.draining:
            log.warning("%s again: stopping now; calls in progress drop",
                        signal.Signals(signum).name)
            nursery.cancel_scope.cancel()
        else:
            state.draining = True
            nursery.start_soon(_drain_then_stop, lifecycle, nursery)


async def _drain_then_stop(lifecycle: SidecarLifecycle, nursery: trio.Nursery) -> None:
    await lifecycle.drain()
    nursery.cancel_scope.cancel()


async def _reload(lifecycle: SidecarLifecycle, config_path: str | None, status: StatusPipe,
                  lock: trio.Lock, worker: int = 0) -> None:
    """Load and validate the config file again and switch new calls to it; an error is logged
    and reported on the status pipe, and the running config stays."""
    async with lock:
        try:
            new = await trio.to_thread.run_sync(load_config, config_path)
            restart_only = await lifecycle.reload(worker_config(new, worker))
        except (ConfigError, ReloadError) as exc:
            log.error("config reload refused: %s; the running config stays", exc)
            status.reloaded(False, str(exc))
            return
        if restart_only:
            log.warning("config reload: %s changed, which needs a restart; kept as it was",
                        ", ".join(restart_only))
        log.info("config reloaded from %s: new calls use it, live calls keep theirs",
                 new.source)
        status.reloaded(True)
