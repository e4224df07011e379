"""The product and the mock provider as separate processes, for the relay benchmarks.

:class:`Product` starts the two planes exactly as ``agi-voice serve`` does (``python -m
fastagi_server.cli sidecar`` and ``... fastagi``, each its own process) on a generated config
with free loopback ports, pins every thread of both to the server CPU, and waits until both
listen. :class:`MockProvider` starts a provider's protocol mock, OpenAI Realtime
(``python -m tests.mocks.openai_realtime``) or Deepgram Voice Agent
(``python -m tests.mocks.deepgram_agent``), in its own process on the generator's CPU.

Nothing here measures; it only starts, pins and stops. Readings of ``/proc`` (CPU, RSS, file
descriptors) are helpers at the bottom.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from foundation_load import pin_process

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = {0}
GENERATOR_CPU = {1}
MOCK_KEY = "bench-key"
MOCK_KEY_ENV = "AGI_VOICE_BENCH_PROVIDER_KEY"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


STS_ASSISTANTS: dict[str, tuple[str, str]] = {
    "sts": ("openai", "realtime: {{url: 'ws://127.0.0.1:{port}/v1/realtime', api_key_env: {env},"
                      " audio: ulaw, silence_ms: 400}}"),
    "sts_pcm": ("openai", "realtime: {{url: 'ws://127.0.0.1:{port}/v1/realtime', api_key_env: {env},"
                          " audio: pcm, silence_ms: 400}}"),
    "dg": ("deepgram", "deepgram: {{url: 'ws://127.0.0.1:{port}/v1/agent/converse', api_key_env:"
                       " {env}, audio: mulaw}}"),
    "dg_pcm": ("deepgram", "deepgram: {{url: 'ws://127.0.0.1:{port}/v1/agent/converse',"
                           " api_key_env: {env}, audio: linear16, sample_rate: 24000}}"),
}
"""Speech-to-speech assistants of the bench config: name -> (mock, provider block). ``sts``:
OpenAI Realtime, G.711 mu-law 8 kHz both ways (passthrough); ``sts_pcm``: OpenAI Realtime,
PCM16 24 kHz (resampled both ways); ``dg``: Deepgram Voice Agent, mu-law 8 kHz; ``dg_pcm``:
Deepgram Voice Agent, linear16 24 kHz (resampled both ways)."""

PROVIDER_OF = {"openai": "openai_realtime", "deepgram": "deepgram_agent"}
MOCK_MODULE = {"openai": "tests.mocks.openai_realtime", "deepgram": "tests.mocks.deepgram_agent"}


def mock_of(assistant: str) -> str | None:
    """The mock an assistant of the bench config talks to (None for echo)."""
    return STS_ASSISTANTS[assistant][0] if assistant in STS_ASSISTANTS else None


def bench_config(*, agi: int, audiosocket: int, control: int, records: Path,
                 mocks: Mapping[str, int] | None = None, max_calls: int = 2000,
                 workers: int = 1) -> str:
    """The config under test: the echo assistant and, for each running mock (``openai`` or
    ``deepgram`` -> its port), its speech-to-speech assistants (:data:`STS_ASSISTANTS`).

    Every assistant has ``apology: ""``: a relay assistant's apology is otherwise rendered with
    the local TTS when the sidecar starts, which would load Piper into the process measured.

    ``workers``: ``sidecar.workers``, the media worker processes (the product's default is one
    per CPU; the bench's is 1, so "per core" figures are one sidecar's on the server CPU)."""
    mocks = mocks or {}
    sts = ""
    for name, (mock, block) in STS_ASSISTANTS.items():
        if mock in mocks:
            sts += f"""
  {name}:
    provider: {PROVIDER_OF[mock]}
    greeting: "Hello, thanks for calling."
    apology: ""
    {block.format(port=mocks[mock], env=MOCK_KEY_ENV)}
    barge_in: {{enabled: true, greeting_protection_ms: 0}}
"""
    return f"""
fastagi:
  listen: {{host: 127.0.0.1, port: {agi}}}
  offer_timeout: 0.9
sidecar:
  audiosocket: {{host: 127.0.0.1, port: {audiosocket}}}
  control: {{host: 127.0.0.1, port: {control}}}
  max_calls: {max_calls}
  workers: {workers}
  records_path: {records}
routing: {{default: echo}}
# no drain announcement, like no apology below: rendering it loads Piper (~170 MiB), which
# would be counted as the relay's memory
drain: {{announcement: ""}}
assistants:
  echo:
    provider: echo
    apology: ""
    echo: {{chunk_ms: 100}}
{sts}"""


_PROFILED_SIDECAR = """
import sys, trio, pyinstrument
from media_sidecar.app import run_sidecar
from media_sidecar.config.loader import load_config
cfg = load_config(sys.argv[1])
prof = pyinstrument.Profiler(interval=0.0005)
prof.start()
try:
    trio.run(run_sidecar, cfg)
except BaseException:  # KeyboardInterrupt, possibly inside an exception group
    pass
prof.stop()
open(sys.argv[2], "w").write(prof.output_text(show_all=False))
"""


class Product:
    """The two planes of agi-voice, each in its own process, pinned to the server CPU."""

    def __init__(self, workdir: Path, *, mocks: Mapping[str, int] | None = None,
                 pin: bool = True, profile: Path | None = None, workers: int = 1,
                 server_cpus: Sequence[int] | None = None) -> None:
        self.workdir = workdir
        self.profile = profile
        """With a path, the sidecar runs under pyinstrument and writes its profile there."""
        self.agi_port = free_port()
        self.as_port = free_port()
        self.control_port = free_port()
        self.records = workdir / "records.jsonl"
        self.config = workdir / "bench.yaml"
        self.config.write_text(bench_config(
            agi=self.agi_port, audiosocket=self.as_port, control=self.control_port,
            records=self.records, mocks=mocks, workers=workers))
        self.workers = workers
        """Media worker processes (``sidecar --worker I``), worker I on the configured
        ports + I * 10 (``sidecar.worker_port_step``), pinned to ``server_cpus[I % len]``."""
        self.server_cpus = list(server_cpus) if server_cpus else sorted(SERVER_CPU)
        self.pin = pin
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Product:
        env = dict(os.environ, PYTHONPATH=str(ROOT), **{MOCK_KEY_ENV: MOCK_KEY})
        roles = ["sidecar"] + [f"sidecar{i}" for i in range(1, self.workers)] + ["fastagi"]
        for role in roles:
            log = open(self.workdir / f"{role}.log", "wb")  # noqa: SIM115 - closed with the process
            cmd = "fastagi" if role == "fastagi" else "sidecar"
            argv = [sys.executable, "-m", "fastagi_server.cli", cmd, "--config", str(self.config)]
            if role.startswith("sidecar") and role != "sidecar":
                argv += ["--worker", role.removeprefix("sidecar")]
            if self.profile is not None and role == "sidecar":
                argv = [sys.executable, "-c", _PROFILED_SIDECAR, str(self.config), str(self.profile)]
            self.procs[role] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=ROOT)
        for i in range(self.workers):
            proc = self.procs["sidecar" if i == 0 else f"sidecar{i}"]
            wait_listening(self.as_port + 10 * i, 60, proc)
            wait_listening(self.control_port + 10 * i, 10, proc)
        wait_listening(self.agi_port, 30, self.procs["fastagi"])
        time.sleep(0.5)  # the control link connects (the FastAGI side retries every 0.2 s)
        self.repin()
        return self

    def repin(self) -> None:
        if self.pin:
            for i, pid in enumerate(self.sidecar_pids):
                pin_process(pid, {self.server_cpus[i % len(self.server_cpus)]})
            pin_process(self.fastagi_pid, set(self.server_cpus))

    @property
    def sidecar_pid(self) -> int:
        return self.procs["sidecar"].pid

    @property
    def sidecar_pids(self) -> list[int]:
        """Every media worker process (one unless ``workers``)."""
        return [p.pid for r, p in self.procs.items() if r.startswith("sidecar")]

    @property
    def fastagi_pid(self) -> int:
        return self.procs["fastagi"].pid

    def read_records(self) -> list[dict]:
        if not self.records.exists():
            return []
        return [json.loads(line) for line in self.records.read_text().splitlines() if line]

    def __exit__(self, *exc: object) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGINT)  # KeyboardInterrupt: a clean exit (and profile)
        for p in self.procs.values():
            try:
                p.wait(120 if self.profile is not None else 10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class MockProvider:
    """A provider's mock server in its own process (on the generator's CPU): ``openai``
    (OpenAI Realtime) or ``deepgram`` (Deepgram Voice Agent). Both answer every caller turn,
    and say the greeting, with ``reply_ms`` of tone sent ``send_rate`` times faster than real
    time; their end-of-speech silence differs (OpenAI: the session's ``silence_ms``, 400 ms in
    the bench config; Deepgram's mock: 500 ms)."""

    def __init__(self, workdir: Path, kind: str = "openai", *, reply_ms: int = 2000,
                 send_rate: float = 4.0, pin: bool = True) -> None:
        if kind not in MOCK_MODULE:
            raise ValueError(f"unknown mock {kind!r} (expected one of {sorted(MOCK_MODULE)})")
        self.workdir = workdir
        self.kind = kind
        self.args = ["--reply-ms", str(reply_ms), "--send-rate", str(send_rate)]
        self.pin = pin
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MockProvider:
        ready = self.workdir / f"mock-{self.kind}.ready"
        ready.unlink(missing_ok=True)
        log = open(self.workdir / f"mock-{self.kind}.log", "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", MOCK_MODULE[self.kind], "--port", "0", "--ready",
             str(ready), "--api-key", MOCK_KEY, *self.args],
            stdin=subprocess.PIPE, stdout=log, stderr=log, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
        deadline = time.monotonic() + 30
        while not ready.exists() or not ready.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.kind} mock did not start; see mock-{self.kind}.log")
            time.sleep(0.05)
        self.port = int(json.loads(ready.read_text())["port"])
        if self.pin:
            pin_process(self.proc.pid, GENERATOR_CPU)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- /proc readings --------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
