"""The whole product on loopback for end-to-end tests.

- the media sidecar (``media_sidecar.app.run_sidecar``) in the test's trio loop, port 0;
- the FastAGI server (``fastagi_server.server.FastAgiServer``) in its own thread with its own
  asyncio loop, exactly as in production, port 0;
- the fake AMI server (trio), which the FastAGI server logs into over TCP;
- calls come from the Asterisk emulator (FastAGI env block and replies, AudioSocket frames at
  20 ms, AMI events) over real sockets, in real time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from fastagi_server.emulator.ami_server import FakeAmiServer
from fastagi_server.emulator.call import CallResult, run_call
from fastagi_server.emulator.caller import CallerScript
from fastagi_server.emulator.channel import ChannelSpec
from fastagi_server.server import FastAgiServer
from media_sidecar.app import SidecarPorts, rules_brain, run_sidecar
from media_sidecar.config.schema import AmiConfig, Config, FastAgiConfig, Listen
from media_sidecar.session.call import CallServices
from media_sidecar.session.records import RecordWriter
from media_sidecar.session.speaker import Speaker
from tests.fakes import EnergyVad, FakeStt, FakeTts

AMI_USER, AMI_SECRET = "agi-voice", "test-only-secret"


def fake_services() -> CallServices:
    tts = FakeTts()
    return CallServices(speaker_factory=lambda a: Speaker(tts), brain_factory=rules_brain,
                        stt=FakeStt(), vad_factory=EnergyVad)


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close ``loop`` the way ``asyncio.run`` does: cancel the tasks still pending (a
    connection's handler the server did not wait for) and let them finish, so their transports
    close their sockets, then shut down async generators and the default executor. A bare
    ``loop.close()`` leaves those sockets to the garbage collector, in CLOSE-WAIT until then."""
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


class FastAgiThread:
    """Runs FastAgiServer.run() on an asyncio loop in a thread; stop() cancels it."""

    def __init__(self, cfg: Config) -> None:
        self.server = FastAgiServer(cfg)
        self.loop = asyncio.new_event_loop()
        self._task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name="fastagi", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._task = self.loop.create_task(self.server.run())
        try:
            self.loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # surfaced by stop() so a crash fails the test
            self.error = exc
        finally:
            close_loop(self.loop)

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the server's loop from another thread and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def start(self) -> int:
        self._thread.start()
        await trio.to_thread.run_sync(self.call, asyncio.wait_for(self.server.ready.wait(), 10))
        assert self.server.port is not None
        return self.server.port

    async def stop(self) -> None:
        if self._task is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._task.cancel)
        await trio.to_thread.run_sync(self._thread.join, 10)
        if self.error is not None:
            raise self.error


class CountingRecords(RecordWriter):
    """The production record writer (JSON lines in the file) that also lets a test wait, in a
    worker thread, until the sidecar has written a number of records."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.written = 0
        self._cond = threading.Condition()

    def write(self, record) -> None:
        super().write(record)
        with self._cond:
            self.written += 1
            self._cond.notify_all()

    def wait(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.written >= n, timeout)


class SidecarRunner:
    """The sidecar in its own cancel scope, so a test can stop and restart it on its ports."""

    def __init__(self, nursery: trio.Nursery, cfg: Config, services: CallServices) -> None:
        self.nursery = nursery
        self.cfg = cfg
        self.services = services
        self.scope: trio.CancelScope | None = None
        self.ports: SidecarPorts | None = None
        self.records = CountingRecords(cfg.sidecar.records_path)

    async def start(self) -> SidecarPorts:
        self.ports = await self.nursery.start(self._run)
        return self.ports

    async def _run(self, task_status: trio.TaskStatus[SidecarPorts] = trio.TASK_STATUS_IGNORED):
        with trio.CancelScope() as scope:
            self.scope = scope
            await run_sidecar(self.cfg, self.services, {}, records=self.records,
                              task_status=task_status)

    async def stop(self) -> None:
        assert self.scope is not None and self.ports is not None
        self.scope.cancel()
        # the next start binds the same ports (a restart, as the supervisor would do it)
        self.cfg = dataclasses.replace(self.cfg, sidecar=dataclasses.replace(
            self.cfg.sidecar, audiosocket=Listen("127.0.0.1", self.ports.audiosocket),
            control=Listen("127.0.0.1", self.ports.control)))
        await trio.lowlevel.checkpoint()


@dataclass
class Stack:
    cfg: Config
    agi_port: int
    sidecar: SidecarPorts | None
    ami: FakeAmiServer | None
    fastagi: FastAgiThread
    sidecar_runner: SidecarRunner | None = None

    async def control_link_up(self) -> bool:
        server = self.fastagi.server
        return await trio.to_thread.run_sync(self.fastagi.call, server.control.wait_connected(10))

    async def call(self, script: CallerScript | None = None, *, seconds: float = 60.0,
                   **spec: Any) -> CallResult:
        spec.setdefault("script", "agent")
        spec.setdefault("dnid", "7000")
        with trio.fail_after(seconds):
            return await run_call("127.0.0.1", self.agi_port, ChannelSpec(**spec), script,
                                  ami=self.ami)

    async def settle(self) -> None:
        """Wait until the FastAGI server has finished with every AGI connection."""
        await trio.to_thread.run_sync(self.fastagi.call, self.fastagi.server.wait_idle())

    async def wait_records(self, n: int, within: float = 10.0) -> None:
        """Wait until the sidecar has written ``n`` call records (it writes each one after
        the call's AudioSocket closed, which can be after the AGI side is done)."""
        assert self.sidecar_runner is not None
        ok = await trio.to_thread.run_sync(self.sidecar_runner.records.wait, n, within)
        assert ok, f"the sidecar wrote {self.sidecar_runner.records.written} records, not {n}"

    def ami_actions(self, name: str) -> list[dict[str, Any]]:
        assert self.ami is not None
        return [a for a in self.ami.actions if a.get("Action") == name]


def _config(base: Config, sidecar: SidecarPorts | None, ami_port: int | None,
            records: str, transfer: str = "redirect") -> Config:
    cfg = dataclasses.replace(
        base,
        # no health listener: a fixed port would be shared by every stack and test run
        health=dataclasses.replace(base.health, enabled=False),
        sidecar=dataclasses.replace(base.sidecar, records_path=records,
                                    audiosocket=Listen("127.0.0.1", 0),
                                    control=Listen("127.0.0.1", 0),
                                    workers=1),  # one sidecar (tests/e2e/test_workers_*: more)
    )
    if sidecar is not None:
        cfg = dataclasses.replace(cfg, fastagi=dataclasses.replace(
            cfg.fastagi, listen=Listen("127.0.0.1", 0), transfer=transfer,
            audiosocket_address=f"127.0.0.1:{sidecar.audiosocket}",
            control_url=f"ws://127.0.0.1:{sidecar.control}/control"))
    else:  # nothing listens there: the sidecar is down
        cfg = dataclasses.replace(cfg, fastagi=FastAgiConfig(
            listen=Listen("127.0.0.1", 0), audiosocket_address="127.0.0.1:9",
            control_url="ws://127.0.0.1:9/control"))
    ami = AmiConfig()
    if ami_port is not None:
        ami = AmiConfig(host="127.0.0.1", port=ami_port, username=AMI_USER, secret=AMI_SECRET,
                        ping_interval=2.0, pong_timeout=2.0)
    return dataclasses.replace(cfg, ami=ami)


@asynccontextmanager
async def open_stack(base: Config, records: str, *, services: CallServices | None = None,
                     sidecar: bool = True, ami: bool = True,
                     transfer: str = "redirect") -> AsyncIterator[Stack]:
    """The whole product on loopback. ``transfer`` is ``fastagi.transfer``: these tests default
    to ``redirect`` (AMI Redirect, which they assert on the fake AMI); the product's default,
    ``auto`` (a dialplan Goto after the hand-back on Asterisk 22.10.1), has its own tests here
    and runs throughout the real-Asterisk tier."""
    async with trio.open_nursery() as nursery:
        fake_ami = None
        ami_port = None
        if ami:
            fake_ami = FakeAmiServer(username=AMI_USER, secret=AMI_SECRET)
            ami_port = await nursery.start(fake_ami.serve)
        ports = None
        runner = SidecarRunner(nursery, _config(base, None, None, records),
                               services or fake_services())
        if sidecar:
            ports = await runner.start()
        cfg = _config(base, ports, ami_port, records, transfer)
        fastagi = FastAgiThread(cfg)
        agi_port = await fastagi.start()
        server = fastagi.server
        if sidecar:
            assert await trio.to_thread.run_sync(fastagi.call, server.control.wait_connected(10))
        if ami:
            await trio.to_thread.run_sync(fastagi.call, server.ami.wait_connected())
        try:
            yield Stack(cfg, agi_port, ports, fake_ami, fastagi, runner if sidecar else None)
        finally:
            await fastagi.stop()
            nursery.cancel_scope.cancel()
