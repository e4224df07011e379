"""agi-voice as an administrator runs it, for the real-Asterisk tier: ``agi-voice serve`` (or
one plane alone) as a child process with a YAML file and AMI credentials in its environment.

:class:`ProductProcess` captures the process's log in a file and a list, reads the call-record
file it writes, and is ready when the log says the control link is up (the FastAGI plane
connected to the media plane): an event read from the pipe, not a sleep.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import yaml

from .peer import REPO, AsteriskPeer, free_port


@dataclass
class ProductProcess:
    config: dict[str, Any]
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    command: str = "serve"
    ready_line: str = "control link up"
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)
    _exited: threading.Event = field(default_factory=threading.Event)
    _saw_ready_line: bool = False
    _new_line: threading.Condition = field(default_factory=threading.Condition)

    @property
    def records_path(self) -> Path:
        return Path(self.config["sidecar"]["records_path"])

    @property
    def fastagi_port(self) -> int:
        return int(self.config["fastagi"]["listen"]["port"])

    def start(self, timeout: float = 90.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / f"{self.command}.yaml"
        cfg_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        env = {k: v for k, v in os.environ.items()
               if k == "AGI_VOICE_DATA_DIR" or not k.startswith(("AMI_", "AGI_VOICE"))}
        env.update(self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastagi_server.cli", self.command, "--config", str(cfg_path)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        threading.Thread(target=self._pump, name=f"log-{self.command}", daemon=True).start()
        self._ready.wait(timeout)
        if not self._saw_ready_line:  # timed out, or the process exited before it was ready
            tail = "\n".join(self.lines[-30:])
            self.stop()
            raise RuntimeError(f"agi-voice {self.command} did not become ready within "
                               f"{timeout:g} s:\n{tail}")

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.workdir / f"{self.command}.log", "a", encoding="utf-8") as log:
            for line in self.proc.stdout:
                with self._new_line:
                    self.lines.append(line.rstrip("\n"))
                    self._new_line.notify_all()
                log.write(line)
                log.flush()
                if self.ready_line in line:
                    self._saw_ready_line = True
                    self._ready.set()
        self._exited.set()
        self._ready.set()  # wake a waiting start(); it checks _exited

    def stop(self) -> None:
        """SIGTERM (serve drains: instant with no call up), SIGKILL after 10 s; closes the
        log pipe whether or not the process had already exited."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._exited.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def wait_line(self, text: str, timeout: float = 15.0) -> str | None:  # noqa: ASYNC109
        """The first log line holding ``text`` (waiting up to ``timeout`` s for it), or None.
        Blocking: call it through ``trio.to_thread.run_sync``."""
        with self._new_line:
            found: list[str] = []

            def seen() -> bool:
                found[:] = [ln for ln in self.lines if text in ln][:1]
                return bool(found) or self._exited.is_set()

            self._new_line.wait_for(seen, timeout)
            return found[0] if found else None

    async def wait_record(self, channel: str, timeout: float = 15.0) -> dict[str, Any]:  # noqa: ASYNC109
        """The call record of ``channel``, once the sidecar has written it."""
        needle = '"channel":' + json.dumps(channel, ensure_ascii=False)
        line = await trio.to_thread.run_sync(self.wait_line, needle, timeout,
                                             abandon_on_cancel=True)
        assert line is not None, f"no call record for {channel}"
        # the log line comes just before the file's: read the record from the line
        rec: dict[str, Any] = json.loads(line[line.index("call record ") + 12:])
        return rec

    def records(self) -> list[dict[str, Any]]:
        try:
            text = self.records_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()]

    def record(self, uuid: str = "", channel_prefix: str = "") -> dict[str, Any] | None:
        for rec in reversed(self.records()):
            if (uuid and rec["uuid"] == uuid) or (
                    channel_prefix and rec.get("channel", "").startswith(channel_prefix)):
                return rec
        return None

    def tracebacks(self) -> list[str]:
        return [ln for ln in self.lines if "Traceback" in ln]


WORKERS = 2
"""Media workers the tier's product runs: calls are placed across them, as on a real box."""
PORT_STEP = 10


def _free(port: int) -> bool:
    if port >= 65536:
        return False
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def product_config(workdir: Path, assistants: dict[str, Any], routing: dict[str, Any],
                   *, ports: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """A complete YAML config (as a dict) on free loopback ports, with :data:`WORKERS` media
    workers (every worker's ports free: worker i listens on each base port + i * the step)."""
    fastagi, audiosocket, control = ports or (free_port(), free_port(), free_port())
    health = free_port()
    if ports is None:
        while not all(_free(p + i * PORT_STEP) for p in (audiosocket, control, health)
                      for i in range(1, WORKERS)):
            audiosocket, control, health = free_port(), free_port(), free_port()
    return {
        "fastagi": {"listen": {"host": "127.0.0.1", "port": fastagi}, "env_timeout": 5.0,
                    "offer_timeout": 0.8},
        "health": {"listen": {"host": "127.0.0.1", "port": health}},
        "dashboard": {"listen": {"host": "127.0.0.1", "port": free_port()}},
        "sidecar": {"audiosocket": {"host": "127.0.0.1", "port": audiosocket},
                    "control": {"host": "127.0.0.1", "port": control},
                    "workers": WORKERS, "worker_port_step": PORT_STEP,
                    "records_path": str(workdir / "calls.jsonl")},
        "ami": {"host": "${AMI_HOST:-}", "port": "${AMI_PORT:-5038}",
                "username": "${AMI_USERNAME:-}", "secret": "${AMI_SECRET}"},
        "routing": routing,
        "assistants": assistants,
    }


def ami_env(peer: AsteriskPeer, user: str = "", secret: str = "") -> dict[str, str]:
    return {"AMI_HOST": "127.0.0.1", "AMI_PORT": str(peer.ami_port),
            "AMI_USERNAME": user or peer.user, "AMI_SECRET": secret or peer.secret}
