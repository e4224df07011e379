"""The Deepgram Voice Agent V1 wire mapping: our configuration in, Deepgram's JSON out, and the
server's reports decoded. Pure (no trio, no sockets): the session in :mod:`.deepgram_agent`
only moves these messages.

Shapes are those of deepgram-sdk 7.17 (``shared/reference/providers-2026-update.md`` section 3,
the asyncapi spec beside it where it agrees): ``listen.provider`` always names its ``version``
(``v1``, or ``v2`` for Flux with its end-of-turn settings); ``think`` and ``speak`` are one
object or an array in fallback order; ``InjectAgentMessage`` carries ``message`` and
``behavior``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ..config.schema import DeepgramAgentConfig, DeepgramSpeakEntry, DeepgramThinkEntry
from ..protocol.wirejson import number, objects

__all__ = ["MissingEnv", "cancelled_calls", "inject_agent_message", "latency_figures",
           "listen_provider", "settings", "speak_settings", "think_settings", "update_listen",
           "update_think"]

Behavior = Literal["default", "queue", "interrupt"]
BEHAVIORS: tuple[Behavior, ...] = ("default", "queue", "interrupt")
LATENCY_KEYS = ("stt_latency", "ttt_token_latency", "ttt_text_latency", "ttt_tool_latency",
                "ttt_thinking_latency", "tts_latency", "total_latency")
"""``LatencyReport`` fields (SDK 7.17 ``agent_v1latency_report.py``): optional, seconds."""


class MissingEnv(ValueError):
    """An endpoint header's environment variable is not set (a permanent setup fault)."""


def listen_provider(cfg: DeepgramAgentConfig, language: str) -> dict[str, Any]:
    """``agent.listen.provider``: V1 (``model``, ``language``) or Flux V2 (``model`` and the
    end-of-turn settings given, no ``language``; ``language_hints`` plural on the wire)."""
    if cfg.listen_version == "v1":
        out: dict[str, Any] = {"type": "deepgram", "version": "v1", "model": cfg.listen_model,
                               "language": language}
    else:
        out = {"type": "deepgram", "version": "v2", "model": cfg.listen_model}
        for key in ("eot_threshold", "eager_eot_threshold", "eot_timeout_ms"):
            value = getattr(cfg, key)
            if value is not None:
                out[key] = value
        if cfg.language_hints:
            out["language_hints"] = list(cfg.language_hints)
    if cfg.keyterms:
        out["keyterms"] = list(cfg.keyterms)
    return out


def _headers(pairs: tuple[tuple[str, str], ...], env: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name, var in pairs:
        value = env.get(var, "")
        if not value:
            raise MissingEnv(f"the environment variable {var} (header {name}) is not set")
        out[name] = value
    return out


def _one_or_many(items: list[dict[str, Any]]) -> dict[str, Any] | list[dict[str, Any]]:
    return items[0] if len(items) == 1 else items


def _think_entry(e: DeepgramThinkEntry, env: Mapping[str, str]) -> dict[str, Any]:
    provider: dict[str, Any] = {"type": e.provider, "model": e.model}
    if e.temperature is not None:
        provider["temperature"] = e.temperature
    out: dict[str, Any] = {"provider": provider}
    if e.url:
        out["endpoint"] = {"url": e.url, "headers": _headers(e.headers_env, env)}
    return out


def think_settings(cfg: DeepgramAgentConfig, instructions: str, tools: list[Any],
                   env: Mapping[str, str]) -> dict[str, Any] | list[dict[str, Any]]:
    """``agent.think``: the ``think`` list in fallback order (an array when there are
    several), else the flat keys; every entry gets the prompt and the functions."""
    if cfg.think:
        entries = [_think_entry(e, env) for e in cfg.think]
    else:
        entries = [{"provider": {"type": cfg.think_provider, "model": cfg.think_model,
                                 "temperature": cfg.temperature}}]
        if cfg.think_url:
            entries[0]["endpoint"] = {"url": cfg.think_url, "headers": {}}
    for entry in entries:
        entry["prompt"] = instructions
        if tools:
            entry["functions"] = [{"name": t.name, "description": t.description,
                                   "parameters": t.parameters} for t in tools]
    return _one_or_many(entries)


def _speak_entry(e: DeepgramSpeakEntry, env: Mapping[str, str]) -> dict[str, Any]:
    provider: dict[str, Any] = {"type": e.provider}
    if e.provider in ("deepgram", "open_ai"):
        provider["model"] = e.model
    else:
        provider["model_id"] = e.model
    if e.provider == "open_ai":
        provider["voice"] = e.voice
    elif e.provider == "cartesia":
        provider["voice"] = {"mode": "id", "id": e.voice}
    if e.language and e.provider in ("eleven_labs", "cartesia"):
        provider["language"] = e.language
    out: dict[str, Any] = {"provider": provider}
    if e.url:
        out["endpoint"] = {"url": e.url, "headers": _headers(e.headers_env, env)}
    return out


def speak_settings(cfg: DeepgramAgentConfig, env: Mapping[str, str]
                   ) -> dict[str, Any] | list[dict[str, Any]]:
    """``agent.speak``: the ``speak`` list in fallback order, else ``speak_model``."""
    if cfg.speak:
        return _one_or_many([_speak_entry(e, env) for e in cfg.speak])
    return {"provider": {"type": "deepgram", "model": cfg.speak_model}}


def settings(cfg: DeepgramAgentConfig, *, instructions: str, greeting: str, tools: list[Any],
             language: str, encoding: str, rate: int, env: Mapping[str, str]) -> dict[str, Any]:
    """The ``Settings`` message (SDK 7.17 ``agent_v1settings.py``). Raises MissingEnv."""
    agent: dict[str, Any] = {
        "listen": {"provider": listen_provider(cfg, language)},
        "think": think_settings(cfg, instructions, tools, env),
        "speak": speak_settings(cfg, env),
    }
    if greeting:
        agent["greeting"] = greeting
    return {
        "type": "Settings", "tags": list(cfg.tags), "experimental": False,
        "flags": {"history": True},
        "audio": {"input": {"encoding": encoding, "sample_rate": rate},
                  "output": {"encoding": encoding, "sample_rate": rate, "container": "none"}},
        "agent": agent,
    }


def inject_agent_message(text: str, behavior: Behavior = "default") -> dict[str, Any]:
    """``InjectAgentMessage`` (providers-2026-update.md 3.5): ``default`` is refused with
    ``InjectionRefused`` while either side is mid-turn, ``queue`` plays after what is queued,
    ``interrupt`` replaces the agent's current speech."""
    if behavior not in BEHAVIORS:
        raise ValueError(f"behavior must be one of {BEHAVIORS}, got {behavior!r}")
    return {"type": "InjectAgentMessage", "message": text, "behavior": behavior}


def update_listen(current: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """``UpdateListen`` (3.3): the session's listen provider with ``changes``; its identity
    (type, version, model) is kept, as the server requires. Keyterms change mid-session only
    with Flux; raises ValueError otherwise."""
    if "keyterms" in changes and current.get("version") != "v2":
        raise ValueError("keyterms can change mid-session only with Flux (listen version v2)")
    provider = {**current, **{k: v for k, v in changes.items() if v is not None}}
    for key in ("type", "version", "model"):
        provider[key] = current[key]
    return {"type": "UpdateListen", "listen": {"provider": provider}}


def update_think(think: dict[str, Any] | list[dict[str, Any]]) -> dict[str, Any]:
    """``UpdateThink`` (3.4): replaces the whole think configuration (one or a fallback
    array), answered by ``ThinkUpdated``."""
    return {"type": "UpdateThink", "think": think}


def latency_figures(msg: Mapping[str, Any]) -> dict[str, float]:
    """The figures a ``LatencyReport`` carries (seconds), the absent ones left out."""
    figures = {k: number(msg.get(k)) for k in LATENCY_KEYS}
    return {k: v for k, v in figures.items() if v is not None}


def cancelled_calls(msg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``FunctionCallCancelled``: the (id, name) of each call withdrawn."""
    return [(str(f.get("id", "")), str(f.get("name", ""))) for f in objects(msg.get("functions"))]
