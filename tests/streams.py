"""Connected socket pairs for driving a media session as Asterisk does.

The media plane's frame clock writes and reads each call's socket without blocking, so a
session needs a real socket: a Unix ``socketpair`` gives one without a port, and works under
trio's autojump clock (the kernel moves the bytes at once, so the run loop never idles on them).
"""

from __future__ import annotations

import trio


def socket_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """(Asterisk's end, the sidecar's end)."""
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)
