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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config.schema import AssistantConfig
from .fuzzy import MIN_FUZZY_LETTERS, STOPWORDS, similarity
from .text import normalise

__all__ = ["MAX_KEYTERMS", "AcousticChoice", "AcousticRescorer", "Rescored", "Rescorer",
           "default_keyterms", "vocabulary_words"]

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


# -- acoustic re-scoring -----------------------------------------------------------------------

DIGIT_WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
               "6": "six", "7": "seven", "8": "eight", "9": "nine"}
SPAN_CANDIDATES = 24
"""Most candidates made by replacing words of the transcript (the closest in spelling and
sound first): each costs the decoder a pass over the whole sentence."""
MAX_SPAN_WORDS = 3
"""Longest run of heard words one term may replace ("your own theme" -> "your sales team")."""
WHOLE_UTTERANCE_WORDS = 5
"""Transcripts of at most this many words also get each term alone as a candidate ("Feel."
-> "Sales."): a short utterance may be misheard entirely."""
_TRAIL = re.compile(r"[^\w']+$")
_LEAD = re.compile(r"^[^\w']+")


@dataclass(frozen=True, slots=True)
class Candidate:
    text: str
    """A whole transcript the recogniser might have heard."""
    term: str
    """The assistant's term in it (a keyword, a phrase, a menu key said aloud)."""


@dataclass(frozen=True, slots=True)
class AcousticChoice:
    """The candidate accepted in place of the free transcript."""

    text: str
    term: str
    score: float
    """The candidate's log-probability given the caller's audio (natural log)."""
    free_score: float
    """The reference on the same audio: the better of the free transcript's and the
    recogniser's own decoding's (what it finds alone)."""

    def record(self, heard: str) -> dict[str, object]:
        """How the call record keeps the match (``how``: ``acoustic``)."""
        return {"term": self.term, "heard": heard, "score": round(self.score, 3),
                "free_score": round(self.free_score, 3), "how": "acoustic"}


class AcousticRescorer:
    """Acoustic, grammar-constrained re-scoring for a rule brain over the offline STT.

    When the transcript matches no intent (or only by fuzzy matching, or after the text
    re-scoring changed it), :meth:`candidates` lists what the caller might have said with
    the assistant's own words: every term alone and with "please" (short transcripts), and
    the transcript with a run of up to :data:`MAX_SPAN_WORDS` words replaced by a term, the
    closest in spelling and sound first. The recogniser scores them against the audio
    (:mod:`media_sidecar.speech.moonshine_scorer`) together with the free transcript and its
    own decoding; :meth:`choose` accepts the best candidate the rule brain understands when
    its log-probability is within ``margin`` of the better of those two. Pure: no I/O;
    stateless.
    """

    def __init__(self, terms: tuple[str, ...], margin: float,
                 understands: Callable[[str], Any]) -> None:
        """``terms``: what the rule brain matches; ``understands(text)``: the brain's match of
        ``text`` (None: not understood)."""
        self.terms = terms
        self.margin = margin
        self.understands = understands
        self._letters = {t: _letters(t) for t in terms}

    @classmethod
    def for_assistant(cls, a: AssistantConfig) -> AcousticRescorer | None:
        """The re-scorer of assistant ``a``, or None when ``stt.acoustic`` is off, its STT is
        not Moonshine, or its rule brain has nothing to match."""
        from .rules import RulesBrain

        if (a.stt.engine != "moonshine" or not getattr(a.stt, "acoustic", True)
                or (a.uses_llm and not a.llm.rules_first)):
            return None
        brain = RulesBrain(a.brain, a.destinations)
        terms: dict[str, None] = {}
        for intent in a.brain.intents:
            for t in (*intent.phrases, *intent.keywords):
                if t.strip():
                    terms[t.strip()] = None
        for m in a.brain.dtmf:
            word = DIGIT_WORDS.get(m.digit)
            if word:
                terms[word] = None
                terms[f"option {word}"] = None
        if not terms:
            return None

        def understands(text: str) -> Any:
            return brain.spoken_key(text) or brain.match(text) or brain.extension(text)

        margin = float(getattr(a.stt, "acoustic_margin", DEFAULT_MARGIN))
        return cls(tuple(terms), margin, understands)

    def needed(self, heard: str, text: str) -> bool:
        """Whether to score candidates for transcript ``heard`` that the brain gets as
        ``text`` (after the text re-scoring): it is not understood, understood only by a
        fuzzy match, or the text re-scoring changed it."""
        if not heard.strip():
            return False
        match = self.understands(text)
        return match is None or getattr(match, "how", "") == "fuzzy" or text != heard

    def candidates(self, heard: str) -> list[Candidate]:
        """What the caller might have said instead of ``heard``, each with the term it
        carries; never ``heard`` itself, no duplicates."""
        out: dict[str, Candidate] = {}
        tokens = heard.split()
        if len(tokens) <= WHOLE_UTTERANCE_WORDS:
            for t in self.terms:
                cap = t[:1].upper() + t[1:]
                forms = (f"{cap}.", f"{cap}, please.") if len(tokens) > 1 else (f"{cap}.",)
                for text in forms:
                    out.setdefault(text, Candidate(text, t))
        ranked: list[tuple[float, int, str, str]] = []
        for i in range(len(tokens)):
            for j in range(i + 1, min(len(tokens), i + MAX_SPAN_WORDS) + 1):
                span = _letters(" ".join(tokens[i:j]))
                if not span:
                    continue
                for t, letters in self._letters.items():
                    if span == letters:
                        continue
                    sim = _sound_alike(span, letters)
                    ranked.append((sim, len(ranked), _replace(tokens, i, j, t), t))
        ranked.sort(key=lambda r: (-r[0], r[1]))
        n = 0
        for _, _, text, t in ranked:
            if n >= SPAN_CANDIDATES:
                break
            if text != heard and text not in out:
                out[text] = Candidate(text, t)
                n += 1
        out.pop(heard, None)
        return list(out.values())

    def best(self, candidates: list[Candidate], scores: list[float]) -> AcousticChoice | None:
        """The best-scoring candidate the brain understands, whatever its score.

        ``scores``: the recogniser's log-probabilities of the free transcript, of each
        candidate in order, then of its own decoding of the audio
        (:meth:`~media_sidecar.speech.moonshine_scorer.MoonshineScorer.score`); the reference
        is the better of the first and the last. Raises ValueError for a list of another
        length."""
        if len(scores) != len(candidates) + 2:
            raise ValueError(f"{len(scores)} scores for {len(candidates)} candidates")
        free = max(scores[0], scores[-1])
        ranked = sorted(zip(scores[1:-1], range(len(candidates)), strict=True), reverse=True)
        for score, k in ranked:
            c = candidates[k]
            if self.understands(c.text) is not None:
                return AcousticChoice(c.text, c.term, score, free)
        return None

    def choose(self, candidates: list[Candidate], scores: list[float]
               ) -> AcousticChoice | None:
        """:meth:`best` when it scores at least the reference minus :attr:`margin`; else
        None (not understood stays)."""
        best = self.best(candidates, scores)
        if best is None or best.score < best.free_score - self.margin:
            return None
        return best


DEFAULT_MARGIN = 2.5


def _letters(text: str) -> str:
    return normalise(text).replace(" ", "")


def _sound_alike(heard: str, term: str) -> float:
    """Ranking only: the better of spelling and sound (Metaphone) similarity."""
    import jellyfish
    from rapidfuzz.distance import Indel

    spelling = Indel.normalized_similarity(heard, term)
    if not heard.isalpha() or not term.isalpha():
        return spelling
    sound = Indel.normalized_similarity(jellyfish.metaphone(heard), jellyfish.metaphone(term))
    return max(spelling, (spelling + sound) / 2)


def _replace(tokens: list[str], i: int, j: int, term: str) -> str:
    """``tokens`` with ``tokens[i:j]`` replaced by ``term``, keeping the run's leading
    punctuation, its capital and its trailing punctuation."""
    first, last = tokens[i], tokens[j - 1]
    lead = m.group(0) if (m := _LEAD.search(first)) else ""
    trail = m.group(0) if (m := _TRAIL.search(last)) else ""
    body = term
    stripped = first[len(lead):]
    if stripped[:1].isupper():
        body = term[:1].upper() + term[1:]
    return " ".join([*tokens[:i], f"{lead}{body}{trail}", *tokens[j:]])
