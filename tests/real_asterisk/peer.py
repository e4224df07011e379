"""A real Asterisk 22.10.1 as a test peer: a private instance, its dialplan, its AMI.

The instance comes from ``../shared/asterisk`` (``build.sh`` into a cache directory once per
machine, ``instance.sh`` for a private instance with its own run directory and AMI port). This
module only drives it: start and stop, write test dialplan and reload it, read its log, and
:class:`AmiDriver`, a small trio AMI client (the product's sans-I/O AMI codec, nothing of the
product's AMI client) that logs in as the instance's test user, sends actions and keeps every
event for the test to wait on.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from fastagi_server.ami.codec import AmiMessage, AmiParser, Banner, encode_message

VERSION = "22.10.1"
REPO = Path(__file__).resolve().parents[2]
SHARED_ASTERISK = REPO.parent / "shared" / "asterisk"
DEFAULT_PREFIX = Path.home() / ".cache" / "agi-voice" / f"asterisk-{VERSION}"


def asterisk_prefix() -> tuple[Path | None, str]:
    """Where a built Asterisk is, or None and the reason it is not usable (for a skip)."""
    prefix = Path(os.environ.get("AGI_VOICE_ASTERISK_PREFIX", str(DEFAULT_PREFIX)))
    if not (SHARED_ASTERISK / "instance.sh").is_file():
        return None, (f"no Asterisk test peer: {SHARED_ASTERISK} is missing (put ../shared "
                      "beside the repository, with asterisk/build.sh and instance.sh, to run "
                      "the real-Asterisk tier)")
    if (prefix / f".built-{VERSION}").is_file() and (prefix / "sbin" / "asterisk").is_file():
        return prefix, ""
    return None, (f"Asterisk {VERSION} is not built in {prefix}: run "
                  f"`bash {SHARED_ASTERISK}/build.sh {prefix}` (about 3 minutes; .ci/run does "
                  "it) or set AGI_VOICE_ASTERISK_PREFIX to a build")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, where no outgoing connection
    is ever given it as its local port between this probe and Asterisk's bind (a port from
    ``bind(0)`` is an ephemeral one: once, in the fresh-clone CI, another process's connection
    took it while Asterisk booted, and the AMI bind failed)."""
    low, _high = _ephemeral_range()
    top = max(low, 12000)
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, top)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # no luck: any free port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class AsteriskPeer:
    """One private Asterisk instance (``instance.sh start``) on a free AMI port."""

    prefix: Path
    rundir: Path
    ami_port: int = 0
    user: str = "test"
    secret: str = "test"
    pid: int = 0
    _contexts: dict[str, str] = field(default_factory=dict)

    @property
    def etc(self) -> Path:
        return self.rundir / "etc" / "asterisk"

    @property
    def sounds(self) -> Path:
        return self.rundir / "lib" / "sounds"

    @property
    def log_path(self) -> Path:
        return self.rundir / "log" / "messages"

    def _script(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(["bash", str(SHARED_ASTERISK / "instance.sh"), *args],
                             capture_output=True, text=True, timeout=90)
        if check and out.returncode != 0:
            raise RuntimeError(f"instance.sh {args[0]} failed ({out.returncode}): "
                               f"{out.stderr.strip()[-2000:]}")
        return out.stdout

    def start(self) -> None:
        self.etc.mkdir(parents=True, exist_ok=True)
        self.sounds.mkdir(parents=True, exist_ok=True)
        self._write_dialplan()
        for _attempt in range(3):
            self.ami_port = free_port()
            try:
                self.pid = int(self._script("start", str(self.prefix), str(self.rundir),
                                            str(self.ami_port), self.user, self.secret)
                               .strip().splitlines()[-1])
                return
            except RuntimeError as exc:
                # A free port can be taken between the probe and the bind. And instance.sh
                # can check its child before the child has exec'd asterisk (a busy machine):
                # it then says "exited during start" while that asterisk boots on; stop it
                # and start again.
                stray = re.search(r"asterisk \(pid (\d+)\) exited during start", str(exc))
                if stray is not None:
                    self._kill_stray(int(stray.group(1)))
                elif "in use" not in str(exc) and "port taken?" not in str(exc):
                    raise
        raise RuntimeError("could not start the Asterisk instance in three attempts")

    def _kill_stray(self, pid: int) -> None:
        """SIGKILL ``pid`` if it is an asterisk of this run directory."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if str(self.etc / "asterisk.conf").encode() not in cmdline:
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        try:
            os.kill(pid, signal.SIGKILL)
            select.select([fd], [], [], 5.0)  # readable once the process has exited
        finally:
            os.close(fd)

    def stop(self) -> None:
        self._script("stop", str(self.rundir), check=False)

    def cli(self, command: str) -> str:
        return self._script("cli", str(self.rundir), command)

    # -- dialplan ----------------------------------------------------------------------------

    def set_context(self, name: str, body: str) -> None:
        """Define (or replace) context ``name`` with ``body`` (dialplan lines) and reload."""
        self._contexts[name] = body.strip("\n")
        self._write_dialplan()
        if self.pid:
            self.cli("dialplan reload")

    def include_file(self, name: str, text: str) -> None:
        """Write ``text`` as ``etc/asterisk/<name>`` and ``#include`` it from the test dialplan."""
        (self.etc / name).write_text(text)
        self._contexts[f"#include {name}"] = ""
        self._write_dialplan()
        if self.pid:
            self.cli("dialplan reload")

    def _write_dialplan(self) -> None:
        parts = ["; written by tests/real_asterisk/peer.py"]
        for name, body in self._contexts.items():
            if name.startswith("#include "):
                parts.append(f'#include "{self.etc / name.split(" ", 1)[1]}"')
            else:
                parts.append(f"[{name}]\n{body}")
        (self.etc / "extensions_test.conf").write_text("\n\n".join(parts) + "\n")

    # -- logs --------------------------------------------------------------------------------

    def log_lines(self, since: int = 0) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[since:]
        except FileNotFoundError:
            return []

    def problems(self, since: int = 0) -> list[str]:
        """WARNING and ERROR lines of the instance's log (from line ``since``)."""
        return [ln for ln in self.log_lines(since) if re.search(r"\] (WARNING|ERROR)\[", ln)]


def start_peer(prefix: Path, rundir: Path) -> AsteriskPeer:
    if rundir.exists():
        shutil.rmtree(rundir)
    peer = AsteriskPeer(prefix=prefix, rundir=rundir)
    peer.start()
    return peer


# ------------------------------------------------------------------------------------- AMI


class AmiDriver:
    """A test's AMI connection to the instance: actions and every event, in trio.

    Events are kept in :attr:`events` (with their arrival time) for the whole connection;
    :meth:`wait_event` returns the first event since index ``since`` matching a predicate.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._parser = AmiParser()
        self._ids = itertools.count(1)
        self._responses: dict[str, AmiMessage] = {}
        self.events: list[AmiMessage] = []
        self.times: list[float] = []
        self._changed = trio.Event()
        self.closed = False

    @classmethod
    async def connect(cls, peer: AsteriskPeer, nursery: trio.Nursery) -> AmiDriver:
        stream = await trio.open_tcp_stream("127.0.0.1", peer.ami_port)
        drv = cls(stream)
        nursery.start_soon(drv._reader)
        resp = await drv.action("Login", Username=peer.user, Secret=peer.secret, Events="on")
        if resp.get("Response") != "Success":
            raise RuntimeError(f"AMI login failed: {resp.as_dict()}")
        return drv

    async def _reader(self) -> None:
        try:
            while True:
                data = await self._stream.receive_some(65536)
                if not data:
                    break
                self._parser.feed(data)
                for msg in self._parser.events():
                    if isinstance(msg, Banner):
                        continue
                    if msg.event is not None:
                        self.events.append(msg)
                        self.times.append(trio.current_time())
                    elif msg.action_id is not None:
                        self._responses[msg.action_id] = msg
                    self._changed.set()
                    self._changed = trio.Event()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed = True
            self._changed.set()

    async def action(self, name: str, timeout: float = 10.0, **headers: object) -> AmiMessage:  # noqa: ASYNC109
        """Send an action and return its response (the first message with its ActionID)."""
        aid = f"t{next(self._ids)}"
        await self._stream.send_all(encode_message([("Action", name), ("ActionID", aid),
                                                    *headers.items()]))
        with trio.fail_after(timeout):
            while aid not in self._responses:
                await self._changed.wait()
        return self._responses.pop(aid)

    async def wait_event(self, pred: Callable[[AmiMessage], bool], *, since: int = 0,
                         timeout: float = 30.0) -> AmiMessage:  # noqa: ASYNC109
        """The first event from index ``since`` for which ``pred`` is true; TooSlowError if
        none within ``timeout`` seconds."""
        i = since
        with trio.fail_after(timeout):
            while True:
                while i < len(self.events):
                    if pred(self.events[i]):
                        return self.events[i]
                    i += 1
                if self.closed:
                    raise RuntimeError("AMI connection closed while waiting for an event")
                await self._changed.wait()

    def time_of(self, ev: AmiMessage) -> float:
        """When ``ev`` arrived (trio time)."""
        return next(t for e, t in zip(self.events, self.times, strict=True) if e is ev)

    def find(self, pred: Callable[[AmiMessage], bool], since: int = 0) -> list[AmiMessage]:
        return [e for e in self.events[since:] if pred(e)]

    async def aclose(self) -> None:
        with trio.move_on_after(1):
            try:
                await self.action("Logoff", timeout=1)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                pass
        await self._stream.aclose()


def user_event(name: str, **match: str) -> Callable[[AmiMessage], bool]:
    """Predicate: a UserEvent ``name`` whose headers equal ``match``."""
    def pred(ev: AmiMessage) -> bool:
        return (ev.event == "UserEvent" and ev.get("UserEvent") == name
                and all(ev.get(k) == v for k, v in match.items()))
    return pred


def event(name: str, **match: str) -> Callable[[AmiMessage], bool]:
    def pred(ev: AmiMessage) -> bool:
        return ev.event == name and all(ev.get(k) == v for k, v in match.items())
    return pred
