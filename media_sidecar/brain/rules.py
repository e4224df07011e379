"""A rule-based dialog brain: intents by phrase and keyword, DTMF menus, no-input handling.

It needs no model and no network, so the embedded default assistant works on a first run
without any API key. Configured by :class:`~media_sidecar.config.schema.RulesBrainConfig`.

Replies are spoken sentence by sentence (one :class:`Say` each). A reply that announces an
action (a transfer or a hangup) is not interruptible: the action is already decided when the
reply starts, and a barge-in that cancelled the turn would also cancel the transfer or hang-up
the caller just asked for (and a farewell must be heard before the line goes dead).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field

from ..config.schema import Action, Destination, Intent, RulesBrainConfig
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
from .fuzzy import Hit, Term
from .text import NEGATIONS, normalise, split_sentences, words

__all__ = ["INVALID_KEY_REPLY", "Heard", "Match", "RulesBrain", "normalise"]

INVALID_KEY_REPLY = "Sorry, that key isn't an option."
EXTENSION_REPLY = "Transferring you to {what}."
HISTORY_SIZE = 20
"""How many :meth:`RulesBrain.heard` reports are kept."""

KEY_PREFIX = frozenset({"press", "pressing", "option", "number", "key", "button", "choose",
                        "select", "pick", "dial", "i", "ill", "id", "will", "want", "like",
                        "the", "please", "ok", "okay", "yes", "and", "so", "to", "for"})
"""Words that may stand around a spoken menu key ("option two, please", "I'll press 1")."""
KEY_NAMES = frozenset({"press", "option", "key", "button"})
"""Words that name a menu key outright: the digit after them is the key, whatever follows."""
EXTENSION_WORDS = frozenset({"extension", "ext", "extn", "station"})
DIGIT_HOMOPHONES = {"to": "two", "too": "two", "for": "four", "fore": "four", "won": "one",
                    "ate": "eight"}
"""Read as digits right after an extension word only ("extension to oh oh three")."""


@dataclass(frozen=True, slots=True)
class Match:
    """What decided an answer: the intent (or spoken key or extension), the configured term,
    the caller's words that matched it, the score (1.0 exact) and how it was found."""

    intent: Intent | None
    term: str
    heard: str
    score: float
    how: str
    """``phrase``, ``keyword`` (exact), ``fuzzy`` (spelling or sound), ``spoken_key`` (a DTMF
    menu key said aloud) or ``extension`` (a destination's extension number said aloud)."""
    action: Action = field(default_factory=Action)
    reply: str = ""

    def record(self) -> dict[str, object]:
        """The match as the call record keeps it."""
        return {"term": self.term, "heard": self.heard, "score": round(self.score, 3),
                "how": self.how}


@dataclass(frozen=True, slots=True)
class _CompiledIntent:
    intent: Intent
    phrases: tuple[Term, ...]
    keywords: tuple[Term, ...]


def _terms(texts: tuple[str, ...]) -> tuple[Term, ...]:
    return tuple(Term(t, tuple(w)) for t in texts if (w := words(t)))


@dataclass(frozen=True, slots=True)
class Heard:
    """One report of what the caller heard of an answer."""

    text: str
    complete: bool


class RulesBrain:
    """The rule brain for one call. Implements :class:`~media_sidecar.brain.base.Brain`.

    Matching (:meth:`match`): the caller's text becomes match tokens
    (:func:`~.text.words`: normalised, hesitations dropped, number words as digits). Exact
    hits win, in the historical order: every intent's ``phrases`` first (the more specific
    evidence), then every intent's ``keywords``, each in intent order. Without an exact hit
    the closest fuzzy or phonetic hit (:mod:`.fuzzy`) scoring at least ``min_confidence``
    wins (a phrase before a keyword on equal scores, then intent order).

    Before intents, a DTMF menu key said aloud ("two", "option one") answers as the key would;
    after them, "extension 2001" transfers to the destination with that extension, when the
    brain was given the assistant's destinations.

    Speech that matches nothing is *not understood* (distinct from silence, which is
    :class:`NoInputTimeout`): the fallback reply, and after ``not_understood.after`` of them in
    a row the caller is offered a person and transferred to ``not_understood.destination``.
    """

    def __init__(self, cfg: RulesBrainConfig,
                 destinations: tuple[tuple[str, Destination], ...] = ()) -> None:
        self.cfg = cfg
        self._intents = tuple(
            _CompiledIntent(intent, _terms(intent.phrases), _terms(intent.keywords))
            for intent in cfg.intents
        )
        self._dtmf = {m.digit: m for m in cfg.dtmf}
        self._extensions: Mapping[str, tuple[str, Destination]] = {
            d.exten: (key, d) for key, d in destinations if d.exten.isdigit()}
        self._heard: deque[Heard] = deque(maxlen=HISTORY_SIZE)
        self.misunderstood = 0
        """Speech turns in a row that matched nothing."""

    @property
    def history(self) -> list[Heard]:
        """What the caller heard of recent answers, oldest first (at most HISTORY_SIZE)."""
        return list(self._heard)

    def heard(self, text: str, complete: bool) -> None:
        """Record what of its last answer the caller heard (``complete=False``: cut off)."""
        self._heard.append(Heard(text, complete))

    def match(self, text: str) -> Match | None:
        """The intent ``text`` asks for, with what matched and how well, or None."""
        tokens = words(text)
        if not tokens:
            return None
        for compiled in self._intents:
            for term in compiled.phrases:
                hit = _affirmed(tokens, term.find(tokens, 1.0))
                if hit is not None:
                    return self._intent_match(compiled.intent, term, hit, "phrase")
        for compiled in self._intents:
            for term in compiled.keywords:
                hit = _affirmed(tokens, term.find(tokens, 1.0))
                if hit is not None:
                    return self._intent_match(compiled.intent, term, hit, "keyword")
        floor = self.cfg.min_confidence
        if floor >= 1.0:
            return None
        best: Match | None = None
        for kind in ("phrases", "keywords"):
            for compiled in self._intents:
                for term in getattr(compiled, kind):
                    hit = _affirmed(tokens, term.find(tokens, floor))
                    if hit is not None and (best is None or hit.score > best.score):
                        best = self._intent_match(compiled.intent, term, hit, "fuzzy")
        return best

    @staticmethod
    def _intent_match(intent: Intent, term: Term, hit: Hit, how: str) -> Match:
        return Match(intent, term.text, hit.heard, hit.score, how, intent.action, intent.reply)

    def spoken_key(self, text: str) -> Match | None:
        """A digit key of the DTMF menu said aloud as the whole utterance ("two", "option 1,
        please"), when the menu has that key. Only digits: "hash" or "star" said aloud are
        words more often than keys."""
        tokens = words(text)
        rest = [w for w in tokens if w not in KEY_PREFIX]
        key = rest[0] if len(rest) == 1 else ""
        for before, after in zip(tokens, tokens[1:], strict=False):
            if before in KEY_NAMES:  # "option 2, <a misheard please>"
                key = after
                break
        if len(key) != 1 or key not in self._dtmf:
            return None
        mapping = self._dtmf[key]
        return Match(None, key, key, 1.0, "spoken_key", mapping.action, mapping.reply)

    def extension(self, text: str) -> Match | None:
        """"extension 2001" (digits or number words) when a destination has that extension."""
        raw = normalise(text).split()
        for i, word in enumerate(raw[:-1]):
            if word not in EXTENSION_WORDS:
                continue
            after = [DIGIT_HOMOPHONES.get(w, w) for w in raw[i + 1:i + 9]]
            tokens = words(" ".join(after))
            if not tokens:
                continue
            before, number = word, tokens[0]
            if number in self._extensions:
                key, dest = self._extensions[number]
                what = dest.description or f"extension {' '.join(number)}"
                return Match(None, key, f"{before} {number}", 1.0, "extension",
                             Action("transfer", destination=key),
                             EXTENSION_REPLY.format(what=what))
        return None

    async def respond(self, event: BrainInput, info: TurnInfo) -> AsyncGenerator[BrainOutput, None]:
        """Answer ``event``: Say outputs, one per sentence, then at most one Act.

        Fills ``info.intent`` ("greeting", an intent name, "dtmf" (a key pressed or said),
        "extension", "fallback" (not understood), "not_understood_transfer", "dtmf_invalid",
        "no_input" or "no_input_<action>"), ``info.matched`` (the phrase, keyword or digit that
        decided it) and ``info.match`` (what matched, the words heard, the score, how). Holds
        no resources, so cancelling the iteration at any point is safe. Raises TypeError for an
        input type it does not know.
        """
        for output in self._answer(event, info):
            yield output

    def _answer(self, event: BrainInput, info: TurnInfo) -> list[BrainOutput]:
        match event:
            case Start():
                info.intent = "greeting"
                return _say(self.cfg.greeting)
            case UserText(text=text):
                return self._understand(text, info)
            case UserDtmf(digit=digit):
                info.matched.append(digit)
                mapping = self._dtmf.get(digit)
                if mapping is None:
                    info.intent = "dtmf_invalid"
                    return _say(INVALID_KEY_REPLY)
                self.misunderstood = 0
                info.intent = "dtmf"
                return _reply_and_act(mapping.reply, mapping.action)
            case NoInputTimeout(count=count):
                no_input = self.cfg.no_input
                if count <= no_input.max_reprompts:
                    info.intent = "no_input"
                    return _say(no_input.reprompt)
                action = no_input.action
                info.intent = f"no_input_{action.kind}"
                return _reply_and_act(no_input.hangup_reply, action)
        raise TypeError(f"RulesBrain cannot answer {type(event).__name__}")

    def _understand(self, text: str, info: TurnInfo) -> list[BrainOutput]:
        hit = self.spoken_key(text) or self.match(text) or self.extension(text)
        if hit is None:
            self.misunderstood += 1
            info.match = {"term": "", "heard": "", "score": 0.0, "how": "none"}
            nu = self.cfg.not_understood
            if nu.after and self.misunderstood >= nu.after and nu.destination:
                info.intent = "not_understood_transfer"
                return _reply_and_act(nu.reply, Action("transfer", destination=nu.destination,
                                                       reason="caller not understood"))
            info.intent = "fallback"
            return _say(self.cfg.fallback)
        self.misunderstood = 0
        info.intent = hit.intent.name if hit.intent is not None else (
            "dtmf" if hit.how == "spoken_key" else hit.how)
        info.matched.append(hit.term)
        info.match = hit.record()
        return _reply_and_act(hit.reply, hit.action)


def _affirmed(tokens: list[str], hit: Hit | None) -> Hit | None:
    """``hit``, unless the word right before it negates it (:data:`~.text.NEGATIONS`: "not
    sales", and "don't buy", which is also how the STT hears a "goodbye" now and then)."""
    if hit is not None and hit.start > 0 and tokens[hit.start - 1] in NEGATIONS:
        return None
    return hit


def _say(text: str, *, interruptible: bool = True) -> list[BrainOutput]:
    return [Say(s, interruptible=interruptible) for s in split_sentences(text)]


def _reply_and_act(reply: str, action: Action) -> list[BrainOutput]:
    """The reply's sentences then the action; announcing an action cannot be interrupted."""
    if action.kind == "transfer":
        return [*_say(reply, interruptible=False),
                Act("transfer", destination=action.destination, reason=action.reason)]
    if action.kind == "hangup":
        return [*_say(reply, interruptible=False), Act("hangup", reason=action.reason)]
    return _say(reply)
