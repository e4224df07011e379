"""Whatever a caller can influence is data, never identity: the FastAGI request path.

Asterisk writes caller ID (number and name), dnid and rdnis raw into the request block, so a
caller name holding a line break forges ``agi_*`` lines (seen on 22.10.1: a forged
``agi_channel`` made pressing 1 redirect another live call). These tests send the block exactly
as Asterisk writes it (the emulator's ``env_block``, checked byte for byte against the A1
capture elsewhere) and check that the parser, the identity read from Asterisk and the handler
believe only what Asterisk itself says.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastagi_server.agi.connection import AgiConnection
from fastagi_server.agi.handler import AgiCallHandler
from fastagi_server.agi.identity import (
    CallIdentity,
    IdentityError,
    ai_var_names,
    cut_short_by,
    decode_value,
    disagreements,
    encoded,
    identity_expression,
    parse_identity,
    parse_vars,
    tamper_report,
    vars_expression,
)
from fastagi_server.agi.protocol import (
    AgiEnv,
    AgiProtocolError,
    AgiRequest,
    EnvAnomaly,
    EnvParser,
    log_safe,
)
from fastagi_server.emulator.channel import ChannelSpec, EmulatedChannel, env_block, parse_args
from media_sidecar.config.loader import load_config

REQUEST = "agi://127.0.0.1:4573/agent?assistant=sales"
REAL = ChannelSpec(
    channel="PJSIP/mallory-00000002",
    uniqueid="1795267856.7",
    linkedid="1795267856.6",
    callerid="5550666",
    calleridname="Mallory",
    dnid="7000",
    script="agent?assistant=sales",
    args=("AI_VAR_ACCOUNT=42", "second arg"),
)
VICTIM = "Local/victim-00000001;1"
R511 = b"511 Command Not Permitted on a dead channel or intercept routine\n"
FORGED_TAIL = (
    "\nagi_callingpres: 0\nagi_callingani2: 0\nagi_callington: 0\nagi_callingtns: 0"
    "\nagi_dnid: 911\nagi_rdnis: unknown\nagi_context: admin\nagi_extension: 999"
    "\nagi_priority: 1\nagi_enhanced: 0.0\nagi_accountcode: \nagi_threadid: 1"
    "\nagi_arg_1: AI_ASSISTANT=nosuch"
)
HOSTILE_NAMES = {
    "forged channel": f"Mallory\nagi_channel: {VICTIM}",
    "forged arg": "x\nagi_arg_1: AI_ASSISTANT=nosuch",
    "forged uniqueid": "x\nagi_uniqueid: 1.1",
    "not an agi line": "x\nthis line is not agi_anything at all",
    "forged tail": "Mallory" + FORGED_TAIL,
    "forged script and query": (
        "x\nagi_network: no\nagi_network_script: agent?assistant=nosuch"
        "\nagi_request: agi://evil/agent?assistant=nosuch"
    ),
    "CR": f"Mallory\r\nagi_channel: {VICTIM}",
    "lone CR": "Mal\rlory",
    "NUL": "Mal\x00lory",
    "dialplan expression": "${CHANNEL}${SHELL(id)}",
    "arithmetic": "$[1+1]",
    "quotes": '"O\'Brien" \\ \\" <sip:x>',
    "2000 chars": "A" * 2000,
    "escape sequence": "\x1b[31mred\x1b[0m",
    "invalid UTF-8": b"Zo\xeb \xff\xfe".decode("utf-8", "surrogateescape"),
}


def block(spec: ChannelSpec = REAL, *, raw_name: str | None = None) -> bytes:
    """The request block Asterisk 22.10.1 writes for ``spec`` (caller fields raw). ``raw_name``
    replaces the caller name and may hold a NUL (Asterisk's C strings cannot carry one; another
    peer could), which ``ChannelSpec`` refuses."""
    if raw_name is None:
        return env_block(spec, REQUEST)
    nul = "@@NUL@@"
    data = env_block(replace(spec, calleridname=raw_name.replace("\0", nul)), REQUEST)
    return data.replace(nul.encode(), b"\0")


def named(name: str, **changes: Any) -> ChannelSpec:
    """REAL with the caller name ``name`` and other ``changes``."""
    return replace(REAL, calleridname=name, **changes)


def parse(data: bytes) -> tuple[AgiRequest, EnvParser]:
    parser = EnvParser()
    env = parser.feed(data)
    assert env is not None, "the block did not end"
    return AgiRequest.from_env(env), parser


def asterisk_reads(spec: ChannelSpec, expr: str, variables: dict[str, str] | None = None) -> str:
    """What Asterisk's GET FULL VARIABLE returns for ``expr`` on this channel (the emulator's
    substitution, which follows pbx_substitute_variables_helper_full). Fails on an Asterisk
    warning unless the caller's own value caused it (``"):"`` makes BASE64_ENCODE's argument
    empty)."""
    ch = EmulatedChannel(spec if variables is None else replace(spec, variables=variables))
    value = ch.expand(expr)
    hostile = any(")" in v for v in (spec.callerid, spec.calleridname))
    assert hostile or ch.warnings == [], ch.warnings
    return value


def identity_of(spec: ChannelSpec, variables: dict[str, str] | None = None) -> CallIdentity:
    nonce = secrets.token_hex(8)
    return parse_identity(asterisk_reads(spec, identity_expression(nonce), variables), nonce)


# --------------------------------------------------------------------------- the parser


def test_the_real_block_has_no_anomalies() -> None:
    req, parser = parse(block())
    assert req.anomalies == () and parser.anomalies == [] and not req.tampered
    assert req.args == REAL.args
    assert (req.channel, req.uniqueid, req.calleridname) == (REAL.channel, REAL.uniqueid, "Mallory")


@pytest.mark.parametrize("name", list(HOSTILE_NAMES.values()), ids=list(HOSTILE_NAMES))
@pytest.mark.parametrize("args", [REAL.args, ()], ids=["with args", "no args"])
def test_a_hostile_caller_name_changes_no_identity_args_or_query(
    name: str, args: tuple[str, ...]
) -> None:
    req, _ = parse(block(replace(REAL, args=args), raw_name=name))
    assert req.channel == REAL.channel
    assert req.uniqueid == REAL.uniqueid
    assert req.args == args
    assert req.script == "agent" and dict(req.query) == {"assistant": "sales"}
    assert req.request == REQUEST
    assert req.env["agi_network"] == "yes"
    assert req.callerid == REAL.callerid  # written before the name: first value kept


@pytest.mark.parametrize("field", ["callerid", "dnid", "rdnis"])
def test_other_caller_fields_cannot_forge_either(field: str) -> None:
    changes: dict[str, Any] = {field: f"1\nagi_channel: {VICTIM}" + FORGED_TAIL}
    req, _ = parse(block(replace(REAL, args=(), **changes)))
    assert (req.channel, req.uniqueid, req.args) == (REAL.channel, REAL.uniqueid, ())
    assert dict(req.query) == {"assistant": "sales"}


def test_repeated_key_keeps_the_first_value_and_is_recorded() -> None:
    req, parser = parse(block(named(HOSTILE_NAMES["forged channel"])))
    assert req.channel == REAL.channel
    assert req.calleridname == "Mallory"  # the rest of the value is the forged line
    (anomaly,) = req.anomalies
    assert anomaly == EnvAnomaly(11, "duplicate", "agi_channel", VICTIM)
    assert parser.anomalies == [anomaly]
    assert req.tampered


def test_forged_argument_is_ignored_and_recorded() -> None:
    req, _ = parse(block(named(HOSTILE_NAMES["forged arg"], args=())))
    assert req.args == ()
    assert [(a.kind, a.key, a.text) for a in req.anomalies] == [
        ("misplaced_arg", "agi_arg_1", "AI_ASSISTANT=nosuch")
    ]


def test_forged_tail_leaves_the_real_arguments() -> None:
    req, _ = parse(block(named(HOSTILE_NAMES["forged tail"])))
    assert req.args == REAL.args
    kinds = {(a.kind, a.key) for a in req.anomalies}
    assert ("misplaced_arg", "agi_arg_1") in kinds
    assert ("duplicate", "agi_threadid") in kinds and ("duplicate", "agi_context") in kinds
    # fields written after the caller's are forgeable by first-wins: read from Asterisk
    assert req.context == "admin" and req.dnid == "911"


def test_a_line_that_is_not_agi_is_data_not_fatal() -> None:
    req, _ = parse(block(named(HOSTILE_NAMES["not an agi line"])))
    (anomaly,) = req.anomalies
    assert (anomaly.kind, anomaly.key, anomaly.text) == (
        "malformed",
        "",
        "this line is not agi_anything at all",
    )
    assert req.args == REAL.args


def test_invalid_utf8_is_replaced_and_reported() -> None:
    req, parser = parse(block(named(HOSTILE_NAMES["invalid UTF-8"])))
    assert req.calleridname == "Zo\ufffd \ufffd\ufffd"
    assert parser.replaced == ["agi_calleridname"] and req.anomalies == ()


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n", b"\x16\x03\x01\x02\x00\n\n"],
)
def test_a_first_line_that_is_not_agi_still_ends_the_connection(data: bytes) -> None:
    with pytest.raises(AgiProtocolError, match="malformed AGI environment line 1"):
        EnvParser().feed(data)


def test_size_limits_still_hold_with_garbage_lines() -> None:
    with pytest.raises(AgiProtocolError, match="exceeds 16384 bytes"):
        EnvParser().feed(b"agi_network: yes\n" + b"garbage\n" * 3000)
    with pytest.raises(AgiProtocolError, match="longer than 8192 bytes"):
        EnvParser().feed(b"agi_network: yes\n" + b"g" * 9000 + b"\n")


def test_block_without_threadid_takes_the_trailing_argument_run() -> None:
    env = EnvParser().feed(
        b"agi_network: yes\nagi_arg_1: early\nagi_channel: X\nagi_arg_1: a\nagi_arg_2: b\n"
        b"agi_arg_4: gap\n\n"
    )
    assert isinstance(env, AgiEnv)
    req = AgiRequest.from_env(env)
    assert req.args == ("a", "b")
    assert [(a.line, a.kind) for a in req.anomalies] == [(2, "misplaced_arg"), (6, "misplaced_arg")]
    assert AgiRequest.from_env(dict(env)).anomalies == ()  # a plain mapping carries none


def test_anomaly_descriptions_are_log_safe() -> None:
    req, _ = parse(block(raw_name="x\n\x1b[2Jagi_channel: a\rb\x00c\nagi_arg_1: " + "Z" * 500))
    text = "; ".join(a.describe() for a in req.anomalies)
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in text)
    assert "\\x1b" in text and "(500 chars)" in text
    assert log_safe("a\nb") == "'a\\nb'"


# --------------------------------------------------------------------------- identity read


def test_identity_expression_reads_everything_in_one_round_trip_without_warnings() -> None:
    nonce = secrets.token_hex(8)
    expr = identity_expression(nonce)
    assert "${BASE64_ENCODE(${CHANNEL}" + nonce + ")}" in expr
    assert len(expr.encode()) < 1024
    ch = EmulatedChannel(REAL)  # AI_ASSISTANT, AI_LANGUAGE, AI_VARS all unset
    reply = ch.expand(expr)
    assert ch.warnings == []
    ident = parse_identity(reply, nonce)
    assert ident == CallIdentity(
        channel=REAL.channel, uniqueid=REAL.uniqueid, linkedid="1795267856.6",
        callerid="5550666", calleridname="Mallory", dnid="7000", rdnis="", context="test",
        extension="100", accountcode="",
    )  # fmt: skip
    assert dict(ident.inputs) == {}


def test_the_old_read_made_asterisk_warn() -> None:
    ch = EmulatedChannel(REAL)
    assert ch.expand("${BASE64_ENCODE(${AI_ASSISTANT})}") == ""
    assert ch.warnings == ["func_base64.c: Syntax: BASE64_ENCODE(<data>) - missing argument!"]


def test_inputs_and_ai_vars_second_round_trip() -> None:
    variables = {
        "AI_ASSISTANT": "sales",
        "AI_VARS": " ACCOUNT , bad-name,EMPTY,MISSING,ACCOUNT",
        "AI_VAR_ACCOUNT": "42 )|\n(",
        "AI_VAR_EMPTY": "",
    }
    ident = identity_of(REAL, variables)
    assert dict(ident.inputs) == {"AI_ASSISTANT": "sales", "AI_VARS": variables["AI_VARS"]}
    names = ai_var_names(ident.inputs["AI_VARS"])
    assert names == ["ACCOUNT", "EMPTY", "MISSING"]
    nonce = secrets.token_hex(8)
    reply = asterisk_reads(REAL, vars_expression(nonce, names), variables)
    assert parse_vars(reply, nonce, names) == {"AI_VAR_ACCOUNT": "42 )|\n("}
    assert ai_var_names(",".join(f"V{i}" for i in range(40))) == [f"V{i}" for i in range(32)]


@pytest.mark.parametrize("name", list(HOSTILE_NAMES.values()), ids=list(HOSTILE_NAMES))
def test_asterisk_gives_the_hostile_name_verbatim(name: str) -> None:
    spec = named(name.replace("\x00", ""))
    ident = identity_of(spec)
    assert ident.channel == REAL.channel and ident.uniqueid == REAL.uniqueid
    expected = spec.calleridname.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    assert ident.calleridname == expected


def test_a_forged_reply_is_not_taken_for_asterisks() -> None:
    nonce = secrets.token_hex(8)
    real = asterisk_reads(REAL, identity_expression(nonce))
    forged = real.replace(nonce, "0123456789abcdef", 1)
    with pytest.raises(IdentityError, match="not Asterisk's"):
        parse_identity(forged, nonce)
    with pytest.raises(IdentityError, match="not Asterisk's"):
        parse_identity(real + "|eA==", nonce)
    with pytest.raises(IdentityError, match="no value"):
        parse_identity(None, nonce)
    # a forger without the nonce cannot make a value decode either
    fake = base64.b64encode(f"{VICTIM}".encode()).decode()
    assert decode_value(fake, nonce) is None


def test_a_value_asterisk_cuts_fails_the_read() -> None:
    # Asterisk cuts ${...} at a ':' outside parentheses after substituting the value: a name
    # with an unmatched ')' then ':' could show us only a harmless prefix. The nonce after the
    # value is then lost, so the read fails instead of returning the prefix.
    for name in ("Bob :) : hi", "Ma\n\nagi_threadid: 1):0:4"):
        spec = named(name)
        with pytest.raises(IdentityError, match="calleridname incomplete"):
            identity_of(spec)
    balanced = named("Smith (Sales): John")
    assert identity_of(balanced).calleridname == "Smith (Sales): John"


def test_missing_channel_fails_the_read() -> None:
    spec = replace(REAL, uniqueid="")
    with pytest.raises(IdentityError, match="channel name and uniqueid"):
        identity_of(spec)


def test_encoded_refuses_anything_but_a_plain_name() -> None:
    for bad in ("A}", "A${B}", "A B", "SHELL(id)x", ""):
        with pytest.raises(ValueError):
            encoded(bad, "0123456789abcdef")
    with pytest.raises(ValueError):
        encoded("CHANNEL", "not a nonce")


def test_a_blank_line_in_a_caller_value_means_the_block_was_cut() -> None:
    for name in ("x\n\nagi_threadid: 1\nagi_arg_1: AI_ASSISTANT=nosuch", "x\n", "x\n\r\ny"):
        spec = named(name)
        assert cut_short_by(identity_of(spec)) == ["calleridname"]
    for name in ("x\ny", "x\r\ny", "x\n y", "plain"):
        spec = named(name)
        assert cut_short_by(identity_of(spec)) == []


def test_disagreements_and_one_log_safe_report() -> None:
    name = HOSTILE_NAMES["forged channel"] + "\x1b[2J" + "Q" * 300
    spec = named(name)
    req, _ = parse(block(spec))
    ident = identity_of(spec)
    assert disagreements(req, ident) == [("calleridname", "Mallory", name)]
    report = tamper_report(req, ident)
    assert report is not None
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in report)
    assert "agi_channel repeated at line 11" in report and "calleridname" in report
    assert "trusting Asterisk" in report and "chars)" in report and len(report) < 600
    clean_req, _ = parse(block())
    assert tamper_report(clean_req, identity_of(REAL)) is None


# --------------------------------------------------------------------------- property


FRAGMENTS = st.sampled_from([
    "\n", "\r", "\n\n", "\r\n", ")", "(", ":", "|", "${CHANNEL}", "$[1+1]", '"', "\\",
    f"agi_channel: {VICTIM}", "agi_uniqueid: 1.1", "agi_arg_1: AI_ASSISTANT=nosuch",
    "agi_arg_2: x", "agi_threadid: 1", "agi_network_script: agent?assistant=nosuch",
    "agi_request: agi://evil/?assistant=nosuch", "200 result=1 (eA==)", "HANGUP",
    "agi_context: admin", "unknown",
])  # fmt: skip
CALLER_TEXT = st.lists(
    FRAGMENTS | st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\0")),
    max_size=8,
).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=CALLER_TEXT, number=CALLER_TEXT, args=st.sampled_from([(), REAL.args]))
def test_no_caller_name_or_number_changes_identity_args_or_query(
    name: str, number: str, args: tuple[str, ...]
) -> None:
    spec = named(name, callerid=number, args=args)
    req, _ = parse(block(spec))
    # channel, uniqueid and the query come before every caller-controlled field
    assert (req.channel, req.uniqueid) == (REAL.channel, REAL.uniqueid)
    assert dict(req.query) == {"assistant": "sales"} and req.script == "agent"
    try:
        ident = identity_of(spec)
    except IdentityError:
        return  # a value Asterisk cut: the handler refuses the call cleanly
    assert (ident.channel, ident.uniqueid) == (REAL.channel, REAL.uniqueid)
    assert ident.calleridname == ("" if name == "unknown" else name)
    if cut_short_by(ident):
        return  # the block ended inside a caller value: the handler refuses the call cleanly
    assert req.args == args


# --------------------------------------------------------------------------- the handler


class FakeAsterisk:
    """The Asterisk end of one FastAGI connection for the asyncio handler: answers
    GET FULL VARIABLE through the emulated channel and SET VARIABLE / CHANNEL STATUS like
    Asterisk. ``before_first_reply`` bytes are delivered after the first command is written
    and before its reply (forged lines racing the real reply)."""

    def __init__(self, spec: ChannelSpec, before_first_reply: bytes = b"", dead: bool = False):
        self.dead = dead
        self.channel = EmulatedChannel(spec)
        self.reader = asyncio.StreamReader()
        self.reader.feed_data(env_block(spec, REQUEST))
        self.inject = before_first_reply
        self.commands: list[list[str]] = []

    def write(self, data: bytes) -> None:
        argv = parse_args(data.decode("utf-8", "surrogateescape").rstrip("\n"))
        self.commands.append(argv)
        if self.inject:
            self.reader.feed_data(self.inject)
            self.inject = b""
        verb = " ".join(argv[:3]).upper()
        if self.dead:
            self.reader.feed_data(b"HANGUP\n" + R511)
        elif verb == "GET FULL VARIABLE":
            value = self.channel.expand(argv[3])
            self.reader.feed_data(f"200 result=1 ({value})\n".encode("utf-8", "surrogateescape"))
        elif verb.startswith("SET VARIABLE"):
            self.channel.set_variable(argv[2], argv[3])
            self.reader.feed_data(b"200 result=1\n")
        else:
            self.reader.feed_data(b"510 Invalid or unknown command\n")

    async def drain(self) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        self.reader.feed_eof()

    async def wait_closed(self) -> None:
        return None


def _handler() -> AgiCallHandler:
    return AgiCallHandler(load_config(), object(), object())  # type: ignore[arg-type]


def _run(coro_fn: Callable[[], object]) -> object:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def test_handler_trusts_asterisk_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    spec = named(HOSTILE_NAMES["forged channel"])
    peers: list[FakeAsterisk] = []

    async def main() -> CallIdentity:
        peer = FakeAsterisk(spec)
        peers.append(peer)
        conn = AgiConnection(peer.reader, peer)  # type: ignore[arg-type]
        req = await conn.read_env(1.0)
        return await _handler()._identify(conn, req)

    with caplog.at_level(logging.WARNING, logger="agi_voice.agi"):
        ident = _run(main)
    (peer,) = peers
    assert isinstance(ident, CallIdentity)
    assert ident.channel == REAL.channel and ident.calleridname == spec.calleridname
    assert len(peer.commands) == 1 and peer.channel.warnings == []
    (record,) = [r for r in caplog.records if r.name == "agi_voice.agi"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "agi_channel repeated" in message and "\\n" in message and "\n" not in message


def test_handler_reads_ai_vars_in_a_second_round_trip() -> None:
    variables = {"AI_VARS": "ACCOUNT,MISSING", "AI_VAR_ACCOUNT": "42", "AI_LANGUAGE": "de"}
    peers: list[FakeAsterisk] = []

    async def main() -> dict[str, str]:
        peer = FakeAsterisk(replace(REAL, variables=variables))
        peers.append(peer)
        conn = AgiConnection(peer.reader, peer)  # type: ignore[arg-type]
        req = await conn.read_env(1.0)
        handler = _handler()
        ident = await handler._identify(conn, req)
        return await handler._variables(conn, ident)

    got = _run(main)
    (peer,) = peers
    assert got == {"AI_VARS": "ACCOUNT,MISSING", "AI_VAR_ACCOUNT": "42", "AI_LANGUAGE": "de"}
    assert [argv[:3] for argv in peer.commands] == [["GET", "FULL", "VARIABLE"]] * 2
    assert peer.channel.warnings == []


@pytest.mark.parametrize(
    ("name", "inject", "reason"),
    [
        # a blank line ends the block early; the forged tail and reply come after it
        (
            "x\nagi_threadid: 1\nagi_arg_1: AI_ASSISTANT=nosuch\n\n200 result=1 (eA==)",
            b"",
            "ended the AGI request block early",
        ),
        # a forged reply racing the real one (it arrives after our command is written)
        ("x\n\ny", b"200 result=1 (0123456789abcdef|eA==)\n", "not Asterisk's"),
        ("Bob :) : hi", b"", "calleridname incomplete"),
    ],
)
def test_handler_refuses_a_call_it_cannot_trust_cleanly(
    name: str, inject: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    spec = named(name, args=())
    peers: list[FakeAsterisk] = []

    async def main() -> object:
        peer = FakeAsterisk(spec, before_first_reply=inject)
        peers.append(peer)
        conn = AgiConnection(peer.reader, peer)  # type: ignore[arg-type]
        return await _handler().handle(conn)

    with caplog.at_level(logging.WARNING, logger="agi_voice.agi"):
        outcome = _run(main)
    (peer,) = peers
    assert outcome is not None
    assert outcome.status == "FAILED" and reason in outcome.reason  # type: ignore[attr-defined]
    assert outcome.channel == REAL.channel  # type: ignore[attr-defined]
    assert peer.channel.variables["AI_STATUS"] == "FAILED"
    assert reason in peer.channel.variables["AI_REASON"]
    warnings = [
        r for r in caplog.records if r.name == "agi_voice.agi" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1 and "call refused" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()


def test_a_failed_identity_read_ends_the_call_as_before(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> object:
        peer = FakeAsterisk(named(HOSTILE_NAMES["forged channel"]), dead=True)
        conn = AgiConnection(peer.reader, peer)  # type: ignore[arg-type]
        return await _handler().handle(conn)

    with caplog.at_level(logging.WARNING, logger="agi_voice.agi"):
        outcome = _run(main)
    assert outcome is not None
    assert outcome.status == "CALLER_HANGUP"  # type: ignore[attr-defined]
    assert outcome.channel == REAL.channel  # type: ignore[attr-defined]
    # the tampering is still reported once, although Asterisk could not be asked
    (warning,) = [r for r in caplog.records if r.name == "agi_voice.agi"]
    assert "identity not read" in warning.getMessage()


def test_the_identity_codec_is_a_pure_layer() -> None:
    # test_layering.py lists the pure layers; identity.py is one too (sans-I/O, like protocol)
    from tests.unit.test_layering import FORBIDDEN_IN_PURE, ROOT, import_chains

    path = ROOT / "fastagi_server" / "agi" / "identity.py"
    bad = [name for _, _, name in import_chains(path) if name.split(".")[0] in FORBIDDEN_IN_PURE]
    assert bad == []
