"""The asyncio shell around :mod:`fastagi_server.agi.protocol`: one FastAGI connection.

It only moves bytes: the request block goes through :class:`EnvParser`, replies through
:class:`ResponseReader`, and every command line is built by the protocol helpers. It replaces
panoramisk's ``fast_agi.Application`` handler, whose defects this shell avoids
(telephony.md D.2): EOF before the blank line is an error, never a busy loop (defect 2);
``HANGUP`` lines and multi-line 520 blocks never desynchronise replies (defects 4, 5); a
``HANGUP`` in the same read as the request block is kept (defect 6); EOF while waiting for a
reply raises :class:`AgiConnectionClosed` (defect 7).

Commands are never pipelined: writing while STREAM FILE or EXEC runs interrupts them and
suppresses their reply (telephony.md B.3), so :meth:`AgiConnection.command` holds a lock from
write to reply.
"""

from __future__ import annotations

import asyncio
import logging

from fastagi_server.agi.protocol import (
    DEFAULT_MAX_ENV_BYTES,
    AgiConnectionClosed,
    AgiProtocolError,
    AgiRequest,
    AgiTimeout,
    EnvParser,
    HangupNotice,
    Response,
    ResponseReader,
    StrayLine,
    cmd_answer,
    cmd_channel_status,
    cmd_exec,
    cmd_get_full_variable,
    cmd_get_variable,
    cmd_hangup,
    cmd_set_variable,
    cmd_verbose,
    raise_for,
)

__all__ = ["AgiConnection"]

log = logging.getLogger(__name__)

READ_CHUNK = 65536
CLOSE_TIMEOUT = 1.0


class AgiConnection:
    """One FastAGI session over an asyncio stream pair.

    Call :meth:`read_env` once, then :meth:`command` (or the wrappers) one at a time from any
    number of tasks; the lock serialises them. :attr:`hung_up` becomes True as soon as a
    ``HANGUP`` line has been read (it is read while waiting for a reply or in
    :meth:`wait_hangup`; a ``HANGUP`` sent while nobody reads stays in the socket until then).

    A command that times out or is cancelled after it was written leaves its reply in flight:
    the connection is then marked desynchronised and later commands raise
    :class:`AgiProtocolError` (close the connection; Asterisk continues the dialplan).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_env_bytes: int = DEFAULT_MAX_ENV_BYTES,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._env = EnvParser(max_bytes=max_env_bytes)
        self._replies = ResponseReader()
        self._lock = asyncio.Lock()
        self._hung_up = False
        self._eof = False
        self._desync: str | None = None
        self._pending: list[Response] = []
        self.request: AgiRequest | None = None

    @property
    def hung_up(self) -> bool:
        """True once Asterisk sent ``HANGUP`` (caller gone, soft hangup, or AMI Redirect)."""
        return self._hung_up

    @property
    def closed(self) -> bool:
        """True once EOF was read from Asterisk."""
        return self._eof

    async def read_env(self, timeout: float) -> AgiRequest:  # noqa: ASYNC109
        """Read the ``agi_*`` block and return the parsed :class:`AgiRequest`.

        Raises :class:`AgiTimeout` if the blank line has not arrived within ``timeout``
        seconds, :class:`AgiConnectionClosed` on EOF before it (a health check or port scan),
        and :class:`AgiProtocolError` for a malformed or oversized block. Cancellation leaves
        the connection unusable; close it.
        """
        if self.request is not None:
            return self.request
        env: dict[str, str] | None = None
        try:
            async with asyncio.timeout(timeout):
                while env is None:
                    data = await self._reader.read(READ_CHUNK)
                    if not data:
                        self._eof = True
                        raise AgiConnectionClosed(
                            f"connection closed after {self._env.bytes_received} bytes, before "
                            "the blank line ending the AGI environment"
                        )
                    env = self._env.feed(data)
        except TimeoutError:
            raise AgiTimeout(
                f"no complete AGI environment within {timeout:g} s "
                f"({self._env.bytes_received} bytes received)"
            ) from None
        if self._env.replaced:
            log.warning("non-UTF-8 bytes replaced in AGI variables %s", self._env.replaced)
        self.request = AgiRequest.from_env(env)
        if self._env.leftover:
            self._replies.feed(self._env.leftover)
            self._collect()
        return self.request

    def _collect(self) -> None:
        """Move parsed events out of the reader: record HANGUP, keep replies for a waiter."""
        for ev in self._replies.events():
            if isinstance(ev, HangupNotice):
                if not self._hung_up:
                    log.debug("AGI HANGUP received")
                self._hung_up = True
            elif isinstance(ev, StrayLine):
                log.warning("ignoring unexpected AGI line %r", ev.text[:200])
            else:
                self._pending.append(ev)

    async def _read_more(self) -> None:
        data = await self._reader.read(READ_CHUNK)
        if not data:
            self._eof = True
            raise AgiConnectionClosed(
                "Asterisk closed the AGI connection" + (" after HANGUP" if self._hung_up else "")
            )
        self._replies.feed(data)
        self._collect()

    async def command(self, line: bytes, timeout: float | None = None) -> Response:  # noqa: ASYNC109
        """Send one command line (from ``protocol.build_command`` / ``cmd_*``) and return its
        reply, skipping and recording ``HANGUP`` lines before or after it.

        Returns every reply code as a :class:`Response`; use ``protocol.raise_for`` or the
        wrappers to turn 510/511/520 into exceptions. Raises :class:`AgiConnectionClosed` on
        EOF (also when writing after Asterisk closed), :class:`AgiTimeout` if no reply within
        ``timeout`` seconds (the connection is then desynchronised), and
        :class:`AgiProtocolError` if it was already desynchronised or the line is not one
        ``\\n``-terminated line. On cancellation after the write, the connection is marked
        desynchronised too.
        """
        if not line.endswith(b"\n") or b"\n" in line[:-1] or b"\r" in line or b"\x00" in line:
            raise AgiProtocolError(
                f"refusing to send {line[:60]!r}: a command must be one LF-terminated line "
                "without CR or NUL (build it with protocol.build_command)"
            )
        async with self._lock:
            if self._desync is not None:
                raise AgiProtocolError(f"AGI connection unusable: {self._desync}")
            if self._eof:
                raise AgiConnectionClosed("Asterisk already closed the AGI connection")
            # Replies nobody asked for (there are none with a non-pipelining client) are stale.
            for stale in self._pending:
                log.warning("discarding unsolicited AGI reply %r", stale.lines[0][:200])
            self._pending.clear()
            try:
                self._writer.write(line)
                await self._writer.drain()
            except ConnectionError as exc:
                self._eof = True
                raise AgiConnectionClosed(f"writing to AGI failed: {exc!r}") from exc
            verb = line[:40].decode("utf-8", "replace").strip()
            try:
                async with asyncio.timeout(timeout):
                    while not self._pending:
                        await self._read_more()
            except TimeoutError:
                self._desync = f"no reply to {verb!r} within {timeout:g} s"
                raise AgiTimeout(self._desync) from None
            except asyncio.CancelledError:
                self._desync = f"cancelled while waiting for the reply to {verb!r}"
                raise
            except AgiProtocolError as exc:
                self._desync = str(exc)
                raise
            return self._pending.pop(0)

    async def wait_hangup(self) -> None:
        """Read while idle until ``HANGUP`` or EOF (returns at once if already hung up).

        Holds the command lock while reading, so commands wait until it returns: bound it with
        ``asyncio.timeout``. Cancellation is safe (no command is in flight). A reply arriving
        while idle is logged and dropped. Raises nothing on EOF (:attr:`closed` is then True).
        """
        async with self._lock:
            try:
                while not self._hung_up:
                    await self._read_more()
            except AgiConnectionClosed:
                return

    async def close(self) -> None:
        """Close the socket (Asterisk then sets ``AGISTATUS=SUCCESS`` and continues the
        dialplan). Waits at most 1 s for the transport to close; never raises OSError."""
        if self._writer.is_closing():
            return
        self._writer.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._writer.wait_closed()
        except (OSError, TimeoutError):
            pass

    # ------------------------------------------------------------------ wrappers

    async def answer(self) -> None:
        """ANSWER. Raises ``DeadChannel`` (511) after a hangup; takes ~0.5 s on real Asterisk
        (it waits for first media)."""
        raise_for(await self.command(cmd_answer()))

    async def get_variable(self, name: str) -> str | None:
        """GET VARIABLE: the value, or None when unset. Works on a dead channel. The value is
        at most 1023 characters and not escaped by Asterisk (see ``get_full_variable``)."""
        resp = raise_for(await self.command(cmd_get_variable(name)))
        return resp.data if resp.result == "1" else None

    async def get_full_variable(self, expr: str) -> str | None:
        """GET FULL VARIABLE: the evaluated ``${...}`` expression, or None (result=0)."""
        resp = raise_for(await self.command(cmd_get_full_variable(expr)))
        return resp.data if resp.result == "1" else None

    async def set_variable(self, name: str, value: str) -> None:
        """SET VARIABLE (allowed on a dead channel). Raises ``UnsafeValueError`` for CR/LF/NUL
        in ``value`` or a bad ``name`` before sending anything."""
        raise_for(await self.command(cmd_set_variable(name, value)))

    async def exec(self, app: str, options: str | None = None) -> int:
        """EXEC ``app`` with ``options`` as one token; return the application's result
        (0 ok, -1 failure/hangup, -2 unknown application). Blocks until the application
        returns (``EXEC AudioSocket`` returns when the sidecar releases the call)."""
        resp = raise_for(await self.command(cmd_exec(app, options)))
        result = resp.result_int
        if result is None:
            raise AgiProtocolError(f"EXEC reply without a numeric result: {resp.lines[0]!r}")
        return result

    async def verbose(self, msg: str, level: int = 1) -> None:
        raise_for(await self.command(cmd_verbose(msg, level)))

    async def channel_status(self) -> int:
        """CHANNEL STATUS: 6 Up, 4 Ring, ... Raises ``DeadChannel`` after a hangup."""
        resp = raise_for(await self.command(cmd_channel_status()))
        result = resp.result_int
        if result is None:
            raise AgiProtocolError(f"CHANNEL STATUS reply without a result: {resp.lines[0]!r}")
        return result

    async def hangup(self) -> None:
        """HANGUP the channel (the AGI command). Raises ``DeadChannel`` if already dead."""
        raise_for(await self.command(cmd_hangup()))
