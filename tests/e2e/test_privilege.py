"""Least privilege at the two ports the product listens on for its own planes and Asterisk.

- the control link's shared secret (media_sidecar.protocol.control_auth) over real loopback
  WebSockets: a FastAGI side with the secret places calls; a wrong or missing secret, or a raw
  client that skips the handshake, gets the link closed (1008) with a log line and no call;
- a media worker refuses to bind a non-loopback control address without a secret (config
  check: binding a non-loopback address is not possible in CI);
- FastAGI closes a connection from an address outside ``fastagi.allow`` without a byte.
"""

from __future__ import annotations

import dataclasses
import logging
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from fastagi_server.control_client import ControlClient
from fastagi_server.emulator.caller import AgentQuiet, CallerScript
from media_sidecar.config.addresses import AllowList, is_loopback_host
from media_sidecar.config.loader import ConfigError, load_config, parse_config
from media_sidecar.config.schema import Config, Listen
from media_sidecar.ops.control_secret import check_bind, ensure_generated
from media_sidecar.ops.status import StartupError
from media_sidecar.protocol import control as c
from media_sidecar.protocol import control_auth as auth
from media_sidecar.server.control_server import ControlHub, serve_control
from media_sidecar.server.registry import CallRegistry
from tests.e2e.stack import FastAgiThread, open_stack

pytestmark = pytest.mark.e2e

BASE = load_config()
SECRET = "s3cret-for-the-privilege-test-0123456789"


def with_secret_env(cfg: Config, name: str) -> Config:
    return dataclasses.replace(cfg, service=dataclasses.replace(cfg.service,
                                                                control_secret_env=name))


# -- the handshake ---------------------------------------------------------------------------


async def test_a_call_goes_through_an_authenticated_control_link(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PRIV_CONTROL_SECRET", SECRET)
    caplog.set_level(logging.INFO)
    async with open_stack(with_secret_env(BASE, "PRIV_CONTROL_SECRET"),
                          str(tmp_path / "r.jsonl")) as stack:
        call = await stack.call(CallerScript().dtmf("1", at=AgentQuiet(300), via="ami"),
                                seconds=30)
        (client,) = stack.fastagi.server.control.clients
        assert client.secret == SECRET
    assert call.variables["AI_STATUS"] == "TRANSFERRED"
    assert "control link requires the shared secret (PRIV_CONTROL_SECRET)" in caplog.text
    assert SECRET not in caplog.text


async def _sidecar_hub(nursery: trio.Nursery, secret: str) -> tuple[ControlHub, int]:
    cfg = dataclasses.replace(BASE, sidecar=dataclasses.replace(
        BASE.sidecar, control=Listen("127.0.0.1", 0)))
    hub = ControlHub(CallRegistry(cfg), secret=secret)
    port = await nursery.start(serve_control, hub, "127.0.0.1", 0)
    return hub, port


async def test_a_wrong_secret_closes_the_link_and_is_logged_on_both_sides(caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        hub, port = await _sidecar_hub(nursery, SECRET)
        cfg = dataclasses.replace(BASE, fastagi=dataclasses.replace(
            BASE.fastagi, listen=Listen("127.0.0.1", 0),
            control_url=f"ws://127.0.0.1:{port}/control"),
            sidecar=dataclasses.replace(BASE.sidecar, workers=1))
        for given, expect in (("another-secret-of-enough-length", "rejected the control link "
                               "secret (PRIV_WRONG differs)"),
                              ("", "requires the control link secret and PRIV_WRONG is not set")):
            monkeypatch.setenv("PRIV_WRONG", given)
            fastagi = FastAgiThread(with_secret_env(cfg, "PRIV_WRONG"))  # reads it here
            await fastagi.start()
            try:
                up = await trio.to_thread.run_sync(
                    fastagi.call, fastagi.server.control.wait_connected(1.5))
                assert up is False
                assert expect in caplog.text
            finally:
                await fastagi.stop()
        assert hub.rejected >= 1
        assert "refused: wrong control link secret" in caplog.text
        assert not hub._links
        nursery.cancel_scope.cancel()
    assert SECRET not in caplog.text


@asynccontextmanager
async def raw_link(port: int) -> AsyncIterator[WebSocketConnection]:
    """A bare WebSocket client to a worker's control port."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/control") as ws:
        try:
            yield ws
        finally:
            # trio-websocket 0.12 leaves a client's TCP stream open when the server closed the
            # WebSocket (it waits for the server's TCP close, then never closes its own end)
            await ws._stream.aclose()


async def test_a_client_that_skips_the_handshake_is_closed_before_any_offer(caplog):
    async with trio.open_nursery() as nursery:
        hub, port = await _sidecar_hub(nursery, SECRET)
        async with raw_link(port) as ws:
            await ws.send_message(c.encode(c.Hello(role="fastagi")))
            challenge = auth.decode(await ws.get_message())
            assert isinstance(challenge, auth.Challenge)
            # no answer: straight to an offer
            await ws.send_message(c.encode(c.Offer(uuid="0" * 32, assistant="receptionist")))
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1008
        # a right MAC for the wrong nonce (a replayed answer) is refused too
        async with raw_link(port) as ws:
            await ws.send_message(c.encode(c.Hello(role="fastagi")))
            auth.decode(await ws.get_message())
            replay = auth.answer(SECRET, auth.Challenge(auth.new_nonce()))
            await ws.send_message(auth.encode(replay))
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1008
        # the right answer gets the worker's proof, then its hello
        async with raw_link(port) as ws:
            await ws.send_message(c.encode(c.Hello(role="fastagi")))
            challenge = auth.decode(await ws.get_message())
            assert isinstance(challenge, auth.Challenge)
            response = auth.answer(SECRET, challenge)
            await ws.send_message(auth.encode(response))
            proof = auth.decode(await ws.get_message())
            assert isinstance(proof, auth.Proof)
            assert auth.verify(auth.server_mac(SECRET, challenge.nonce, response.nonce),
                               proof.mac)
            assert isinstance(c.decode(await ws.get_message()), c.Hello)
        assert hub.registry.pending_offers == 0 and hub.rejected == 2
        nursery.cancel_scope.cancel()
    assert SECRET not in caplog.text


async def test_a_worker_on_a_remote_address_must_authenticate_itself(caplog):
    """The FastAGI side refuses a worker it must not trust blindly (a non-loopback URL) that
    did not challenge it: anyone could be listening there. (The loopback worker here stands
    in for a remote one.)"""
    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        _hub, port = await _sidecar_hub(nursery, "")
        cfg = dataclasses.replace(BASE, fastagi=dataclasses.replace(
            BASE.fastagi, listen=Listen("127.0.0.1", 0),
            control_url=f"ws://127.0.0.1:{port}/control"),
            sidecar=dataclasses.replace(BASE.sidecar, workers=1))
        fastagi = FastAgiThread(cfg)
        client: ControlClient = fastagi.server.control.clients[0]
        client.require_auth = True
        await fastagi.start()
        try:
            up = await trio.to_thread.run_sync(
                fastagi.call, fastagi.server.control.wait_connected(1.5))
        finally:
            await fastagi.stop()
        assert up is False
        assert "did not ask for the control link secret" in caplog.text
        nursery.cancel_scope.cancel()


# -- the bind refusal --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "media.example"])
def test_a_worker_refuses_a_non_loopback_control_address_without_a_secret(host):
    with pytest.raises(StartupError) as info:
        check_bind(BASE, host, "")
    assert "AGI_VOICE_CONTROL_SECRET" in str(info.value)
    assert "service.control_secret_env" in str(info.value) and host in str(info.value)
    check_bind(BASE, host, SECRET)  # with one it may


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_secret(host):
    assert is_loopback_host(host)
    check_bind(BASE, host, "")


def test_a_short_secret_is_refused():
    with pytest.raises(StartupError, match="shorter than 16"):
        check_bind(BASE, "127.0.0.1", "short")


async def test_serve_control_refuses_to_start_on_a_wildcard_address_without_a_secret(
        monkeypatch):
    monkeypatch.delenv("AGI_VOICE_CONTROL_SECRET", raising=False)
    hub = ControlHub(CallRegistry(BASE))
    with pytest.raises(StartupError, match="sidecar.control.host 0.0.0.0 is not a loopback"):
        await serve_control(hub, "0.0.0.0", 0)


def test_the_generated_secret_is_private_and_kept(tmp_path, caplog):
    path = tmp_path / "run" / "agi-voice-4573.control-secret"
    first = ensure_generated(path)
    assert len(first) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_generated(path) == first  # later runs reuse it
    path.chmod(0o644)
    assert ensure_generated(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and "readable by others" in caplog.text
    assert first not in caplog.text


def test_control_secret_env_must_be_a_variable_name():
    with pytest.raises(ConfigError, match="service.control_secret_env"):
        parse_config("service: {control_secret_env: 'not a name'}\n"
                     "assistants: {a: {provider: echo}}\n", "t.yaml")


# -- FastAGI allow list ------------------------------------------------------------------------


def test_allow_list_matches_addresses_networks_and_mapped_ipv6():
    allow = AllowList.from_entries(["10.1.2.3, 192.168.0.0/16", "::1"])
    assert allow.allows("10.1.2.3") and allow.allows("192.168.9.9") and allow.allows("::1")
    assert allow.allows("::ffff:192.168.1.1")  # a dual-stack listener reports these
    assert not allow.allows("10.1.2.4") and not allow.allows("127.0.0.1")
    assert not allow.allows("") and not allow.allows("garbage")
    default = AllowList.from_entries(BASE.fastagi.allow)
    assert default.allows("127.0.0.1") and default.allows("127.9.9.9") and default.allows("::1")
    assert not default.allows("192.168.1.1")


def test_a_bad_allow_entry_names_its_key():
    with pytest.raises(ConfigError) as info:
        parse_config("fastagi: {allow: ['127.0.0.1', 'asterisk.lan']}\n"
                     "assistants: {a: {provider: echo}}\n", "t.yaml")
    assert "fastagi.allow[1]" in str(info.value) and "asterisk.lan" in str(info.value)


async def test_fastagi_closes_an_address_not_allowed_without_a_byte(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    cfg = dataclasses.replace(BASE, fastagi=dataclasses.replace(
        BASE.fastagi, allow=("10.0.0.0/8",)))
    async with open_stack(cfg, str(tmp_path / "r.jsonl")) as stack:
        for _ in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", stack.agi_port)
            with trio.fail_after(5):
                try:
                    await stream.send_all(b"agi_network: yes\nagi_request: agi://x/agent\n\n")
                    got = await stream.receive_some(4096)
                except trio.BrokenResourceError:  # reset before or while we wrote
                    got = b""
            assert got == b""  # not a single byte came back
            await stream.aclose()
        assert stack.fastagi.server.refused == 3
        assert stack.fastagi.server.active == 0
    lines = [r.getMessage() for r in caplog.records if "not in fastagi.allow" in r.getMessage()]
    assert lines == ["FastAGI connection from 127.0.0.1 refused: not in fastagi.allow"]


async def test_fastagi_serves_an_allowed_address(tmp_path):
    cfg = dataclasses.replace(BASE, fastagi=dataclasses.replace(
        BASE.fastagi, allow=("10.0.0.0/8", "127.0.0.1/32")))
    async with open_stack(cfg, str(tmp_path / "r.jsonl")) as stack:
        call = await stack.call(CallerScript().dtmf("1", at=AgentQuiet(300), via="ami"),
                                seconds=30)
        assert stack.fastagi.server.refused == 0
    assert call.variables["AI_STATUS"] == "TRANSFERRED"
