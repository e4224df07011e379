"""Speech-to-speech providers, chosen per assistant in YAML (``provider:``)."""

from __future__ import annotations

from collections.abc import Mapping

from ..config.schema import AssistantConfig
from ..protocol.control import CallContext
from .base import ProviderError, ProviderSetup, RelayPort, SpeechToSpeech, make_setup

RELAY_PROVIDERS = frozenset({"echo", "openai_realtime", "openai_live", "deepgram_agent"})
"""Providers served by :class:`~media_sidecar.session.relay.RelaySession`."""


def make_provider(assistant: AssistantConfig, context: CallContext,
                  env: Mapping[str, str] | None = None) -> SpeechToSpeech:
    """A new provider session for one call of ``assistant``."""
    if assistant.provider == "echo":
        from .echo import EchoSession

        return EchoSession(assistant.echo)
    setup = make_setup(assistant, context)
    if assistant.provider == "openai_realtime":
        from .openai_realtime import OpenAIRealtimeSession

        return OpenAIRealtimeSession(assistant.realtime, setup, env=env)
    if assistant.provider == "openai_live":
        from .openai_live import OpenAILiveSession

        return OpenAILiveSession(assistant.live, setup, env=env)
    if assistant.provider == "deepgram_agent":
        from .deepgram_agent import DeepgramAgentSession

        return DeepgramAgentSession(assistant.deepgram, setup, env=env)
    raise ValueError(f"{assistant.provider!r} is not a speech-to-speech provider")


__all__ = ["RELAY_PROVIDERS", "ProviderError", "ProviderSetup", "RelayPort", "SpeechToSpeech",
           "make_provider", "make_setup"]
