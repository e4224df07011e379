"""An assistant's own vocabulary, to bias speech recognition towards it.

Two uses: a cloud recogniser that takes hints gets them up front (Deepgram nova-3 and Flux
``keyterm``: :func:`default_keyterms`), and the offline recogniser's transcript is re-scored
afterwards (:class:`Rescorer`): a word close in spelling and sound to a word of the vocabulary
("Thales" to "sales") is replaced by it. Moonshine has no hint input, and the assistant's
words are few and known, so a constrained correction after the fact is the cheap equivalent.
Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config.schema import AssistantConfig
from .fuzzy import MIN_FUZZY_LETTERS, STOPWORDS, similarity
from .text import normalise

__all__ = ["MAX_KEYTERMS", "Rescored", "Rescorer", "default_keyterms", "vocabulary_words"]

MAX_KEYTERMS = 100
"""Deepgram bounds keyterm prompting (about 500 tokens per request); a rule brain's keywords
and phrases are far fewer, and a longer list would only lengthen the URL."""

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def default_keyterms(a: AssistantConfig) -> tuple[str, ...]:
    """The terms a Deepgram STT of assistant ``a`` is prompted with when ``stt.keyterms`` is
    empty: its rule brain's keywords and phrases, then its destination names, deduplicated,
    at most :data:`MAX_KEYTERMS`. Empty for a model that takes no keyterms (nova-2 and older
    take ``keywords``, which this does not send)."""
    model = a.stt.model or "nova-3"
    if not model.startswith(("nova-3", "flux")):
        return ()
    seen: dict[str, str] = {}
    for intent in a.brain.intents:
        for term in (*intent.keywords, *intent.phrases):
            seen.setdefault(normalise(term), term.strip())
    for key, _ in a.destinations:
        seen.setdefault(normalise(key), key)
    return tuple(t for n, t in seen.items() if n)[:MAX_KEYTERMS]


def vocabulary_words(a: AssistantConfig) -> frozenset[str]:
    """The content words of assistant ``a``'s vocabulary: its intents' keywords and phrases,
    its STT keyterms and its destination names, normalised, without function words, digits
    and words shorter than :data:`~.fuzzy.MIN_FUZZY_LETTERS`."""
    texts: list[str] = list(a.stt.keyterms)
    for intent in a.brain.intents:
        texts += [*intent.keywords, *intent.phrases]
    texts += [key for key, _ in a.destinations]
    out: set[str] = set()
    for text in texts:
        out.update(w for w in normalise(text).split()
                   if w.isalpha() and len(w) >= MIN_FUZZY_LETTERS and w not in STOPWORDS)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Rescored:
    text: str
    """The transcript with replaced words (the original when nothing was replaced)."""
    changes: tuple[tuple[str, str, float], ...] = ()
    """(heard word, vocabulary word, score) for every replacement."""


class Rescorer:
    """Re-scores transcripts against a fixed vocabulary (one per assistant; stateless)."""

    def __init__(self, vocabulary: frozenset[str], min_score: float) -> None:
        self.vocabulary = vocabulary
        self.min_score = min_score

    @classmethod
    def for_assistant(cls, a: AssistantConfig) -> Rescorer:
        return cls(vocabulary_words(a), a.brain.min_confidence)

    def rescore(self, text: str) -> Rescored:
        """``text`` with each word that is not itself in the vocabulary (nor a function word,
        nor a plural of a vocabulary word) replaced by the closest vocabulary word when that
        scores at least ``min_score`` (:func:`~.fuzzy.similarity`). Punctuation, spacing and
        every other word are kept as they were."""
        if not self.vocabulary or self.min_score >= 1.0:
            return Rescored(text)
        changes: list[tuple[str, str, float]] = []

        def replace(m: re.Match[str]) -> str:
            word = m.group(0)
            key = normalise(word).replace(" ", "")
            if key in self.vocabulary or key in STOPWORDS:
                return word
            best, score = "", 0.0
            for v in self.vocabulary:
                s = similarity(key, v)
                if s > score:
                    best, score = v, s
            if score >= 1.0 or score < self.min_score:  # a plural of a vocabulary word: kept
                return word
            changes.append((word, best, round(score, 3)))
            return best.capitalize() if word[:1].isupper() else best

        rescored = _WORD.sub(replace, text)
        return Rescored(rescored, tuple(changes))
