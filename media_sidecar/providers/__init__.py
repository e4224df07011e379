"""Speech-to-speech providers, chosen per assistant in YAML (``provider:``)."""

from __future__ import annotations

from collections.abc import Mapping

from ..config.schema import AssistantConfig
from ..protocol.control import CallContext
from .base import ProviderError, RelayPort, SpeechToSpeech

RELAY_PROVIDERS = frozenset({"echo", "openai_realtime"})
"""Providers served by :class:`~media_sidecar.session.relay.RelaySession`."""


def make_provider(assistant: AssistantConfig, context: CallContext,
                  env: Mapping[str, str] | None = None) -> SpeechToSpeech:
    """A new provider session for one call of ``assistant``."""
    if assistant.provider == "echo":
        from .echo import EchoSession

        return EchoSession(assistant.echo)
    if assistant.provider == "openai_realtime":
        from .openai_realtime import OpenAIRealtimeSession

        return OpenAIRealtimeSession(assistant.realtime, env=env)
    raise ValueError(f"{assistant.provider!r} is not a speech-to-speech provider")


__all__ = ["RELAY_PROVIDERS", "ProviderError", "RelayPort", "SpeechToSpeech", "make_provider"]
