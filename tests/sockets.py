"""A process's TCP sockets as the kernel sees them, from /proc (Linux only).

The fault tests assert that no socket is left in CLOSE-WAIT after a fault: the peer closed, and
this side never closed its end (peers' trackers have Asterisk frozen on exactly that).
:func:`tcp_sockets` lists the sockets a process holds open, by matching the inodes of its
``/proc/<pid>/fd`` links (``socket:[<inode>]``) against the rows of ``/proc/<pid>/net/tcp`` and
``tcp6`` (the process's network namespace), so sockets of other processes on the host never
count. :func:`close_wait` keeps the CLOSE-WAIT ones; :func:`assert_no_close_wait` allows a
short grace for a close that is already on its way (a socket whose peer closed a moment ago is
in CLOSE-WAIT until its task runs ``close``; one still there seconds later is the bug).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK",
    "0A": "LISTEN", "0B": "CLOSING", "0C": "NEW_SYN_RECV",
}  # fmt: skip
"""``st`` column of /proc/net/tcp (include/net/tcp_states.h)."""

DEFAULT_GRACE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One TCP socket a process holds: addresses as ``host:port``, the state's name."""

    local: str
    remote: str
    state: str
    inode: int

    @property
    def local_port(self) -> int:
        return int(self.local.rsplit(":", 1)[1])

    @property
    def remote_port(self) -> int:
        return int(self.remote.rsplit(":", 1)[1])


def _address(field: str) -> str:
    """``0100007F:1F90`` (tcp) or the 32-hex-digit form (tcp6) -> ``127.0.0.1:8080``.

    The kernel prints the address as host-order 32-bit words in hex: each 4-byte group is
    little-endian on x86 and every other little-endian host.
    """
    hexaddr, hexport = field.split(":")
    raw = bytes.fromhex(hexaddr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if socket.htonl(1) == 1:  # big-endian host: already in network order
        words = raw
    host = str(ipaddress.ip_address(words))
    return f"{host}:{int(hexport, 16)}" if len(raw) == 4 else f"[{host}]:{int(hexport, 16)}"


def socket_inodes(pid: int | None = None) -> set[int]:
    """Inodes of the sockets ``pid`` (default: this process) has open. A descriptor that
    closes while the directory is read is skipped."""
    fd_dir = Path(f"/proc/{pid or os.getpid()}/fd")
    out: set[int] = set()
    for entry in fd_dir.iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def tcp_sockets(pid: int | None = None) -> list[TcpSocket]:
    """Every IPv4 and IPv6 TCP socket ``pid`` (default: this process) holds open."""
    pid = pid or os.getpid()
    mine = socket_inodes(pid)
    out: list[TcpSocket] = []
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        try:
            lines = path.read_text().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        for line in lines:
            cols = line.split()
            inode = int(cols[9])
            if inode in mine:
                out.append(TcpSocket(_address(cols[1]), _address(cols[2]),
                                     TCP_STATES.get(cols[3], cols[3]), inode))
    return out


def close_wait(pid: int | None = None) -> list[TcpSocket]:
    """The sockets of ``pid`` (default: this process) in CLOSE-WAIT."""
    return [s for s in tcp_sockets(pid) if s.state == "CLOSE_WAIT"]


_before_this_test: set[int] = set()
"""Inodes of this process's sockets already in CLOSE-WAIT when the current test began
(:func:`mark_test_start`): an earlier test's leak, not this test's fault."""


def mark_test_start() -> list[TcpSocket]:
    """Remember this process's CLOSE-WAIT sockets now (an autouse fixture calls it before each
    end-to-end test, whose calls run in this process); returns them, so the fixture can name
    an earlier test's leak without failing this one for it."""
    global _before_this_test
    found = close_wait()
    _before_this_test = {s.inode for s in found}
    return found


def assert_no_close_wait(pid: int | None = None,
                         grace: float = DEFAULT_GRACE_SECONDS) -> None:
    """Fail (AssertionError listing them) when ``pid`` still has CLOSE-WAIT sockets after
    ``grace`` seconds of real time. Blocking: from trio, run it in a worker thread
    (``trio.to_thread.run_sync``); it polls every 50 ms and returns as soon as there are none.
    For this process, sockets already in CLOSE-WAIT when the test began are not this test's
    (see :func:`mark_test_start`).
    """
    deadline = time.monotonic() + grace
    while True:
        left = [s for s in close_wait(pid)
                if pid not in (None, os.getpid()) or s.inode not in _before_this_test]
        if not left:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{len(left)} socket(s) of pid {pid or os.getpid()} in CLOSE-WAIT after "
                f"{grace:.1f} s: " + ", ".join(f"{s.local} <- {s.remote}" for s in left))
        time.sleep(0.05)
