"""Validation of the ``Settings`` message (providers.md 2.2, asyncapi ``AgentV1Settings``). Pure.

Two kinds of refusal, as the live service words them (deepgram-devs/flask-agent-function-calling-
demo#17, deepgram-starters/node-voice-agent#5):

* a message that does not fit the schema (wrong type, missing required field, unknown field or
  enum value) is ``UNPARSABLE_CLIENT_MESSAGE``, "Error parsing client message. Check the <field>
  field against the API spec.";
* a well-formed Settings the mock cannot run (no listen/think/speak, duplicate function names,
  a rate the encoding does not support, an output the mock cannot render) is
  ``INVALID_SETTINGS``.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AudioSetup",
    "INPUT_ENCODINGS",
    "OUTPUT_ENCODINGS",
    "SettingsError",
    "check_listen_provider",
    "check_settings",
    "declared_functions",
    "parse_error",
]

INPUT_ENCODINGS = frozenset({
    "linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "ogg-opus",
    "speex", "g729",
})  # fmt: skip
OUTPUT_ENCODINGS = frozenset({"linear16", "mulaw", "alaw", "mp3", "opus", "flac", "aac"})
CONTAINERS = frozenset({"none", "wav", "ogg"})
RENDERED = {"linear16": (8000, 16000, 24000, 32000, 48000), "mulaw": (8000, 16000),
            "alaw": (8000, 16000)}  # fmt: skip
"""Output encodings the mock renders, with the sample rates it accepts for each."""
DEFAULT_OUTPUT_RATE = {"linear16": 24000, "mulaw": 8000, "alaw": 8000}
TOP_KEYS = frozenset({"type", "tags", "experimental", "flags", "mip_opt_out", "audio", "agent"})
AGENT_KEYS = frozenset({"language", "context", "listen", "think", "speak", "greeting"})


class SettingsError(Exception):
    """A refused Settings (or other client message): the ``Error`` to send."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code, self.description = code, description


def parse_error(field: str) -> SettingsError:
    return SettingsError(
        "UNPARSABLE_CLIENT_MESSAGE",
        f"Error parsing client message. Check the {field} field against the API spec.",
    )


def invalid(description: str) -> SettingsError:
    return SettingsError("INVALID_SETTINGS", description)


@dataclass(frozen=True)
class AudioSetup:
    in_encoding: str
    in_rate: int
    out_encoding: str
    out_rate: int
    problems: tuple[str, ...] = ()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _obj(v: Any, path: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise parse_error(path)
    return v


def _keys(obj: dict[str, Any], allowed: frozenset[str], path: str) -> None:
    for key in obj:
        if key not in allowed:
            raise parse_error(f"{path}.{key}" if path else key)


def _endpoint(v: Any, path: str) -> None:
    if v is not None and not isinstance(_obj(v, path).get("url"), str):
        raise parse_error(f"{path}.url")


def _one_or_many(v: Any, path: str) -> list[dict[str, Any]]:
    """``think`` / ``speak``: an object or a non-empty array of them (fallback providers)."""
    items = v if isinstance(v, list) else [v]
    if not items:
        raise parse_error(path)
    out = []
    for i, item in enumerate(items):
        where = f"{path}[{i}]" if isinstance(v, list) else path
        out.append(_obj(item, where))
        provider = _obj(item.get("provider"), f"{where}.provider")
        if not isinstance(provider.get("type"), str):
            raise parse_error(f"{where}.provider.type")
        _endpoint(item.get("endpoint"), f"{where}.endpoint")
    return out


def _check_functions(thinks: list[dict[str, Any]], path: str) -> None:
    for t, think in enumerate(thinks):
        where = f"{path}[{t}]" if len(thinks) > 1 else path
        if "prompt" in think and not isinstance(think["prompt"], str):
            raise parse_error(f"{where}.prompt")
        functions = think.get("functions", [])
        if not isinstance(functions, list):
            raise parse_error(f"{where}.functions")
        names: set[str] = set()
        for i, fn in enumerate(functions):
            fp = f"{where}.functions[{i}]"
            _obj(fn, fp)  # unknown keys allowed: the function schema keeps growing
            if not isinstance(fn.get("name"), str) or not fn["name"]:
                raise parse_error(f"{fp}.name")
            if not isinstance(fn.get("description"), str):
                raise parse_error(f"{fp}.description")
            _obj(fn.get("parameters"), f"{fp}.parameters")
            _endpoint(fn.get("endpoint"), f"{fp}.endpoint")
            if fn["name"] in names:
                raise invalid(f"Function {fn['name']!r} is declared twice in {where}.functions.")
            names.add(fn["name"])


LISTEN_KEYS = {
    "v1": frozenset({"type", "version", "model", "language", "keyterms", "smart_format"}),
    "v2": frozenset({"type", "version", "model", "language_hints", "eot_threshold",
                     "eager_eot_threshold", "eot_timeout_ms", "keyterms"}),
}
"""asyncapi ``DeepgramListenProviderV1`` / ``V2``; ``version`` is the discriminator."""
FLUX_RANGES = {"eot_threshold": (0.5, 1.0), "eager_eot_threshold": (0.3, 0.9)}
"""SDK 7.17 ``deepgram_listen_provider_v2.py`` (eot_threshold up to 1.0; asyncapi says 0.9)."""


def _strings(v: Any, path: str) -> None:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise parse_error(path)


def check_listen_provider(v: Any, path: str = "agent.listen.provider") -> list[str]:
    """A listen provider, V1 or Flux V2 (providers-2026-update.md 3.2); returns problems the
    mock tolerates (an omitted ``version``, which the SDK infers but a raw client must send)."""
    provider = _obj(v, path)
    if provider.get("type") != "deepgram":
        raise parse_error(f"{path}.type")
    problems = []
    version = provider.get("version")
    if version is None:
        problems.append(f"{path}.version omitted (send it: it is the discriminator)")
        version = "v1" if set(provider) & {"language", "smart_format"} else "v2"
    if version not in LISTEN_KEYS:
        raise parse_error(f"{path}.version")
    _keys(provider, LISTEN_KEYS[version], path)
    model = provider.get("model")
    if not isinstance(model, str) if version == "v2" else not isinstance(model, (str, type(None))):
        raise parse_error(f"{path}.model")
    if "keyterms" in provider:
        _strings(provider["keyterms"], f"{path}.keyterms")
    if version == "v1":
        return problems
    if not model.startswith("flux-"):
        raise invalid(f"{path}.model {model!r} is not a Flux model.")
    for key, (low, high) in FLUX_RANGES.items():
        value = provider.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise parse_error(f"{path}.{key}")
        if not low <= value <= high:
            raise invalid(f"{path}.{key} {value} is out of range ({low} - {high}).")
    timeout = provider.get("eot_timeout_ms")
    if timeout is not None and not _is_int(timeout):
        raise parse_error(f"{path}.eot_timeout_ms")
    if "language_hints" in provider:
        _strings(provider["language_hints"], f"{path}.language_hints")
        if model != "flux-general-multi":
            raise invalid(f"{path}.language_hints is only supported with flux-general-multi.")
    return problems


def check_think(v: Any, path: str = "agent.think") -> list[dict[str, Any]]:
    thinks = _one_or_many(v, path)
    _check_functions(thinks, path)
    return thinks


def check_speak(v: Any, path: str = "agent.speak") -> list[dict[str, Any]]:
    """One TTS provider or a fallback array; every provider but Deepgram needs an
    ``endpoint`` (https, wss only for ElevenLabs: SDK 7.17 ``speak_settings_v1endpoint.py``)."""
    speaks = _one_or_many(v, path)
    for i, speak in enumerate(speaks):
        where = f"{path}[{i}]" if isinstance(v, list) else path
        kind, endpoint = speak["provider"]["type"], speak.get("endpoint")
        if endpoint is None:
            if kind != "deepgram":
                raise invalid(f"{where}.endpoint is required for the {kind} provider.")
            continue
        schemes = ("https://", "wss://") if kind == "eleven_labs" else ("https://",)
        if not endpoint["url"].startswith(schemes):
            raise invalid(f"{where}.endpoint.url: valid schemes are https (wss for eleven_labs).")
    return speaks


def _check_agent(agent: Any) -> list[str]:
    if isinstance(agent, str):  # a stored agent configuration, by id
        try:
            uuid.UUID(agent)
        except ValueError:
            raise parse_error("agent") from None
        return []
    _keys(_obj(agent, "agent"), AGENT_KEYS, "agent")
    for key in ("language", "greeting"):
        if key in agent and not isinstance(agent[key], str):
            raise parse_error(f"agent.{key}")
    for part in ("listen", "think", "speak"):
        if part not in agent:
            raise invalid(f"agent.{part} is required.")
    listen = _obj(agent["listen"], "agent.listen")
    problems = check_listen_provider(listen.get("provider"))
    check_think(agent["think"])
    check_speak(agent["speak"])
    context = agent.get("context")
    if context is not None:
        messages = _obj(context, "agent.context").get("messages", [])
        if not isinstance(messages, list):
            raise parse_error("agent.context.messages")
        for i, m in enumerate(messages):
            if _obj(m, f"agent.context.messages[{i}]").get("type") != "History":
                raise parse_error(f"agent.context.messages[{i}].type")
    return problems


def _audio(audio: dict[str, Any]) -> AudioSetup:
    _keys(audio, frozenset({"input", "output"}), "audio")
    problems: list[str] = []
    inp = audio.get("input")
    if inp is None:
        problems.append(
            "audio.input omitted: the mock defaults to linear16 at 24000 Hz (the docs conflict "
            "on the default; send it explicitly)"
        )
        inp = {"encoding": "linear16", "sample_rate": 24000}
    _keys(_obj(inp, "audio.input"), frozenset({"encoding", "sample_rate"}), "audio.input")
    if inp.get("encoding") not in INPUT_ENCODINGS:
        raise parse_error("audio.input.encoding")
    if not _is_int(inp.get("sample_rate")):
        raise parse_error("audio.input.sample_rate")
    if not 8000 <= inp["sample_rate"] <= 48000:
        raise invalid(f"audio.input.sample_rate {inp['sample_rate']} is out of range.")
    out = _obj(audio.get("output", {}), "audio.output")
    _keys(out, frozenset({"encoding", "sample_rate", "bitrate", "container"}), "audio.output")
    encoding = out.get("encoding", "linear16")
    if encoding not in OUTPUT_ENCODINGS:
        raise parse_error("audio.output.encoding")
    for key in ("sample_rate", "bitrate"):
        if key in out and not _is_int(out[key]):
            raise parse_error(f"audio.output.{key}")
    container = out.get("container", "none")
    if container not in CONTAINERS:
        raise parse_error("audio.output.container")
    if encoding not in RENDERED or container != "none":
        raise invalid(
            f"The mock renders only linear16, mulaw and alaw in container none "
            f"(asked: {encoding} in {container})."
        )
    rate = out.get("sample_rate", DEFAULT_OUTPUT_RATE[encoding])
    if rate not in RENDERED[encoding]:
        raise invalid(f"audio.output.sample_rate {rate} is not supported for {encoding}.")
    return AudioSetup(inp["encoding"], inp["sample_rate"], encoding, rate, tuple(problems))


def check_settings(msg: dict[str, Any]) -> AudioSetup:
    """Validate a Settings message; return its audio setup. Raises SettingsError."""
    _keys(msg, TOP_KEYS, "")
    if "audio" not in msg:
        raise parse_error("audio")
    if "agent" not in msg:
        raise parse_error("agent")
    tags = msg.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise parse_error("tags")
    for key in ("experimental", "mip_opt_out"):
        if key in msg and not isinstance(msg[key], bool):
            raise parse_error(key)
    flags = _obj(msg.get("flags", {}), "flags")
    _keys(flags, frozenset({"history"}), "flags")
    if not isinstance(flags.get("history", True), bool):
        raise parse_error("flags.history")
    setup = _audio(_obj(msg["audio"], "audio"))
    problems = _check_agent(msg["agent"])
    return dataclasses.replace(setup, problems=setup.problems + tuple(problems))


def declared_functions(think: Any) -> dict[str, dict[str, Any]]:
    """Function name -> declaration, over every think provider of a validated config."""
    thinks = think if isinstance(think, list) else [think]
    return {
        fn["name"]: fn
        for t in thinks
        if isinstance(t, dict)
        for fn in t.get("functions", [])
        if isinstance(fn, dict) and isinstance(fn.get("name"), str)
    }
