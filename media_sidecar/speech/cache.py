"""Fixed sentences, rendered once per voice at config load and reload, played from memory.

Everything a rule-driven assistant can say is known from its config: the greeting, the intent
and keypad replies, the "transferring you to ..." of its extensions, the fallback line, the
not-understood hand-over, the reprompt and the no-input farewell, the invalid-key reply, the
filler. The brain says them one sentence at a time, so each sentence is rendered
on its own (the exact text the brain will say) and :class:`~..pipeline.tts_local.LocalSynth`
plays a sentence it finds here without any synthesis. The apology and the drain announcement
are played as one prompt each, so their whole text is rendered too.

The key is (the voice's engine key: engine, voice and speed; the exact text). Audio is slin
8 kHz: 16 kB per second of speech, about 0.5-1 MB for a typical assistant.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..brain.rules import EXTENSION_REPLY, INVALID_KEY_REPLY
from ..brain.text import split_sentences
from ..config.schema import AssistantConfig, Config, TtsConfig

__all__ = ["SentenceCache", "fixed_sentences", "prompt_texts", "prompt_voice"]

log = logging.getLogger("agi_voice.speech")


class SentenceCache:
    """(voice key, text) -> slin 8 kHz. Filled at load, read by every call, never changed
    while calls use it (a reload builds a new one)."""

    def __init__(self) -> None:
        self._audio: dict[tuple[str, str], bytes] = {}

    def get(self, voice: str, text: str) -> bytes | None:
        return self._audio.get((voice, text))

    def put(self, voice: str, text: str, pcm: bytes) -> None:
        self._audio[(voice, text)] = pcm

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._audio

    def __len__(self) -> int:
        return len(self._audio)

    @property
    def nbytes(self) -> int:
        """Audio bytes held (what the cache adds to the process's RSS, within a few kB of
        dict and key overhead)."""
        return sum(len(v) for v in self._audio.values())

    @property
    def seconds(self) -> float:
        return self.nbytes / 16000

    def keys(self) -> list[tuple[str, str]]:
        return list(self._audio)

    def reuse(self, old: SentenceCache | None, wanted: Iterable[tuple[str, str]]) -> list[
            tuple[str, str]]:
        """Copy what ``old`` already has of ``wanted``; returns what is still to render."""
        missing = []
        for key in wanted:
            if key in self._audio:
                continue
            if old is not None and key in old:
                self._audio[key] = old._audio[key]
            else:
                missing.append(key)
        return missing


def fixed_sentences(a: AssistantConfig) -> list[str]:
    """Every sentence ``a``'s rule brain (or its LLM brain's fixed greeting and no-input
    lines) can say, each as the brain will say it, without duplicates."""
    b = a.brain
    texts = [b.greeting, b.fallback, b.no_input.reprompt, b.no_input.hangup_reply,
             b.not_understood.reply, INVALID_KEY_REPLY, a.filler.text.strip(),
             *(i.reply for i in b.intents), *(m.reply for m in b.dtmf)]
    texts += [EXTENSION_REPLY.format(what=d.description or f"extension {' '.join(d.exten)}")
              for _, d in a.destinations if d.exten.isdigit()]
    if a.greeting and "{" not in a.greeting:  # a template is filled per call
        texts.append(a.greeting)
    out: dict[str, None] = {}
    for text in texts:
        for sentence in split_sentences(text):
            out[sentence] = None
    return list(out)


def prompt_voice(a: AssistantConfig) -> TtsConfig:
    """The local voice ``a``'s fixed prompts are said in: its own Piper voice, else the
    default one (a cloud voice may be what failed)."""
    return a.tts if a.tts.engine == "piper" else TtsConfig()


def prompt_texts(cfg: Config, a: AssistantConfig) -> list[str]:
    """The whole texts played as one prompt for ``a`` in its :func:`prompt_voice`: its apology
    (when said with the local voice), the drain announcement and a pipeline's filler (as
    :mod:`.prompts` renders them)."""
    texts = []
    if not a.offline and a.apology and not a.apology_file:
        texts.append(a.apology)
    if cfg.drain.announcement.strip():
        texts.append(cfg.drain.announcement.strip())
    if a.is_pipeline and a.filler.after > 0 and a.filler.text.strip():
        texts.append(a.filler.text.strip())
    return texts
