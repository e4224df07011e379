"""``agi-voice serve``: a small supervisor of the two planes, each its own process (the media
plane as N media workers).

- **Workers.** The media plane is ``sidecar.workers`` processes (default: one per CPU this
  process may run on; :mod:`media_sidecar.config.workers`), roles ``sidecar-0`` ...
  ``sidecar-<N-1>``, each ``agi-voice sidecar --worker I`` on its own ports (each configured
  port + ``I * sidecar.worker_port_step``), optionally pinned to a CPU each
  (``sidecar.pin_workers``). Everything below that says "the media plane" holds for each
  worker on its own: each is started, restarted (its own backoff) and drained by itself; one
  that dies loses only its own calls while the others serve on, and FastAGI places new calls
  on the others until it is back (:mod:`fastagi_server.placement`).
- **Start.** All planes start at once, each with the write end of a status pipe
  (:mod:`media_sidecar.ops.status`): a plane says ``ready`` when it can do its job, or
  ``fatal <one line>`` before it exits when it cannot start. FastAGI is ready first and fails
  calls at once ("media plane not ready: starting") until some worker's control link is up.
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
  refused with its error logged and nothing changes. Then SIGHUP goes to every media worker at
  once (one that is starting gets it once it is ready), and only once every one has answered
  ``reloaded`` to FastAGI, so FastAGI never routes a call to an assistant a worker does not
  know yet; if a worker refuses (a model that does not load), FastAGI keeps its config too
  (the workers that took it serve new calls with it; a call for an assistant one of them no
  longer knows is placed on another).
- **Control secret.** Without the environment variable ``service.control_secret_env`` (default
  ``AGI_VOICE_CONTROL_SECRET``), ``serve`` generates the control link's shared secret into
  ``agi-voice-<FastAGI port>.control-secret`` (mode 0600) beside the pid file on its first run,
  and gives it to its planes in that variable (:mod:`media_sidecar.ops.control_secret`).
- **Pid file.** ``<service.runtime_dir>/agi-voice-<FastAGI port>.pid`` (:func:`pid_file`),
  written at start and removed at exit, for ``agi-voice reload``.

- **Dashboard.** With ``dashboard.enabled`` (and a port), ``serve`` also runs ``agi-voice
  dashboard`` as a child process (role ``dashboard``): it reads the call store and the workers'
  ``/calls``, never a call's path, so its failure never touches calls. It is restarted like a
  worker when it dies; one that cannot start (its ``fatal`` line: a non-loopback address
  without ``$AGI_VOICE_DASHBOARD_PASSWORD``, its port in use) is logged as an ERROR and left
  off, and ``serve`` runs on. It takes no part in a reload and stops at once on SIGTERM.

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
from media_sidecar.config.workers import worker_count
from media_sidecar.ops.control_secret import control_secret, ensure_generated, secret_file
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
"""The kinds of plane, in the order they are reloaded (and killed at the stop deadline). A
plane's role is its kind, or ``sidecar-<I>`` for media worker I."""
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


def kind_of(role: str) -> str:
    """``sidecar`` or ``fastagi`` for a role (``sidecar-1`` is a sidecar)."""
    return role.split("-", 1)[0]


def plane_argv(role: str, config_path: str | None, verbose: bool) -> list[str]:
    """The command line of one plane (``--status-fd`` is added at each start)."""
    argv = [sys.executable, "-m", "fastagi_server.cli"]
    if verbose:
        argv.append("-v")
    argv.append(kind_of(role))
    if config_path:
        argv += ["--config", config_path]
    if role.startswith("sidecar-"):
        argv += ["--worker", role.split("-", 1)[1]]
    return argv


DASHBOARD = "dashboard"


def runs_dashboard(cfg: Config) -> bool:
    """Whether ``serve`` runs the dashboard for ``cfg``."""
    return cfg.dashboard.enabled and cfg.dashboard.listen.port != 0


def plane_roles(cfg: Config) -> list[str]:
    """Every plane ``serve`` runs for ``cfg``: the media workers, then FastAGI."""
    return [*(f"sidecar-{i}" for i in range(worker_count(cfg))), "fastagi"]


@dataclass(eq=False)
class Plane:
    role: str
    argv: list[str]
    cpu: int | None = None
    """The CPU this plane is pinned to (``sidecar.pin_workers``), if any."""
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
    """role -> command line; empty: :func:`plane_argv` for each of :func:`plane_roles`."""
    verbose: bool = False
    pid_path: Path | None = None

    def __post_init__(self) -> None:
        argv = self.argv or {r: plane_argv(r, self.config_path, self.verbose)
                             for r in plane_roles(self.cfg)}
        if not self.argv and runs_dashboard(self.cfg):
            argv[DASHBOARD] = plane_argv(DASHBOARD, self.config_path, self.verbose)
        self.planes = {role: Plane(role, list(cmd)) for role, cmd in argv.items()}
        if self.cfg.sidecar.pin_workers:
            cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
            for i, plane in enumerate(p for p in self.planes.values()
                                      if kind_of(p.role) == "sidecar"):
                plane.cpu = cpus[i % len(cpus)] if cpus else None
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.stopping = False
        self.failed = ""
        """``role: line`` of the plane whose start failed (serve then exits 1)."""
        self.unclean = False
        """A plane had to be killed, or exited non-zero while stopping."""
        self.reload_phases: list[set[str]] = []
        """Roles still to reload, phase by phase: every media worker, then FastAGI."""
        self.reload_sent: set[str] = set()
        """Roles sent SIGHUP whose answer has not come yet."""
        self.reload_failed = False
        """A worker refused the reload in progress: FastAGI is not asked."""
        self._timers: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self.plane_env: dict[str, str] = {}
        """Added to each plane's environment (the generated control secret)."""

    def _control_secret(self) -> None:
        """The generated control secret into :attr:`plane_env` when the environment has
        none and media workers run here (module doc); a file that cannot be written is a
        WARNING (the loopback links then run without a secret)."""
        name = self.cfg.service.control_secret_env
        if control_secret(self.cfg) or not any(kind_of(r) == "sidecar" for r in self.planes):
            return
        path = secret_file(self.cfg)
        try:
            self.plane_env[name] = ensure_generated(path)
        except OSError as exc:
            log.warning("cannot keep the control link secret in %s (%s): set %s; the links "
                        "between the planes run without one", path, exc.strerror or exc, name)

    # -- running -------------------------------------------------------------------------------

    async def run(self) -> int:
        """Supervise until both planes have stopped; the exit status of ``serve``: 0 after
        a drain, 1 after a fatal start-up error or a stop that had to kill a plane."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.events.put_nowait, _Event("stop"))
        loop.add_signal_handler(signal.SIGHUP, self.events.put_nowait, _Event("reload"))
        self._write_pid()
        self._control_secret()
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
                env={**os.environ, **self.plane_env, SUPERVISOR_ENV: str(os.getpid())})
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        plane.proc, plane.ready, plane.fatal = proc, False, ""
        plane.started_at = asyncio.get_running_loop().time()
        pinned = ""
        if plane.cpu is not None:
            try:
                os.sched_setaffinity(proc.pid, {plane.cpu})
                pinned = f" on CPU {plane.cpu}"
            except OSError as exc:  # it runs on, unpinned
                log.warning("could not pin %s to CPU %d: %s", plane.role, plane.cpu,
                            exc.strerror or exc)
        log.info("started %s (pid %d)%s", plane.role, proc.pid, pinned)
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
            if plane.role == DASHBOARD:
                return
            if all(p.ready for p in self.planes.values() if p.role != DASHBOARD):
                workers = sum(kind_of(r) == "sidecar" for r in self.planes)
                log.info("serving: both planes are ready (%d media worker%s)", workers,
                         "" if workers == 1 else "s")
            self._advance_reload()
        elif kind == FATAL:
            plane.fatal = text
        elif kind in (RELOADED, RELOAD_FAILED):
            self._on_reloaded(plane, kind == RELOADED, text)

    def _on_exit(self, plane: Plane, code: int) -> None:
        plane.proc = None
        was_ready, plane.ready = plane.ready, False
        self.reload_sent.discard(plane.role)  # it gets the SIGHUP again once it is ready
        if self.stopping:
            log.info("%s stopped (exit status %d)", plane.role, code)
            if code != 0 and not self.failed:
                self.unclean = True
            return
        if plane.role == DASHBOARD and not was_ready and plane.fatal:
            # a config or port problem: retrying cannot help; the calls never needed it
            log.error("dashboard off: %s (serve runs on without it)", plane.fatal)
            return
        if was_ready or plane.role == DASHBOARD:
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
        for role in self.planes:
            kind = kind_of(role)
            later = ROLES.index(kind) * FASTAGI_LAST_SECONDS if kind in ROLES else 0.0
            self._timer(kill_at + later, _Event("kill", role))

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
        self.reload_failed = False
        self.reload_phases = [phase for phase in (
            {r for r in self.planes if kind_of(r) == kind} for kind in ROLES) if phase]
        self._advance_reload()

    def _advance_reload(self) -> None:
        """SIGHUP to each plane of the current phase that is ready and not signalled yet (a
        plane that is starting gets it when it is ready)."""
        if self.stopping or not self.reload_phases:
            return
        for role in sorted(self.reload_phases[0] - self.reload_sent):
            plane = self.planes[role]
            if plane.proc is not None and plane.ready:
                self.reload_sent.add(role)
                self._signal(plane, signal.SIGHUP)

    def _on_reloaded(self, plane: Plane, ok: bool, error: str) -> None:
        if plane.role not in self.reload_sent:
            return  # a SIGHUP someone sent to the plane itself; it logged the result
        self.reload_sent.discard(plane.role)
        phase = self.reload_phases[0] if self.reload_phases else set()
        phase.discard(plane.role)
        if not ok:
            media = kind_of(plane.role) == "sidecar"
            log.error("%s refused the new config (%s)%s", plane.role, error,
                      "; FastAGI keeps its config too" if media else "")
            del self.reload_phases[1:]  # the rest of this phase answers; FastAGI is not asked
            self.reload_failed = True
        if not phase and self.reload_phases:
            self.reload_phases.pop(0)
            if not self.reload_phases and not self.reload_failed:
                log.info("config reloaded by both planes: new calls use it")
        if not self.reload_phases:
            self.reload_failed = False
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
