"""A rule-based dialog brain: intents by phrase and keyword, DTMF menus, no-input handling.

It needs no model and no network, so the embedded default assistant works on a first run
without any API key. Configured by :class:`~media_sidecar.config.schema.RulesBrainConfig`.

Replies are spoken sentence by sentence (one :class:`Say` each). A reply that announces an
action (a transfer or a hangup) is not interruptible: the action is already decided when the
reply starts, and a barge-in that cancelled the turn would also cancel the transfer or hang-up
the caller just asked for (and a farewell must be heard before the line goes dead).
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from ..config.schema import Action, Intent, RulesBrainConfig
from .base import (
    Act,
    BrainInput,
    BrainOutput,
    NoInputTimeout,
    Say,
    Start,
    TurnInfo,
    UserDtmf,
    UserText,
)
from .text import split_sentences

__all__ = ["INVALID_KEY_REPLY", "Heard", "RulesBrain", "normalise"]

INVALID_KEY_REPLY = "Sorry, that key isn't an option."
HISTORY_SIZE = 20
"""How many :meth:`RulesBrain.heard` reports are kept."""

_APOSTROPHES = re.compile(r"['’‘`]")
_NON_WORD = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """Lowercase ``text``, drop apostrophes ("that's" -> "thats"), turn every other run of
    punctuation or whitespace into one space, and strip. Used on both sides of every match."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _APOSTROPHES.sub("", text)
    return _NON_WORD.sub(" ", text).strip()


def _keyword_pattern(keyword: str) -> re.Pattern[str] | None:
    """A whole-word pattern for a (possibly multi-word) keyword; a final plural s/es is allowed."""
    words = normalise(keyword).split()
    if not words:
        return None
    body = r"\s+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w){body}(?:s|es)?(?!\w)")


@dataclass(frozen=True, slots=True)
class _CompiledIntent:
    intent: Intent
    phrases: tuple[tuple[str, str], ...]
    """(original phrase, normalised phrase) pairs."""
    keywords: tuple[tuple[str, re.Pattern[str]], ...]
    """(original keyword, whole-word pattern) pairs."""


@dataclass(frozen=True, slots=True)
class Heard:
    """One report of what the caller heard of an answer."""

    text: str
    complete: bool


class RulesBrain:
    """The rule brain for one call. Implements :class:`~media_sidecar.brain.base.Brain`.

    Matching: the caller's text is normalised (:func:`normalise`); first every intent's
    ``phrases`` are tried as substrings, in intent order; then every intent's ``keywords`` as
    whole words or word sequences, in intent order. The first hit wins. Phrases are tried first
    across all intents because a phrase is the more specific evidence.
    """

    def __init__(self, cfg: RulesBrainConfig) -> None:
        self.cfg = cfg
        self._intents = tuple(
            _CompiledIntent(
                intent,
                tuple((p, n) for p in intent.phrases if (n := normalise(p))),
                tuple((k, pat) for k in intent.keywords if (pat := _keyword_pattern(k))),
            )
            for intent in cfg.intents
        )
        self._dtmf = {m.digit: m for m in cfg.dtmf}
        self._heard: deque[Heard] = deque(maxlen=HISTORY_SIZE)

    @property
    def history(self) -> list[Heard]:
        """What the caller heard of recent answers, oldest first (at most HISTORY_SIZE)."""
        return list(self._heard)

    def heard(self, text: str, complete: bool) -> None:
        """Record what of its last answer the caller heard (``complete=False``: cut off)."""
        self._heard.append(Heard(text, complete))

    def match(self, text: str) -> tuple[Intent, str] | None:
        """The intent ``text`` asks for and the phrase or keyword that matched, or None."""
        norm = normalise(text)
        if not norm:
            return None
        for compiled in self._intents:
            for phrase, normalised in compiled.phrases:
                if normalised in norm:
                    return compiled.intent, phrase
        for compiled in self._intents:
            for keyword, pattern in compiled.keywords:
                if pattern.search(norm):
                    return compiled.intent, keyword
        return None

    async def respond(self, event: BrainInput, info: TurnInfo) -> AsyncGenerator[BrainOutput, None]:
        """Answer ``event``: Say outputs, one per sentence, then at most one Act.

        Fills ``info.intent`` ("greeting", an intent name, "fallback", "dtmf", "dtmf_invalid",
        "no_input" or "no_input_hangup") and ``info.matched`` (the phrase, keyword or digit that
        decided it). Holds no resources, so cancelling the iteration at any point is safe.
        Raises TypeError for an input type it does not know.
        """
        for output in self._answer(event, info):
            yield output

    def _answer(self, event: BrainInput, info: TurnInfo) -> list[BrainOutput]:
        match event:
            case Start():
                info.intent = "greeting"
                return _say(self.cfg.greeting)
            case UserText(text=text):
                hit = self.match(text)
                if hit is None:
                    info.intent = "fallback"
                    return _say(self.cfg.fallback)
                intent, matched = hit
                info.intent = intent.name
                info.matched.append(matched)
                return _reply_and_act(intent.reply, intent.action)
            case UserDtmf(digit=digit):
                info.matched.append(digit)
                mapping = self._dtmf.get(digit)
                if mapping is None:
                    info.intent = "dtmf_invalid"
                    return _say(INVALID_KEY_REPLY)
                info.intent = "dtmf"
                return _reply_and_act(mapping.reply, mapping.action)
            case NoInputTimeout(count=count):
                no_input = self.cfg.no_input
                if count <= no_input.max_reprompts:
                    info.intent = "no_input"
                    return _say(no_input.reprompt)
                info.intent = "no_input_hangup"
                return _reply_and_act(no_input.hangup_reply, Action("hangup", reason="no input"))
        raise TypeError(f"RulesBrain cannot answer {type(event).__name__}")


def _say(text: str, *, interruptible: bool = True) -> list[BrainOutput]:
    return [Say(s, interruptible=interruptible) for s in split_sentences(text)]


def _reply_and_act(reply: str, action: Action) -> list[BrainOutput]:
    """The reply's sentences then the action; announcing an action cannot be interrupted."""
    if action.kind == "transfer":
        return [*_say(reply, interruptible=False), Act("transfer", destination=action.destination)]
    if action.kind == "hangup":
        return [*_say(reply, interruptible=False), Act("hangup", reason=action.reason)]
    return _say(reply)
