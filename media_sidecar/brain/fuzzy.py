"""Fuzzy and phonetic matching of the caller's words against an assistant's vocabulary.

Speech recognisers on 8 kHz phone audio mishear in predictable ways: a consonant for a similar
one ("Thales" for "sales", "cells" for "sales"), a vowel for another ("police" for "please"),
one word split in two or two joined. A term (a keyword or phrase of an intent, a word of the
vocabulary) matches a span of the caller's words when they are close both in spelling
(rapidfuzz's normalised Indel similarity) and in sound (a Metaphone key from jellyfish, with
the consonants a phone line confuses collapsed into one class).

Guards against false hits: function words ("you", "by", "for", ...) and short terms (under
:data:`MIN_FUZZY_LETTERS` letters: "buy", "bye", "bill"'s neighbours) match only exactly, and
digits only exactly. Pure: no I/O.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jellyfish
from rapidfuzz.distance import Indel

__all__ = ["MIN_FUZZY_LETTERS", "STOPWORDS", "Hit", "Term", "phonetic_key", "phonetic_keys",
           "similarity"]

MIN_FUZZY_LETTERS = 4
"""Shorter terms match only exactly (their phonetic keys are one or two letters long)."""

STOPWORDS = frozenset("""
a an the and or but if so of to too in on at by for from with about as into over under up down
off out i im id ill ive me my mine myself you youre youd youll your yours we were our ours us
thats whats dont cant wont isnt theres heres
he she it its his her hers him they them their theirs this that these those there here where
what when who whom which why how is are was be been being am do does did done have has had
having can could would should will shall may might must not no yes yeah yep ok okay just like
please thanks thank hi hello hey well now then than very really all any some get got go
going want wanna need would let lets know see say said tell call talk speak put give make
press option number key button dial
""".split())
"""Words that match a term only exactly (their neighbours are other common words)."""

# Metaphone letters a telephone-band recogniser confuses, collapsed to one class each; the
# semivowels and h are dropped (often lost), and every vowel is one class. The 300-3400 Hz
# band removes what tells the fricatives apart (s, f, th, sh: "sales" heard as "fails" or
# "Thales") and blurs the labials (b, v, p: "billing" as "villain"); one key cannot hold both
# groupings, so there are two and a word's sound similarity is the better of the two.
_COMMON = {"D": "T", "G": "K", "J": "K", "Q": "K", "E": "A", "I": "A", "O": "A", "U": "A",
           "H": None, "W": None, "Y": None}
_FRICATIVES = str.maketrans({**_COMMON, "0": "S", "X": "S", "Z": "S", "F": "S", "V": "S",
                             "B": "P"})
_LABIALS = str.maketrans({**_COMMON, "0": "S", "X": "S", "Z": "S", "F": "P", "V": "P",
                          "B": "P"})


@functools.lru_cache(maxsize=4096)
def phonetic_keys(word: str) -> tuple[str, str]:
    """Two sound keys for ``word``: its Metaphone code with the fricatives collapsed
    ("sales", "cells", "fails" and "thales" all give "SLS"), and with the labials collapsed
    ("billing" and "villain" give "PLNK" and "PLN"). Digits give themselves."""
    if not word.isalpha():
        return word, word
    code = jellyfish.metaphone(word)
    return code.translate(_FRICATIVES), code.translate(_LABIALS)


def phonetic_key(word: str) -> str:
    """The first of :func:`phonetic_keys` (fricatives collapsed)."""
    return phonetic_keys(word)[0]


@functools.lru_cache(maxsize=16384)
def similarity(heard: str, term: str) -> float:
    """How close the word (or joined words) ``heard`` is to ``term``, 0..1.

    1.0 for the same word, its plural (s/es), or the singular of a plural term ("sale" for
    "sales"); otherwise the larger of the spelling similarity and the mean of spelling and
    sound similarity (sound weighs a third when a sound key is under three letters), so a
    word that sounds the same but is spelt differently scores between the two. 0.0 when either is a digit string that
    differs, ``term`` is shorter than :data:`MIN_FUZZY_LETTERS`, or ``heard`` is a function
    word (:data:`STOPWORDS`)."""
    if _same(heard, term):
        return 1.0
    if (len(term) < MIN_FUZZY_LETTERS or heard in STOPWORDS or not heard.isalpha()
            or not term.isalpha()):
        return 0.0
    forms = (term, term[:-1]) if term.endswith("s") and len(term) > MIN_FUZZY_LETTERS else (
        term,)  # a plural term is also heard in the singular ("sail" is closer to "sale")
    best = 0.0
    for form in forms:
        spelling = Indel.normalized_similarity(heard, form)
        keys = list(zip(phonetic_keys(heard), phonetic_keys(form), strict=True))
        sound = max(Indel.normalized_similarity(a, b) for a, b in keys)
        # a key of one or two letters ("SL" for "sale" and "value") says less: it counts half
        weight = 0.5 if min(len(k) for pair in keys for k in pair) >= 3 else 1 / 3
        best = max(best, spelling, (1 - weight) * spelling + weight * sound)
    return best


@dataclass(frozen=True, slots=True)
class Hit:
    """Where a term matched the caller's words, and how well."""

    score: float
    heard: str
    """The caller's words that matched (joined with spaces)."""
    start: int
    end: int
    """The matched span of the caller's words, ``words[start:end]``."""

    @property
    def exact(self) -> bool:
        return self.score >= 1.0


@dataclass(frozen=True, slots=True)
class Term:
    """A keyword or phrase, as the match tokens of :func:`~.text.words`."""

    text: str
    """As configured (what the record shows)."""
    tokens: tuple[str, ...]

    def find(self, heard: list[str], floor: float) -> Hit | None:
        """The best span of ``heard`` that matches this term with a score of at least
        ``floor`` (1.0: exact matches only), or None.

        Spans of the term's length are compared word by word (every word must reach the
        floor; the score is the mean weighted by the term's word lengths); spans one word
        shorter or longer are compared as joined strings, which catches split and merged
        words ("help desk"/"helpdesk", "bill ing"). Exact matches are found first. Runs on
        the call's event loop: spans whose length alone rules them out are skipped."""
        n = len(self.tokens)
        if not n or not heard:
            return None
        best: Hit | None = None
        joined_term = "".join(self.tokens)
        # A joined span's spelling similarity is at most 2*shorter/(sum of lengths), and must
        # reach 2*floor-1 for the score to reach the floor (less 0.1: a plural term is also
        # compared in the singular, one letter shorter).
        need = max(0.0, 2 * floor - 1.1)
        for size in (n, n - 1, n + 1):
            if size < 1 or size > len(heard):
                continue
            for start in range(len(heard) - size + 1):
                span = heard[start:start + size]
                if size == n:
                    score = self._aligned(span, floor)
                elif size == 1 and span[0] in STOPWORDS:
                    continue
                else:
                    joined = "".join(span)
                    short, long = sorted((len(joined), len(joined_term)))
                    if 2 * short < need * (short + long):
                        continue
                    if floor >= 1.0:
                        score = 1.0 if _same(joined, joined_term) else 0.0
                    else:
                        score = similarity(joined, joined_term)
                    if score < 1.0 and n > 1 and any(w in STOPWORDS for w in span):
                        continue  # a function word glued to a neighbour is not a term
                if score >= floor and (best is None or score > best.score):
                    best = Hit(score, " ".join(span), start, start + size)
                    if score >= 1.0:
                        return best
        return best

    def _aligned(self, span: list[str], floor: float) -> float:
        total = weight = 0.0
        for heard_word, term_word in zip(span, self.tokens, strict=True):
            if floor >= 1.0:
                s = 1.0 if _same(heard_word, term_word) else 0.0
            else:
                s = 1.0 if heard_word == term_word else similarity(heard_word, term_word)
            if s < floor:
                return 0.0
            total += s * len(term_word)
            weight += len(term_word)
        return total / weight if weight else 0.0


def _same(heard: str, term: str) -> bool:
    """The exact-match rule of :func:`similarity` (the word, its plural, a plural term's
    singular), without computing any similarity."""
    return (heard == term or heard in (term + "s", term + "es") or (
        term.endswith("s") and heard == term[:-1] and len(heard) >= MIN_FUZZY_LETTERS))
