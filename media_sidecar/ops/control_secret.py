"""Where the control link's shared secret comes from, and who must have one.

The handshake itself is :mod:`media_sidecar.protocol.control_auth`. The secret is read from the
environment variable named by ``service.control_secret_env`` (default
``AGI_VOICE_CONTROL_SECRET``), never from the config file. ``agi-voice serve`` without that
variable generates one on its first run into ``<runtime dir>/agi-voice-<FastAGI port>.control-
secret`` (mode 0600, reused by later runs) and hands it to its own planes in their environment,
so the links between its local processes are authenticated too. Media workers on other hosts
(``fastagi.media``) need the same value in their environment as the FastAGI host.

Rules: a media worker whose control address is not loopback refuses to start without a secret
(:func:`check_bind`); a worker with a secret always challenges; the FastAGI side refuses a
worker on a non-loopback address that does not authenticate itself.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..config.addresses import is_loopback_host
from ..config.schema import Config
from .status import StartupError

log = logging.getLogger("agi_voice.control")

MIN_SECRET_CHARS = 16


def secret_env_name(cfg: Config) -> str:
    return cfg.service.control_secret_env


def control_secret(cfg: Config, env: Mapping[str, str] | None = None) -> str:
    """The secret from the environment ("" when there is none)."""
    env = os.environ if env is None else env
    return env.get(secret_env_name(cfg), "")


def check_bind(cfg: Config, host: str, secret: str) -> None:
    """Raise :class:`StartupError` when a worker would listen for the control link on a
    non-loopback ``host`` without a secret, or with one too short to be one."""
    name = secret_env_name(cfg)
    if secret and len(secret) < MIN_SECRET_CHARS:
        raise StartupError(f"the control link secret in {name} is shorter than "
                           f"{MIN_SECRET_CHARS} characters (service.control_secret_env)")
    if not secret and not is_loopback_host(host):
        raise StartupError(
            f"sidecar.control.host {host} is not a loopback address: the control link needs "
            f"a shared secret in the environment variable {name} (service.control_secret_env),"
            f" the same on the FastAGI host")


def runtime_base(cfg: Config, env: Mapping[str, str] | None = None) -> Path:
    """``service.runtime_dir``, else ``$RUNTIME_DIRECTORY``, else ``$XDG_RUNTIME_DIR``, else the
    temporary directory (where ``serve`` also writes its pid file)."""
    env = os.environ if env is None else env
    return Path(cfg.service.runtime_dir or env.get("RUNTIME_DIRECTORY", "").split(":")[0]
                or env.get("XDG_RUNTIME_DIR", "") or tempfile.gettempdir())


def secret_file(cfg: Config, env: Mapping[str, str] | None = None) -> Path:
    return runtime_base(cfg, env) / f"agi-voice-{cfg.fastagi.listen.port}.control-secret"


def ensure_generated(path: Path) -> str:
    """The secret kept in ``path``, created (0600, 32 random bytes) when it does not exist.
    A file that others may read is made 0600 with a warning. Raises OSError when the file
    cannot be read or created, or belongs to another user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        st = os.stat(path, follow_symlinks=False)
        if st.st_uid != os.geteuid():  # planted in a shared directory: not ours to trust
            raise PermissionError(f"{path} belongs to another user") from None
        if st.st_mode & 0o077:
            log.warning("control secret file %s was readable by others: made it 0600 (the "
                        "secret it holds should be considered exposed; delete the file to "
                        "get a new one)", path)
            os.chmod(path, 0o600)
        value = path.read_text("ascii").strip()
        if len(value) >= MIN_SECRET_CHARS:
            return value
        log.warning("control secret file %s holds no usable secret: writing a new one", path)
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
    value = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value + "\n")
    log.info("generated the control link secret in %s (mode 0600)", path)
    return value
