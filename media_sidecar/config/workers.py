"""Media workers: how many, on which ports, and where the FastAGI side finds each one.

``agi-voice serve`` runs ``sidecar.workers`` media sidecar processes (default: one per CPU this
process may run on). Worker ``i`` listens on each configured port + ``i *
sidecar.worker_port_step`` (default 10): with the embedded defaults worker 0 takes
9092/9093/9094 (AudioSocket, control link, health), worker 1 9102/9103/9104, worker 2
9112/9113/9114 and so on. Worker 0 is exactly the single sidecar of earlier releases.

The FastAGI side places each call on one of its *media targets*: the local workers (their
control URL and AudioSocket address are ``fastagi.control_url`` / ``fastagi.audiosocket_address``,
or the sidecar's listen addresses, shifted the same way), then every ``fastagi.media`` entry
(workers on other hosts). Pure: no I/O besides reading this process's CPU affinity.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .schema import Config, Listen


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask; a container's CPU set)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def worker_count(cfg: Config) -> int:
    """How many local media workers ``serve`` runs for ``cfg``."""
    n = cfg.sidecar.workers
    return cpu_count() if n is None else n


def _shift(listen: Listen, offset: int) -> Listen:
    # port 0 (any free port) stays 0: each worker then picks its own
    return listen if listen.port == 0 else Listen(listen.host, listen.port + offset)


def worker_config(cfg: Config, index: int) -> Config:
    """``cfg`` as worker ``index`` runs it: its AudioSocket, control and health ports."""
    if index == 0:
        return cfg
    offset = index * cfg.sidecar.worker_port_step
    sc = cfg.sidecar
    return dataclasses.replace(
        cfg,
        sidecar=dataclasses.replace(sc, audiosocket=_shift(sc.audiosocket, offset),
                                    control=_shift(sc.control, offset)),
        health=dataclasses.replace(cfg.health, listen=_shift(cfg.health.listen, offset)),
    )


def shift_address(address: str, offset: int) -> str:
    """``host:port`` with ``offset`` added to the port (IPv6 in brackets kept)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return address
    return f"{host}:{int(port) + offset}"


def shift_url(url: str, offset: int) -> str:
    """A ws:// URL with ``offset`` added to its port."""
    parts = urlsplit(url)
    if parts.port is None or offset == 0:
        return url
    netloc = shift_address(parts.netloc, offset)
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True, slots=True)
class MediaTarget:
    """One media worker as the FastAGI side places calls on it."""

    name: str
    """How logs and the offer (``offer.worker``) name it: the index of a local worker."""
    control_url: str
    audiosocket_address: str
    local: bool = True


def media_targets(cfg: Config, workers: int | None = None) -> list[MediaTarget]:
    """The local workers (``workers``, default :func:`worker_count`), then ``fastagi.media``."""
    n = worker_count(cfg) if workers is None else workers
    step = cfg.sidecar.worker_port_step
    out = [MediaTarget(str(i), shift_url(cfg.control_url, i * step),
                       shift_address(cfg.audiosocket_address, i * step)) for i in range(n)]
    for host in cfg.fastagi.media:
        name = host.name or urlsplit(host.control_url).netloc
        out.append(MediaTarget(name, host.control_url, host.audiosocket_address, local=False))
    return out
