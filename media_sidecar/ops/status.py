"""How a plane tells ``agi-voice serve`` where it is: one line per event on an inherited pipe.

``agi-voice serve`` (the supervisor, :mod:`fastagi_server.supervisor`) starts each plane with
the write end of a pipe (``--status-fd N``). The plane writes:

- ``ready``: it can do its job (the media plane: models loaded, AudioSocket and the control
  link listening; the control plane: FastAGI listening). The supervisor restarts a plane only
  if it died after this line; one that dies before it is a fatal start-up error for ``serve``.
- ``fatal <one line>``: why it cannot start (a port in use, a model that will not load); it
  exits non-zero right after. The supervisor prints this line, so it appears once.
- ``reloaded`` / ``reload-failed <one line>``: the answer to a SIGHUP.

Readiness is something the plane states, not something read from its log or guessed with a
sleep; a plane that dies closes the pipe, so nobody waits on a dead plane. Each line is one
``write`` shorter than PIPE_BUF, so lines never interleave. This module is the contract of
both sides (the control plane imports it; see STYLE.md on shared contracts).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import sys

log = logging.getLogger("agi_voice.status")

READY = "ready"
FATAL = "fatal"
RELOADED = "reloaded"
RELOAD_FAILED = "reload-failed"
KINDS = frozenset({READY, FATAL, RELOADED, RELOAD_FAILED})
MAX_LINE = 480
"""Characters of text in one status line (the whole line stays below PIPE_BUF, 512 on POSIX)."""
SUPERVISOR_ENV = "AGI_VOICE_SUPERVISOR_PID"
"""Set by the supervisor in each plane's environment: the pid the plane's parent must be."""
_PR_SET_PDEATHSIG = 1


class StartupError(Exception):
    """A fatal start-up error. Its text is the one line printed instead of a traceback."""


def listen_error(what: str, host: str, port: int, exc: OSError) -> StartupError:
    """The one line for a listener that cannot bind: ``cannot listen on H:P for WHAT: why``."""
    why = "address already in use" if exc.errno == errno.EADDRINUSE else (
        exc.strerror or str(exc))
    return StartupError(f"cannot listen on {host}:{port} for {what}: {why}")


def find_startup_error(exc: BaseException) -> StartupError | None:
    """The :class:`StartupError` in ``exc`` or in the exception groups it is nested in."""
    if isinstance(exc, StartupError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_startup_error(inner)
            if found is not None:
                return found
    return None


def startup_failure_line(exc: BaseException) -> str:
    """The one line a plane reports for ``exc`` raised before it was ready: a
    :class:`StartupError`'s own text, else the innermost exception, named."""
    err = find_startup_error(exc)
    if err is not None:
        return str(err)
    leaf = exc
    while isinstance(leaf, BaseExceptionGroup) and leaf.exceptions:
        leaf = leaf.exceptions[0]
    return f"start-up failed: {type(leaf).__name__}: {leaf} (run with -v for the traceback)"


def one_line(text: str) -> str:
    """``text`` on one line, cut to :data:`MAX_LINE` characters."""
    return " ".join(text.split())[:MAX_LINE]


class StatusPipe:
    """The plane's end: writes status lines to ``fd`` (None: not supervised, nothing is
    written). A supervisor that is gone (EPIPE) is not an error of the plane."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    @property
    def supervised(self) -> bool:
        return self.fd is not None

    def send(self, kind: str, text: str = "") -> None:
        if self.fd is None:
            return
        line = f"{kind} {one_line(text)}".rstrip() + "\n"
        try:
            os.write(self.fd, line.encode("utf-8", "replace"))
        except OSError as exc:  # the supervisor died: its planes follow (die_with_parent)
            log.debug("status line %r not sent: %s", kind, exc)

    def ready(self) -> None:
        self.send(READY)

    def reloaded(self, ok: bool, error: str = "") -> None:
        self.send(RELOADED if ok else RELOAD_FAILED, error)

    def fatal(self, plane: str, text: str) -> None:
        """Report a fatal start-up error: to the supervisor, which prints it, or (alone) as
        ``agi-voice <plane>: <text>`` on stderr. Either way one line."""
        if self.fd is None:
            print(f"agi-voice {plane}: {one_line(text)}", file=sys.stderr, flush=True)
        else:
            self.send(FATAL, text)


def parse_status(line: bytes | str) -> tuple[str, str] | None:
    """``(kind, text)`` of one status line, or None for a line that is not one."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    kind, _, text = line.strip().partition(" ")
    return (kind, text) if kind in KINDS else None


def die_with_parent() -> None:
    """A supervised plane: get SIGTERM (a drain) when the supervisor dies, even by SIGKILL
    (Linux ``PR_SET_PDEATHSIG``; elsewhere nothing). If the supervisor died before this call,
    the parent is no longer the one :data:`SUPERVISOR_ENV` names: drain now."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        return
    expected = os.environ.get(SUPERVISOR_ENV, "")
    if expected.isdigit() and os.getppid() != int(expected):
        os.kill(os.getpid(), signal.SIGTERM)
