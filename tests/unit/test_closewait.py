"""tests/sockets.py: CLOSE-WAIT sockets of a process, found from /proc by inode."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from tests.sockets import _address, assert_no_close_wait, close_wait, tcp_sockets


def _pair(family: int, host: str) -> tuple[socket.socket, socket.socket, socket.socket]:
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname()[:2])
    server, _ = listener.accept()
    return listener, client, server


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"),
                                              (socket.AF_INET6, "::1")])
def test_a_peer_close_leaves_our_end_in_close_wait_until_we_close_it(family, host):
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    listener, client, server = _pair(family, host)
    port, client_port = server.getsockname()[1], client.getsockname()[1]
    try:
        states = sorted(s.state for s in tcp_sockets() if s.local_port == port)
        assert states == ["ESTABLISHED", "LISTEN"]  # the accepted socket and the listener
        assert not close_wait()
        client.close()  # FIN from the peer: our accepted socket is now in CLOSE-WAIT
        (left,) = [s for s in close_wait() if s.local_port == port]
        assert (left.remote_port, left.state) == (client_port, "CLOSE_WAIT")
        with pytest.raises(AssertionError, match="CLOSE-WAIT"):
            assert_no_close_wait(grace=0.1)
        server.close()
        assert_no_close_wait(grace=0.1)
    finally:
        for s in (listener, client, server):
            s.close()


def test_sockets_of_another_process_are_found_by_its_pid():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import socket, sys
        s = socket.create_connection(("127.0.0.1", {listener.getsockname()[1]}))
        print(s.getsockname()[1], flush=True)
        sys.stdin.read()  # hold the socket open, never close it, until told to exit
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        child_port = int(child.stdout.readline())
        conn, _ = listener.accept()
        conn.close()  # we close: the child's end is in CLOSE-WAIT (it never closes)
        (left,) = close_wait(child.pid)
        assert left.local_port == child_port
        assert not [s for s in close_wait() if s.local_port == child_port]  # not ours
        with pytest.raises(AssertionError, match=f"pid {child.pid}"):
            assert_no_close_wait(child.pid, grace=0.1)
    finally:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.wait(10)
        child.stdout.close()
        listener.close()


def test_addresses_decode_as_the_kernel_prints_them():
    assert _address("0100007F:1F90") == "127.0.0.1:8080"
    assert _address("00000000000000000000000001000000:0050") == "[::1]:80"


def test_a_socket_left_before_the_test_began_is_not_the_tests_fault():
    # an earlier test's leak must not fail every fault test after it (tests/e2e/conftest.py
    # marks each test's start); a new one still fails the check
    from tests.sockets import mark_test_start

    old = _pair(socket.AF_INET, "127.0.0.1")
    new = None
    try:
        old[1].close()  # the earlier test's socket: in CLOSE-WAIT, never closed
        assert [s.inode for s in mark_test_start()] == [s.inode for s in close_wait()]
        assert_no_close_wait(grace=0.1)
        new = _pair(socket.AF_INET, "127.0.0.1")
        new[1].close()  # this test's own
        with pytest.raises(AssertionError, match="1 socket"):
            assert_no_close_wait(grace=0.1)
    finally:
        for trio_ in (old, new or ()):
            for s in trio_:
                s.close()
        mark_test_start()
