"""``agi-voice serve`` as a child process for the start-and-stop tests: a YAML file on free
loopback ports, the log read line by line from its stderr (waiting for a line is an event read
from the pipe, not a sleep), signals, the health endpoint and the call-record file."""

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

import httpx
import trio
import yaml

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_config(workdir: Path, assistants: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A whole config on free loopback ports (no AMI: degraded mode), records in ``workdir``."""
    cfg: dict[str, Any] = {
        "fastagi": {"listen": {"host": "127.0.0.1", "port": free_port()}},
        "sidecar": {"audiosocket": {"host": "127.0.0.1", "port": free_port()},
                    "control": {"host": "127.0.0.1", "port": free_port()},
                    "records_path": str(workdir / "calls.jsonl")},
        "health": {"listen": {"host": "127.0.0.1", "port": free_port()}},
        # a free port too: two serves at once (or a real one on 9095) must not collide
        "dashboard": {"listen": {"host": "127.0.0.1", "port": free_port()}},
        "service": {"runtime_dir": str(workdir)},
        "ami": {"host": "", "username": ""},
        "routing": {"default": next(iter(assistants))},
        "assistants": assistants,
    }
    cfg.update(sections)
    return cfg


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``agi-voice ARGS`` to its end."""
    return subprocess.run([sys.executable, "-m", "fastagi_server.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=_env())


def _env() -> dict[str, str]:
    """The test's environment without AMI and agi-voice settings, but with the session's
    temporary data directory (tests/conftest.py), so the store never lands in a home."""
    keep = ("AGI_VOICE_DATA_DIR",)
    return {k: v for k, v in os.environ.items()
            if k in keep or not k.startswith(("AMI_", "AGI_VOICE"))}


@dataclass
class Serve:
    workdir: Path
    config: dict[str, Any]
    command: str = "serve"
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _eof: bool = False

    @property
    def config_path(self) -> Path:
        return self.workdir / "agi-voice.yaml"

    @property
    def agi_port(self) -> int:
        return int(self.config["fastagi"]["listen"]["port"])

    @property
    def health_port(self) -> int:
        return int(self.config["health"]["listen"]["port"])

    def write_config(self, config: dict[str, Any] | None = None, text: str | None = None) -> None:
        if config is not None:
            self.config = config
        self.config_path.write_text(text if text is not None else
                                    yaml.safe_dump(self.config, sort_keys=False))

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.write_config()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastagi_server.cli", self.command, "--config",
             str(self.config_path)], cwd=REPO, env=_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with open(self.workdir / f"{self.command}.log", "a", encoding="utf-8") as out:
            for line in self.proc.stderr:
                out.write(line)
                out.flush()
                with self._changed:
                    self.lines.append(line.rstrip("\n"))
                    self._changed.notify_all()
        self.proc.stderr.close()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    def _wait_line(self, text: str, after: int, nth: int,
                   timeout: float) -> str | None:  # noqa: ASYNC109
        with self._changed:
            found: list[str] = []

            def seen() -> bool:
                found[:] = [ln for ln in self.lines[after:] if text in ln][:nth]
                return len(found) == nth or self._eof

            self._changed.wait_for(seen, timeout)
            return found[-1] if len(found) == nth else None

    async def line(self, text: str, after: int = 0, nth: int = 1,
                   timeout: float = 30.0) -> str:  # noqa: ASYNC109
        """The ``nth`` log line from index ``after`` holding ``text``; fails after
        ``timeout`` seconds or when the process has ended without it."""
        got = await trio.to_thread.run_sync(self._wait_line, text, after, nth, timeout,
                                            abandon_on_cancel=True)
        assert got is not None, f"no log line with {text!r}:\n" + "\n".join(self.lines[-30:])
        return got

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 60.0) -> int:  # noqa: ASYNC109
        assert self.proc is not None
        return await trio.to_thread.run_sync(self.proc.wait, timeout)

    def kill(self) -> None:
        """Cleanup: the whole process group, whatever state it is in."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        with self._changed:  # the pump closes the pipe at its end
            self._changed.wait_for(lambda: self._eof, 10)
        for line in self.lines:  # the planes (each media worker too) run in own sessions
            if "agi_voice.serve: started " in line and " (pid " in line:
                pid = int(line.rsplit("(pid ", 1)[1].split(")")[0])
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(f"http://127.0.0.1:{self.health_port}{path}", timeout=5)

    async def ready(self, timeout: float = 60.0) -> None:  # noqa: ASYNC109
        """Until ``/ready`` answers 200 (the way a load balancer or systemd check does)."""
        with trio.fail_after(timeout):
            while True:
                try:
                    if (await self.get("/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await trio.sleep(0.05)

    def records(self) -> list[dict[str, Any]]:
        path = Path(self.config["sidecar"]["records_path"])
        if not path.exists():
            return []
        return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
