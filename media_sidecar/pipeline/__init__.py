"""The pipeline mode: speech-to-text, a brain (rules, an LLM, or rules first), text-to-speech,
each stage named per assistant in YAML and any mix allowed.

:func:`make_stages` builds one call's stages from its assistant; local engines (Moonshine,
Piper) are the process's shared ones, cloud stages are per call. Vendor modules are imported
only when an assistant names them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..brain.base import Brain
from ..config.schema import AssistantConfig
from ..protocol.control import CallContext
from ..speech.base import SpeechToText, TextToSpeech
from .base import ChatModel, Net, ProviderError, SpeechSynth, StreamingStt, Transcriber

__all__ = ["Stages", "make_chat_model", "make_stages", "stage_names"]


@dataclass
class Stages:
    """One call's pipeline: exactly one of ``transcriber`` (our VAD cuts utterances) and
    ``streaming_stt`` (the service's endpointing ends turns) is set."""

    synth: SpeechSynth
    brain: Brain
    transcriber: Transcriber | None = None
    streaming_stt: StreamingStt | None = None


def stage_names(a: AssistantConfig) -> str:
    llm: str = a.llm.engine if a.llm.engine != "none" else "rules"
    if a.llm.rules_first and a.llm.engine != "none":
        llm = f"rules>{llm}"
    return f"{a.stt.engine}+{llm}+{a.tts.engine}"


def make_chat_model(a: AssistantConfig, env: Mapping[str, str], net: Net,
                    offload: Callable[..., Awaitable[Any]] | None = None) -> ChatModel:
    cfg = a.llm
    if cfg.engine == "openai":
        from .llm_openai import OpenAIChat

        return OpenAIChat(cfg, env, net)
    if cfg.engine == "ollama":
        from .llm_ollama import OllamaChat

        return OllamaChat(cfg, env, net)
    if cfg.engine == "llama_cpp":
        from .llm_llamacpp import LlamaCppChat

        return LlamaCppChat(cfg)
    raise ProviderError(f"no LLM engine {cfg.engine!r}", retryable=False)


def make_stages(a: AssistantConfig, context: CallContext, *, env: Mapping[str, str], net: Net,
                local_stt: SpeechToText | None, local_tts: TextToSpeech | None,
                rules_brain: Callable[[AssistantConfig, CallContext], Brain],
                run_tool: Callable[..., Awaitable[Any]],
                offload: Callable[..., Awaitable[Any]]) -> Stages:
    """Build the stages. Raises ProviderError (permanent) for a missing key or engine."""
    language = context.language or a.language
    transcriber: Transcriber | None = None
    streaming: StreamingStt | None = None
    if a.stt.engine == "deepgram":
        from .stt_deepgram import DeepgramListen

        streaming = DeepgramListen(a.stt, env, language, net)
    elif a.stt.engine == "openai":
        from .stt_openai import OpenAITranscriber

        transcriber = OpenAITranscriber(a.stt, env, language, net)
    else:
        if local_stt is None:
            raise ProviderError("the local STT engine is not loaded", retryable=False)
        from .stt_local import LocalTranscriber

        transcriber = LocalTranscriber(local_stt, offload)
    synth: SpeechSynth
    if a.tts.engine == "deepgram":
        from .tts_deepgram import DeepgramSpeech

        synth = DeepgramSpeech(a.tts, env, net)
    elif a.tts.engine == "openai":
        from .tts_openai import OpenAISpeech

        synth = OpenAISpeech(a.tts, env, net)
    else:
        if local_tts is None:
            raise ProviderError("the local TTS engine is not loaded", retryable=False)
        from .tts_local import LocalSynth

        synth = LocalSynth(local_tts, offload)
    brain: Brain
    if a.llm.engine == "none":
        brain = rules_brain(a, context)
    else:
        from ..providers.base import make_setup
        from .llm_brain import LlmBrain, RulesFirstBrain

        setup = make_setup(a, context)
        llm = LlmBrain(make_chat_model(a, env, net, offload), a.llm, a.brain,
                       instructions=setup.instructions, greeting=setup.greeting,
                       tools=setup.tools, run_tool=run_tool)
        brain = RulesFirstBrain(rules_brain(a, context), llm) if a.llm.rules_first else llm
    return Stages(synth=synth, brain=brain, transcriber=transcriber, streaming_stt=streaming)
