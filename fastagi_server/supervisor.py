"""``agi-voice serve``: a small supervisor of the two planes, each its own process.

- **Start.** Both planes start at once, each with the write end of a status pipe
  (:mod:`media_sidecar.ops.status`): a plane says ``ready`` when it can do its job, or
  ``fatal <one line>`` before it exits when it cannot start. FastAGI is ready first and fails
  calls at once ("media plane not ready: starting") until the media plane's control link is up.
- **Restart.** A plane that dies after it was ready is restarted (backoff 0.5 s doubling to
  30 s, back to 0.5 s after 30 s up). A plane that dies before it was ready is a fatal start-up
  error: ``serve`` prints that plane's one line, stops the other plane and exits 1 (under
  systemd, ``Restart=on-failure`` and the start limit take over, with the line in the journal).
- **Stop** (SIGTERM or SIGINT). SIGTERM goes to both planes at once; each drains. The media
  plane exits once its calls are over and their records written (at the drain deadline it hands
  each call left to its fallback); FastAGI exits once its AGI connections are done, which is
  after the media plane's calls, since each is an AGI connection until its hand-off and its
  outcome are done. Whatever is left at ``drain.deadline_seconds`` + :data:`STOP_MARGIN_SECONDS`
  is killed: the media plane first, FastAGI :data:`FASTAGI_LAST_SECONDS` later, so calls the
  kill ends still get their ``AI_STATUS``. Exit 0 when both planes drained. A second signal
  sends a second SIGTERM: each plane stops at once.
- **Reload** (SIGHUP, ``agi-voice reload``). The file is validated here first; an invalid one is
  refused with its error logged and nothing changes. Then SIGHUP goes to the media plane, and
  only once it answers ``reloaded`` to FastAGI, so FastAGI never routes a call to an assistant
  the media plane does not know yet; if the media plane refuses (a model that does not load),
  FastAGI keeps its config too.
- **Pid file.** ``<service.runtime_dir>/agi-voice-<FastAGI port>.pid`` (:func:`pid_file`),
  written at start and removed at exit, for ``agi-voice reload``.

The planes run in their own sessions: a terminal's Ctrl-C or a signal to ``serve``'s process
group reaches only the supervisor, which forwards what it means. If the supervisor itself is
killed, each plane gets SIGTERM from the kernel (``PR_SET_PDEATHSIG``) and drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from media_sidecar.config.loader import ConfigError, load_config
from media_sidecar.config.schema import Config
from media_sidecar.ops.status import (
    FATAL,
    READY,
    RELOAD_FAILED,
    RELOADED,
    SUPERVISOR_ENV,
    parse_status,
)

log = logging.getLogger("agi_voice.serve")

ROLES = ("sidecar", "fastagi")
"""The planes, in the order they are reloaded (and killed at the stop deadline)."""
BACKOFF_MIN = 0.5
BACKOFF_MAX = 30.0
BACKOFF_RESET_SECONDS = 30.0
STOP_MARGIN_SECONDS = 10.0
"""After the drain deadline, before the media plane is killed: its hand-offs (announcement,
transfer) and records (``media_sidecar.server.lifecycle.HANDOFF_GRACE_SECONDS``). The
systemd unit's ``TimeoutStopSec`` must exceed deadline + this + :data:`FASTAGI_LAST_SECONDS`."""
FASTAGI_LAST_SECONDS = 2.0
"""FastAGI is killed this long after the media plane, to write the AI_STATUS of the calls
the kill ended."""


def pid_file(cfg: Config, env: Mapping[str, str] | None = None) -> Path:
    """Where ``serve`` writes its pid: ``service.runtime_dir``, else ``$RUNTIME_DIRECTORY``
    (systemd's ``RuntimeDirectory=``), else ``$XDG_RUNTIME_DIR``, else the temporary
    directory; named after the FastAGI port, so two serves on one host never share it."""
    env = os.environ if env is None else env
    base = (cfg.service.runtime_dir or env.get("RUNTIME_DIRECTORY", "").split(":")[0]
            or env.get("XDG_RUNTIME_DIR", "") or tempfile.gettempdir())
    return Path(base) / f"agi-voice-{cfg.fastagi.listen.port}.pid"


def plane_argv(role: str, config_path: str | None, verbose: bool) -> list[str]:
    """The command line of one plane (``--status-fd`` is added at each start)."""
    argv = [sys.executable, "-m", "fastagi_server.cli"]
    if verbose:
        argv.append("-v")
    argv.append(role)
    if config_path:
        argv += ["--config", config_path]
    return argv


@dataclass(eq=False)
class Plane:
    role: str
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    ready: bool = False
    fatal: str = ""
    """The plane's ``fatal`` line, if it sent one."""
    backoff: float = BACKOFF_MIN
    started_at: float = 0.0


@dataclass(frozen=True)
class _Event:
    kind: str  # status, exit, stop, reload, restart, kill
    role: str = ""
    detail: str = ""
    proc: object = None
    """The plane's process the event is about (a stale event of an earlier one is ignored)."""


@dataclass(eq=False)
class Supervisor:
    cfg: Config
    config_path: str | None
    argv: dict[str, list[str]] = field(default_factory=dict)
    """role -> command line; empty: :func:`plane_argv` for each of :data:`ROLES`."""
    verbose: bool = False
    pid_path: Path | None = None

    def __post_init__(self) -> None:
        argv = self.argv or {r: plane_argv(r, self.config_path, self.verbose) for r in ROLES}
        self.planes = {role: Plane(role, list(cmd)) for role, cmd in argv.items()}
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.stopping = False
        self.failed = ""
        """``role: line`` of the plane whose start failed (serve then exits 1)."""
        self.unclean = False
        """A plane had to be killed, or exited non-zero while stopping."""
        self.reload_pending: list[str] = []
        self.reload_waiting = ""
        self._timers: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> int:
        """Supervise until both planes have stopped; the exit status of ``serve``: 0 after
        a drain, 1 after a fatal start-up error or a stop that had to kill a plane."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.events.put_nowait, _Event("stop"))
        loop.add_signal_handler(signal.SIGHUP, self.events.put_nowait, _Event("reload"))
        self._write_pid()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for plane in self.planes.values():
                    await self._spawn(plane)
                code = await self._loop()
                for timer in list(self._timers):
                    timer.cancel()
            return code
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            self._remove_pid()

    async def _loop(self) -> int:
        while True:
            ev = await self.events.get()
            plane = self.planes.get(ev.role)
            if plane is not None and ev.proc is not None and ev.proc is not plane.proc:
                continue  # about an earlier process of that plane
            if ev.kind == "status" and plane is not None:
                self._on_status(plane, ev.detail)
            elif ev.kind == "exit" and plane is not None:
                self._on_exit(plane, int(ev.detail))
            elif ev.kind == "stop":
                self._on_stop_signal()
            elif ev.kind == "reload":
                await self._on_reload_signal()
            elif ev.kind == "restart" and plane is not None and not self.stopping:
                await self._spawn(plane)
            elif ev.kind == "kill" and plane is not None and plane.proc is not None:
                log.warning("%s still running %.0f s after the drain deadline: killing it",
                            plane.role, STOP_MARGIN_SECONDS)
                self.unclean = True
                self._signal(plane, signal.SIGKILL)
            if self.stopping and all(p.proc is None for p in self.planes.values()):
                return 1 if self.failed or self.unclean else 0

    async def _spawn(self, plane: Plane) -> None:
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *plane.argv, "--status-fd", str(write_fd), pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, SUPERVISOR_ENV: str(os.getpid())})
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        plane.proc, plane.ready, plane.fatal = proc, False, ""
        plane.started_at = asyncio.get_running_loop().time()
        log.info("started %s (pid %d)", plane.role, proc.pid)
        assert self._tg is not None
        self._tg.create_task(self._watch(plane.role, proc, read_fd))

    async def _watch(self, role: str, proc: asyncio.subprocess.Process, read_fd: int) -> None:
        """Post the plane's status lines as they come, then its exit (in that order)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0))
        try:
            async for line in reader:
                parsed = parse_status(line)
                if parsed is not None:
                    kind, text = parsed
                    self.events.put_nowait(_Event("status", role, f"{kind} {text}".strip(),
                                                  proc))
        finally:
            transport.close()
        code = await proc.wait()
        self.events.put_nowait(_Event("exit", role, str(code), proc))

    def _timer(self, delay: float, ev: _Event) -> None:
        async def fire() -> None:
            await asyncio.sleep(delay)
            self.events.put_nowait(ev)

        assert self._tg is not None
        task = self._tg.create_task(fire())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    @staticmethod
    def _signal(plane: Plane, signum: int) -> None:
        if plane.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                plane.proc.send_signal(signum)

    # -- what the planes say -------------------------------------------------------------------

    def _on_status(self, plane: Plane, line: str) -> None:
        kind, _, text = line.partition(" ")
        if kind == READY:
            plane.ready = True
            log.info("%s ready", plane.role)
            if all(p.ready for p in self.planes.values()):
                log.info("serving: both planes are ready")
            self._advance_reload()
        elif kind == FATAL:
            plane.fatal = text
        elif kind in (RELOADED, RELOAD_FAILED):
            self._on_reloaded(plane, kind == RELOADED, text)

    def _on_exit(self, plane: Plane, code: int) -> None:
        plane.proc = None
        was_ready, plane.ready = plane.ready, False
        if self.reload_waiting == plane.role:
            self.reload_waiting = ""
        if self.stopping:
            log.info("%s stopped (exit status %d)", plane.role, code)
            if code != 0 and not self.failed:
                self.unclean = True
            return
        if was_ready:
            now = asyncio.get_running_loop().time()
            if now - plane.started_at > BACKOFF_RESET_SECONDS:
                plane.backoff = BACKOFF_MIN
            log.error("%s exited with status %d; restarting it in %.1f s", plane.role, code,
                      plane.backoff)
            self._timer(plane.backoff, _Event("restart", plane.role))
            plane.backoff = min(plane.backoff * 2, BACKOFF_MAX)
            return
        why = plane.fatal or (f"killed by {signal.Signals(-code).name} before it was ready"
                              if code < 0 else f"exited with status {code} before it was ready")
        self.failed = f"{plane.role}: {why}"
        print(f"agi-voice: {self.failed}", file=sys.stderr, flush=True)
        self._begin_stop()

    # -- stop ------------------------------------------------------------------------------------

    def _on_stop_signal(self) -> None:
        if not self.stopping:
            log.info("stopping: new calls are refused; calls in progress get up to %g s",
                     self.cfg.drain.deadline_seconds)
            self._begin_stop()
            return
        log.warning("second stop signal: stopping now; calls in progress drop")
        for plane in self.planes.values():
            self._signal(plane, signal.SIGTERM)

    def _begin_stop(self) -> None:
        self.stopping = True
        for timer in list(self._timers):  # restarts not done yet
            timer.cancel()
        for plane in self.planes.values():
            self._signal(plane, signal.SIGTERM)
        kill_at = self.cfg.drain.deadline_seconds + STOP_MARGIN_SECONDS
        for i, role in enumerate(ROLES):
            if role in self.planes:
                self._timer(kill_at + i * FASTAGI_LAST_SECONDS, _Event("kill", role))

    # -- reload ----------------------------------------------------------------------------------

    async def _on_reload_signal(self) -> None:
        if self.stopping:
            log.info("SIGHUP ignored: stopping")
            return
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            log.error("config reload refused: %s; the running config stays", exc)
            return
        self.cfg = new
        log.info("reloading %s: the media plane first, then FastAGI", new.source)
        self.reload_pending = [r for r in ROLES if r in self.planes]
        self._advance_reload()

    def _advance_reload(self) -> None:
        """SIGHUP to the first plane still to reload, once it is ready (a plane that is
        starting gets it when it is ready) and no other reload is in flight."""
        if self.reload_waiting or self.stopping or not self.reload_pending:
            return
        plane = self.planes[self.reload_pending[0]]
        if plane.proc is None or not plane.ready:
            return
        self.reload_waiting = plane.role
        self._signal(plane, signal.SIGHUP)

    def _on_reloaded(self, plane: Plane, ok: bool, error: str) -> None:
        if plane.role != self.reload_waiting:
            return  # a SIGHUP someone sent to the plane itself; it logged the result
        self.reload_waiting = ""
        if ok:
            self.reload_pending.remove(plane.role)
            if not self.reload_pending:
                log.info("config reloaded by both planes: new calls use it")
        else:
            log.error("%s refused the new config (%s)%s", plane.role, error,
                      "; FastAGI keeps its config too" if plane.role == "sidecar" else "")
            self.reload_pending.clear()
        self._advance_reload()

    # -- pid file --------------------------------------------------------------------------------

    def _write_pid(self) -> None:
        path = self.pid_path
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(f"{os.getpid()}\n")
            tmp.replace(path)
        except OSError as exc:
            log.warning("no pid file %s (%s): agi-voice reload cannot find this serve; "
                        "send SIGHUP to pid %d instead", path, exc.strerror or exc, os.getpid())
            self.pid_path = None

    def _remove_pid(self) -> None:
        path = self.pid_path
        if path is None:
            return
        with contextlib.suppress(OSError):
            if path.read_text().strip() == str(os.getpid()):
                path.unlink()
