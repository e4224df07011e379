"""The vendors' SDK types for each wire, and checks of one message or one mock log against them.

Sources (test-only dependencies, see setup.cfg ``test``): ``openai`` 3.63 (``openai.types.realtime``,
``openai.types.live``, ``openai.types.chat``, ``openai.types.audio``), ``deepgram-sdk`` 7.17 (``deepgram.agent.v1``,
``deepgram.listen.v1``, ``deepgram.speak.v1``). The client-message unions of the Deepgram sockets
are read from the SDK's own ``send_*`` methods, the server-message unions from its
``V1SocketClientResponse``, the query parameters from its ``connect`` signatures: when the SDK
grows a message the contract grows with it.
"""

from __future__ import annotations

import inspect
import typing
import warnings
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from openai.types.audio import Transcription, TranscriptionVerbose
from openai.types.audio.speech_create_params import SpeechCreateParams
from openai.types.audio.transcription_create_params import TranscriptionCreateParamsBase
from openai.types.audio.transcription_stream_event import TranscriptionStreamEvent
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.completion_create_params import (
    CompletionCreateParamsNonStreaming,
    CompletionCreateParamsStreaming,
)
from openai.types.live.client_event_param import ClientEventParam as LiveClientEventParam
from openai.types.live.server_event import ServerEvent as LiveServerEvent
from openai.types.realtime import RealtimeClientEventParam, RealtimeServerEvent
from openai.types.shared.error_object import ErrorObject

from .strict import check

__all__ = ["CONTRACTS", "Contract", "check_form_fields", "check_log", "check_query"]


class Contract(typing.NamedTuple):
    client: Any
    """The union of the messages a client may send."""
    server: Any
    """The union of the messages a server may send."""


def _socket(module: str) -> Contract:
    """A Deepgram socket's contract from its SDK ``socket_client`` module."""
    with warnings.catch_warnings():  # the SDK imports websockets.legacy, deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        mod = __import__(f"deepgram.{module}.v1.socket_client", fromlist=["x"])
    sends = []
    for name, fn in inspect.getmembers(mod.AsyncV1SocketClient, inspect.isfunction):
        if name.startswith("send_") and name not in ("send_raw", "send_media"):
            hint = typing.get_type_hints(fn, vars(mod))["message"]
            sends += [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    server = [t for t in typing.get_args(mod.V1SocketClientResponse) if t is not bytes]
    return Contract(typing.Union[tuple(sends)], typing.Union[tuple(server)])  # noqa: UP007


class _ErrorBody(typing.TypedDict):
    error: ErrorObject


CONTRACTS: dict[str, Contract] = {
    "openai_realtime": Contract(RealtimeClientEventParam, RealtimeServerEvent),
    "openai_live": Contract(LiveClientEventParam, LiveServerEvent),
    "openai_chat": Contract(CompletionCreateParamsStreaming | CompletionCreateParamsNonStreaming,
                            ChatCompletionChunk | ChatCompletion | _ErrorBody),
    "openai_speech": Contract(SpeechCreateParams, _ErrorBody),
    "openai_transcription": Contract(TranscriptionCreateParamsBase,
                                     Transcription | TranscriptionVerbose
                                     | TranscriptionStreamEvent | _ErrorBody),
    "deepgram_agent": _socket("agent"),
    "deepgram_listen": _socket("listen"),
    "deepgram_speak": _socket("speak"),
}


@cache
def _connect_params(module: str) -> frozenset[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if module == "speak_rest":
            from deepgram.speak.v1.audio.raw_client import AsyncRawAudioClient

            names = inspect.signature(AsyncRawAudioClient.generate).parameters
            return frozenset(names) - {"self", "text", "request_options"}
        mod = __import__(f"deepgram.{module}.v1.raw_client", fromlist=["x"])
    names = inspect.signature(mod.AsyncRawV1Client.connect).parameters
    return frozenset(names) - {"self", "authorization", "request_options"}


def check_query(module: str, query: Iterable[str]) -> list[str]:
    """Query parameters of a Deepgram socket (``listen``, ``speak``) or of the REST speak
    request (``speak_rest``) that its SDK's ``connect`` / ``generate`` does not take."""
    known = _connect_params(module)
    return [f"query: unknown parameter {k!r} (deepgram {module})"
            for k in query if k not in known]


def check_form_fields(fields: dict[str, str]) -> list[str]:
    """The multipart fields of a transcription request: names the SDK declares, and the
    documented value of every field the SDK types as a string literal (form values are text)."""
    keys = typing.get_type_hints(TranscriptionCreateParamsBase, include_extras=True)
    problems = []
    for raw, value in fields.items():
        name = raw.removesuffix("[]")
        if name not in keys:
            problems.append(f"form: unknown field {raw!r} (not in TranscriptionCreateParams)")
            continue
        literal = _string_literals(keys[name])
        if literal and value not in literal:
            problems.append(f"form.{name}: {value!r} is not one of {sorted(literal)}")
    return problems


def _string_literals(hint: Any) -> set[str]:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return {a for a in typing.get_args(hint) if isinstance(a, str)}
    if origin in (typing.Union, typing.Annotated) or str(origin).endswith("Required"):
        out: set[str] = set()
        for a in typing.get_args(hint):
            out |= _string_literals(a)
        return out
    return set()


# Keys a real server sends that the SDK's server-event type does not declare (the SDK's models
# allow extras, so it never notices). Each with its source; nothing else is let through.
SERVER_EXTRAS: dict[tuple[str, str], frozenset[str]] = {
    # session.created / session.updated carry the session as RealtimeSessionCreateRequest in
    # SDK 3.63, but the API's session object also has id, object, expires_at (providers.md 1.5
    # and its recorded session.created; RealtimeSessionCreateResponse declares them).
    ("openai_realtime", "$.session"): frozenset({"id", "object", "expires_at"}),
    # whisper-1's verbose_json answer starts with "task": "transcribe" (the API reference's
    # example); TranscriptionVerbose in SDK 3.63 does not declare it.
    ("openai_transcription", "$"): frozenset({"task"}),
}


def _allowed(wire: str, problem: str) -> bool:
    for (w, path), keys in SERVER_EXTRAS.items():
        if w == wire and any(problem.startswith(f"{path}: unknown key {k!r} ") for k in keys):
            return True
    return False


def check_messages(wire: str, messages: Iterable[dict[str, Any]], *,
                   sent_by: str) -> list[str]:
    """Problems of each message (``sent_by``: ``client`` | ``server``) on ``wire``."""
    contract = CONTRACTS[wire]
    type_ = contract.client if sent_by == "client" else contract.server
    problems = []
    for i, message in enumerate(messages):
        label = message.get("type", "?") if isinstance(message, dict) else "?"
        problems += [f"{wire} {sent_by} message {i} ({label}): {p}"
                     for p in check(message, type_)
                     if sent_by == "client" or not _allowed(wire, p)]
    return problems


def check_log(log: Any, *, client: bool = True) -> list[str]:
    """Contract problems of everything one mock log recorded, by the log's class (with
    ``client`` False: only what the mock sent)."""
    for cls in type(log).__mro__:
        checker = _LOG_CHECKERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if checker is not None:
            return checker(log, client)
    return []


def _realtime(log: Any, client: bool) -> list[str]:
    problems = check_messages("openai_realtime", log.server_events, sent_by="server")
    if client:
        problems += check_messages("openai_realtime", log.client_events, sent_by="client")
    return problems


def _ws(wire: str, module: str | None) -> Callable[[Any, bool], list[str]]:
    def checker(log: Any, client: bool) -> list[str]:
        problems = check_messages(wire, log.server_messages, sent_by="server")
        if client:
            problems += check_messages(wire, log.client_messages, sent_by="client")
            if module is not None and getattr(log, "path", "").startswith(f"/v1/{module}"):
                problems += check_query(module, log.query)
        return problems
    return checker


def _chat(log: Any, client: bool) -> list[str]:
    if not log.path.startswith("/v1/"):
        return []  # Ollama's native /api/chat: not an OpenAI wire
    problems = check_messages("openai_chat", log.sent, sent_by="server")
    if client and log.body is not None:
        problems += check_messages("openai_chat", [log.body], sent_by="client")
    return problems


def _speech(log: Any, client: bool) -> list[str]:
    if not client or not log.body:
        return []
    return check_messages("openai_speech", [log.body], sent_by="client")


def _speak_rest(log: Any, client: bool) -> list[str]:
    return check_query("speak_rest", log.query) if client else []


def _transcription(log: Any, client: bool) -> list[str]:
    return check_form_fields(log.fields) if client else []


_LOG_CHECKERS: dict[str, Callable[[Any, bool], list[str]]] = {
    "tests.mocks.openai_realtime.script.SessionLog": _realtime,
    "tests.mocks.deepgram_agent.script.SessionLog": _ws("deepgram_agent", None),
    "tests.mocks.openai_live.script.SessionLog": _ws("openai_live", None),
    "tests.mocks.deepgram_listen.script.ListenLog": _ws("deepgram_listen", "listen"),
    "tests.mocks.deepgram_speak.script.SpeakLog": _ws("deepgram_speak", "speak"),
    "tests.mocks.deepgram_speak.script.RestSpeech": _speak_rest,
    "tests.mocks.openai_chat.script.ChatLog": _chat,
    "tests.mocks.openai_audio.script.SpeechLog": _speech,
    "tests.mocks.openai_audio.script.TranscriptionLog": _transcription,
}
