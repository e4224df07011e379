"""The dashboard under test: the whole product on loopback, a real store, a real dashboard.

- the stack of tests/e2e/stack.py (sidecar in a trio loop, FastAGI in its thread, fake AMI),
  here in a thread of its own running ``trio.run``, with the sidecar's health listener on a
  free port (the dashboard polls its ``/calls``) and its call store at a temp SQLite file;
- the dashboard (uvicorn, :func:`fastagi_server.dashboard.server.serve`) in another thread on a
  free loopback port, reading that store;
- calls started from the test's thread run in the stack's loop (:meth:`Running.start_call`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from fastagi_server.dashboard import server as dash_server
from media_sidecar.app import SidecarPorts, run_sidecar
from media_sidecar.config.schema import Config, Listen
from tests.e2e.stack import (
    FastAgiThread,
    SidecarRunner,
    _config,
    close_loop,
    fake_services,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]


def with_store(cfg: Config, store_url: str, recordings: Path | None = None) -> Config:
    """``cfg`` writing its call store at ``store_url`` (and recordings under ``recordings``
    when the config has that section)."""
    if hasattr(cfg, "store"):
        cfg = dataclasses.replace(cfg, store=dataclasses.replace(cfg.store, url=store_url))
    if recordings is not None and hasattr(cfg, "recordings"):
        cfg = dataclasses.replace(cfg, recordings=dataclasses.replace(
            cfg.recordings, path=str(recordings)))
    return cfg


class HealthSidecar(SidecarRunner):
    """The stack's sidecar with its health listener on a free loopback port."""

    async def _run(self, task_status: trio.TaskStatus[SidecarPorts] = trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as scope:
            self.scope = scope
            await run_sidecar(self.cfg, self.services, {}, records=self.records,
                              health_listen=Listen("127.0.0.1", 0), task_status=task_status)


@dataclass
class Running:
    cfg: Config
    """The stack's config (its sidecar's)."""
    agi_port: int
    health_port: int
    token: trio.lowlevel.TrioToken
    nursery: trio.Nursery
    records: Any

    def start_call(self, script: Any, seconds: float = 30.0,
                   **spec: Any) -> concurrent.futures.Future[Any]:
        """Start a call from the emulator in the stack's loop; the future gets its result."""
        from fastagi_server.emulator.call import run_call
        from fastagi_server.emulator.channel import ChannelSpec

        spec.setdefault("script", "agent")
        spec.setdefault("dnid", "7000")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        async def go() -> None:
            try:
                with trio.fail_after(seconds):
                    fut.set_result(await run_call("127.0.0.1", self.agi_port,
                                                  ChannelSpec(**spec), script))
            except BaseException as exc:  # handed to the test's thread
                fut.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise

        trio.from_thread.run_sync(self.nursery.start_soon, go, trio_token=self.token)
        return fut

    def wait_records(self, n: int, within: float = 10.0) -> None:
        assert self.records.wait(n, within), f"{self.records.written} records, not {n}"


@contextmanager
def running_stack(base: Config, tmp: Path) -> Iterator[Running]:
    """The product on loopback in a thread (module doc); stopped on exit."""
    ready: concurrent.futures.Future[Running] = concurrent.futures.Future()
    stop = threading.Event()
    done: concurrent.futures.Future[None] = concurrent.futures.Future()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            runner = HealthSidecar(nursery, _config(base, None, None, str(tmp / "calls.jsonl")),
                                   fake_services())
            ports = await runner.start()
            cfg = _config(base, ports, None, str(tmp / "calls.jsonl"))
            fastagi = FastAgiThread(cfg)
            agi_port = await fastagi.start()
            ok = await trio.to_thread.run_sync(
                fastagi.call, fastagi.server.control.wait_connected(10))
            assert ok
            ready.set_result(Running(runner.cfg, agi_port, ports.health,
                                     trio.lowlevel.current_trio_token(), nursery,
                                     runner.records))
            await trio.to_thread.run_sync(stop.wait)
            await fastagi.stop()
            nursery.cancel_scope.cancel()

    def thread() -> None:
        try:
            trio.run(main)
            done.set_result(None)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            done.set_exception(exc)

    t = threading.Thread(target=thread, name="stack", daemon=True)
    t.start()
    try:
        yield ready.result(30)
    finally:
        stop.set()
        t.join(15)
        done.result(0)


@contextmanager
def running_dashboard(cfg: Config, *, store: Any = None, env: dict[str, str] | None = None,
                      host: str = "127.0.0.1") -> Iterator[str]:
    """The dashboard for ``cfg`` on a free port of ``host`` in a thread; yields its base
    URL."""
    started: concurrent.futures.Future[int] = concurrent.futures.Future()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def thread() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(dash_server.serve(
                cfg, env=env or {}, store=store, host=host, port=0,
                started=started.set_result, stop=stop))
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
        finally:
            close_loop(loop)

    t = threading.Thread(target=thread, name="dashboard", daemon=True)
    t.start()
    try:
        port = started.result(15)
        yield f"http://{host}:{port}"
    finally:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        t.join(10)


def wait_for(check: Callable[[], Any], within: float, what: str) -> Any:
    """Poll ``check`` until it returns something true (another process's thread writes the
    store: there is no event to wait on from here)."""
    deadline = time.monotonic() + within
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.05)
