"""``agi-voice dashboard``: the dashboard's own process (uvicorn serving :func:`.app.create_app`).

``serve`` runs it as a child process beside the planes (:mod:`fastagi_server.supervisor`):
it is restarted like a worker when it dies, and its failure never touches a call, since it
only reads the store and the workers' ``/calls``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import uvicorn

from media_sidecar.config.schema import Config

from .app import create_app
from .auth import Auth, DashboardError
from .live import LiveFeed, worker_sources

log = logging.getLogger("agi_voice.dashboard")


def recordings_dir(cfg: Config) -> Path:
    """``recordings.path``, else ``<data dir>/recordings`` (where the media plane writes)."""
    from media_sidecar.store.paths import data_dir

    path = str(getattr(getattr(cfg, "recordings", None), "path", "") or "")
    return Path(path) if path else data_dir() / "recordings"


def store_url(cfg: Config) -> str:
    return str(getattr(getattr(cfg, "store", None), "url", "") or "")


def build(cfg: Config, *, env: Mapping[str, str] | None = None, store: Any = None,
          host: str | None = None, port: int | None = None) -> tuple[Any, str, int]:
    """The app for ``cfg`` and the address to serve it on. Raises :class:`DashboardError`
    when it must not start (a non-loopback address without a password)."""
    listen = cfg.dashboard.listen
    host = listen.host if host is None else host
    port = listen.port if port is None else port
    auth = Auth.from_env(cfg.dashboard.user, host, port, env)
    if store is None:
        from media_sidecar.store import open_store

        store = open_store(store_url(cfg))
    app = create_app(store=store, auth=auth, feed=LiveFeed(worker_sources(cfg)),
                     recordings_dir=recordings_dir(cfg), title=cfg.dashboard.title)
    return app, host, port


async def serve(cfg: Config, *, env: Mapping[str, str] | None = None, store: Any = None,
                host: str | None = None, port: int | None = None,
                started: Callable[[int], object] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until signalled (uvicorn's SIGINT/SIGTERM handling, in the main thread) or until
    ``stop`` is set. ``started`` is called with the bound port once it listens."""
    app, host, port = build(cfg, env=env, store=store, host=host, port=port)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="on", proxy_headers=False, server_header=False,
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)

    async def watch() -> None:
        while not server.started:  # uvicorn has no started event to await
            if server.should_exit:
                return
            if _STOP.is_set():  # signalled before uvicorn took the signals over
                server.should_exit = True
                return
            await asyncio.sleep(0.02)
        if started is not None:
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
            started(bound)
        if stop is not None:
            await stop.wait()
            server.should_exit = True

    async with asyncio.TaskGroup() as tg:
        watcher = tg.create_task(watch())
        await server.serve()
        watcher.cancel()


_STOP = threading.Event()


def _stop_requested(signum: int, frame: object) -> None:
    """SIGTERM/SIGINT outside uvicorn's own handling: stop (or, after it, nothing more)."""
    _STOP.set()


def run(cfg: Config, status_fd: int | None = None) -> int:
    """The ``agi-voice dashboard`` command: 0 on a clean stop; 2 when it must not start (off,
    or a non-loopback address without a password), 1 when it cannot (the port, the store).
    Under ``serve`` it says ``ready`` or ``fatal <line>`` on the status pipe."""
    from media_sidecar.ops.status import StatusPipe, die_with_parent

    status = StatusPipe(status_fd)
    if status.supervised:
        die_with_parent()
    if not cfg.dashboard.enabled or cfg.dashboard.listen.port == 0:
        status.fatal("dashboard", "the dashboard is off (dashboard.enabled: false or port 0)")
        return 2

    def started(port: int) -> None:
        log.info("dashboard on http://%s:%d/", cfg.dashboard.listen.host, port)
        status.ready()

    # uvicorn handles SIGTERM/SIGINT while it serves, then raises the signal again once it
    # has shut down, so that the process would die of it (exit status -15, which serve counts
    # as an unclean stop). A handler of our own takes that second signal: a clean exit 0.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop_requested)
    try:
        asyncio.run(serve(cfg, started=started))
    except DashboardError as exc:
        status.fatal("dashboard", str(exc))
        return 2
    except SystemExit as exc:  # uvicorn exits 1 when it cannot bind (it logged why)
        status.fatal("dashboard", f"cannot listen on {cfg.dashboard.listen.host}:"
                                  f"{cfg.dashboard.listen.port}")
        return int(exc.code or 1) if isinstance(exc.code, int) else 1
    except Exception as exc:  # the store cannot be opened, ...
        status.fatal("dashboard", f"{type(exc).__name__}: {exc}")
        return 1
    return 0
