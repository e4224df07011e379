"""Coverage-guided long runs with atheris (libFuzzer for Python); optional, not part of CI.

Install it into the venv (``.venv/bin/pip install atheris``: wheels for CPython 3.11 on
x86-64 Linux), then run one target for as long as you like::

    .venv/bin/python -m tests.fuzz.atheris_harness audiosocket -max_total_time=600
    .venv/bin/python -m tests.fuzz.atheris_harness control -runs=2000000 /tmp/corpus-control

Targets: audiosocket, agi_env, agi_reply, identity, ami, control, config, provider_json.
The property is the one the Hypothesis fuzz tests check: the codec's typed protocol error is
the only exception. Anything else is a crash libFuzzer reports with the input that caused it
(saved as ``crash-<sha1>``; replay it by passing the file instead of a corpus directory).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import atheris

with atheris.instrument_imports():
    from fastagi_server.agi import identity
    from fastagi_server.agi.protocol import AgiProtocolError, EnvParser, ResponseReader
    from fastagi_server.ami.codec import AmiParser, AmiProtocolError
    from media_sidecar.config.loader import ConfigError, parse_config
    from media_sidecar.protocol import control, wirejson
    from media_sidecar.protocol.audiosocket import AudioSocketDecoder, AudioSocketError


def _split(data: bytes) -> list[bytes]:
    """Split at the first byte's value so libFuzzer also explores chunk boundaries."""
    if not data:
        return [data]
    step = max(1, data[0])
    return [data[i:i + step] for i in range(1, len(data), step)]


def audiosocket(data: bytes) -> None:
    decoder = AudioSocketDecoder()
    try:
        for part in _split(data):
            decoder.receive_data(part)
            decoder.events()
    except AudioSocketError:
        pass


def agi_env(data: bytes) -> None:
    parser = EnvParser()
    try:
        for part in _split(data):
            if parser.feed(part) is not None:
                break
    except AgiProtocolError:
        pass


def agi_reply(data: bytes) -> None:
    reader = ResponseReader(max_line=4096)
    try:
        for part in _split(data):
            reader.feed(part)
            list(reader.events())
    except AgiProtocolError:
        pass


def identity_reply(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for parse in (lambda: identity.parse_identity(text, "n0nce1234"),
                  lambda: identity.parse_vars(text, "n0nce1234", ["A", "B"])):
        try:
            parse()
        except identity.IdentityError:
            pass


def ami(data: bytes) -> None:
    parser = AmiParser(expect_banner=bool(data[:1] == b"A"), max_line=4096, max_message=65536)
    try:
        for part in _split(data):
            parser.feed(part)
            list(parser.events())
    except AmiProtocolError:
        pass


def control_message(data: bytes) -> None:
    try:
        control.decode(data)
    except control.ControlError:
        pass


def config(data: bytes) -> None:
    try:
        parse_config(data.decode("utf-8", "replace"), "fuzz.yaml", {})
    except ConfigError:
        pass


def provider_json(data: bytes) -> None:
    event = wirejson.loads_object(data)
    if event is not None:
        for value in event.values():
            wirejson.obj(value)
            wirejson.objects(value)
            wirejson.number(value)
            wirejson.whole(value)
            wirejson.string(value)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "audiosocket": audiosocket, "agi_env": agi_env, "agi_reply": agi_reply,
    "identity": identity_reply, "ami": ami, "control": control_message, "config": config,
    "provider_json": provider_json,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.atheris_harness {{{','.join(TARGETS)}}} "
                 "[libFuzzer options] [corpus dir]")
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
