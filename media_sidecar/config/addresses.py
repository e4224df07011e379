"""Address policy shared by both planes: loopback tests and allow lists. Pure (``ipaddress``).

- :func:`is_loopback_host`: whether a listen or connect host stays on this machine (the control
  link needs its shared secret otherwise);
- :func:`parse_allow`: ``fastagi.allow`` entries into networks (:class:`AllowList`), which
  FastAGI checks each connecting peer against.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SPLIT = re.compile(r"[,\s]+")


def ip_of(host: str) -> IpAddress | None:
    """``host`` as an IP address (brackets, a zone and IPv4-mapped IPv6 unwrapped), else None."""
    text = host.strip().strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_loopback_host(host: str) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1) or ``localhost``; False for anything
    else, the wildcard addresses (0.0.0.0, ::) and other host names included."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    ip = ip_of(host)
    return ip is not None and ip.is_loopback


def parse_allow(entries: Iterable[str]) -> list[IpNetwork]:
    """The networks of ``fastagi.allow`` (an address is a /32 or /128). Raises ValueError naming
    the index of the entry that is neither an address nor a CIDR network."""
    nets: list[IpNetwork] = []
    for i, entry in enumerate(entries):
        for item in _SPLIT.split(entry.strip()):
            if not item:
                continue
            try:
                nets.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                raise ValueError(f"[{i}]: expected an IP address or CIDR network, got {item!r}"
                                 ) from None
    return nets


@dataclass(frozen=True, slots=True)
class AllowList:
    """Whether a peer address may connect (``fastagi.allow``)."""

    networks: tuple[IpNetwork, ...]

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> AllowList:
        return cls(tuple(parse_allow(entries)))

    def allows(self, host: str) -> bool:
        """True when ``host`` (a peer's address as the socket reports it; IPv4-mapped IPv6
        counts as its IPv4 address) is in one of the networks."""
        ip = ip_of(host)
        return ip is not None and any(ip.version == n.version and ip in n
                                      for n in self.networks)
