"""What a config reload (SIGHUP) can change in a running process, and what needs a restart.

Both planes reload the same file: routing and assistants (and timeouts, limits, the drain)
apply to calls that start from then on; a live call keeps the ``AssistantConfig`` it started
with. What a process bound or connected at start-up (listen addresses, the addresses Asterisk
and the FastAGI side are told, AMI, the records file, logging) stays as it is until a restart.
"""

from __future__ import annotations

import dataclasses

from .schema import Config

RESTART_ONLY = (
    "fastagi.listen", "fastagi.audiosocket_address", "fastagi.control_url", "fastagi.media",
    "sidecar.audiosocket", "sidecar.control", "sidecar.records_path", "sidecar.records",
    "sidecar.workers", "sidecar.pin_workers", "sidecar.worker_port_step",
    "sidecar.inference",
    "health", "ami", "logging", "service",
)
"""Key paths a reload keeps from the running config."""


def _get(cfg: Config, path: str) -> object:
    node: object = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def for_reload(running: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with every :data:`RESTART_ONLY` value taken from ``running``, and the key
    paths whose value differed (to log: they need a restart)."""
    changed = [p for p in RESTART_ONLY if _get(running, p) != _get(new, p)]
    fa, sc = running.fastagi, running.sidecar
    effective = dataclasses.replace(
        new,
        fastagi=dataclasses.replace(new.fastagi, listen=fa.listen,
                                    audiosocket_address=fa.audiosocket_address,
                                    control_url=fa.control_url, media=fa.media),
        sidecar=dataclasses.replace(new.sidecar, audiosocket=sc.audiosocket, control=sc.control,
                                    records_path=sc.records_path, records=sc.records,
                                    workers=sc.workers, pin_workers=sc.pin_workers,
                                    worker_port_step=sc.worker_port_step,
                                    inference=sc.inference),
        health=running.health, ami=running.ami, logging=running.logging,
        service=running.service,
    )
    return effective, changed
