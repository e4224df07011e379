"""Sentence splitting for brains: a reply is said one :class:`Say` per sentence.

Speaking sentence by sentence lets the first sentence play while the next is synthesised, and
gives barge-in a natural unit to cut at. :func:`split_sentences` splits a whole reply;
:class:`SentenceBuffer` releases sentences from text that arrives in pieces (an LLM's token
stream). Pure: it lives with the brains, not with the speech engines, so the brain layer
imports nothing that loads models or threads.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["FILLERS", "SentenceBuffer", "normalise", "split_sentences", "words"]

# Words whose trailing period does not end a sentence ("Dr. Smith", "e.g. this").
_ABBREVIATIONS = frozenset(
    {
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "sr",
        "jr",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "approx",
        "dept",
        "ext",
        "tel",
        "mt",
        "inc",
        "ltd",
        "co",
    }
)
# A sentence ends at ., ! or ? (possibly repeated, possibly followed by closing quotes or
# brackets), then whitespace, then the next word (not yet known to be lowercase). A newline
# always ends a sentence.
_BOUNDARY = re.compile(r"""(?<=[.!?…])["'”’)\]]*\s+(?=\S)|\s*\n\s*""")
_LAST_WORD = re.compile(r"""(\S+?)["'”’)\]]*$""")


def _ends_with_abbreviation(fragment: str) -> bool:
    """True if ``fragment`` ends with a known abbreviation or a lone initial ("J.")."""
    match = _LAST_WORD.search(fragment)
    if match is None:
        return False
    word = match.group(1).lower()
    if not word.endswith("."):
        return False
    stem = word[:-1]
    return stem in _ABBREVIATIONS or (len(stem) == 1 and stem.isalpha())


def _split(text: str) -> tuple[list[str], str]:
    """Complete sentences of ``text`` and the unterminated remainder (may be empty)."""
    sentences: list[str] = []
    current = ""
    pos = 0
    for match in _BOUNDARY.finditer(text):
        piece = text[pos : match.start()]
        boundary = text[match.start() : match.end()]
        pos = match.end()
        candidate = current + piece
        if "\n" not in boundary and (
            text[pos : pos + 1].islower() or _ends_with_abbreviation(candidate)
        ):
            current = candidate + " "
            continue
        candidate = (candidate + boundary.rstrip()).strip()  # keep closing quotes/brackets
        if candidate:
            sentences.append(candidate)
        current = ""
    return sentences, current + text[pos:]


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences, each stripped, in order; empty text gives ``[]``.

    Boundaries are ., ! or ? followed by whitespace and a word that does not start in lowercase
    (closing quotes and brackets stay with their sentence), and line breaks; common
    abbreviations ("Dr.", "e.g.") and single initials do not end a sentence, and decimals
    ("3.5") never do. Text after the last boundary is the
    last sentence even without final punctuation.
    """
    sentences, rest = _split(text)
    rest = rest.strip()
    if rest:
        sentences.append(rest)
    return sentences


class SentenceBuffer:
    """Collects streamed text and releases each sentence as soon as it is complete.

    A sentence is complete once the first character of the next one has arrived, so "Hello."
    is held until the next piece shows whether it was "Hello.5", "Hello... how" or
    "Hello. How".
    """

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, piece: str) -> list[str]:
        """Add ``piece`` of text; returns the sentences it completed (possibly none)."""
        sentences, self._pending = _split(self._pending + piece)
        return sentences

    def flush(self) -> list[str]:
        """Return whatever text is left as a final sentence (or nothing) and empty the buffer."""
        rest, self._pending = self._pending.strip(), ""
        return [rest] if rest else []


# -- words: what the caller said, as tokens the matchers compare ---------------------------------

_APOSTROPHES = re.compile(r"['’‘`]")
_NON_WORD = re.compile(r"[\W_]+")
_DIGITS_AND_LETTERS = re.compile(r"(?<=\d)(?=[^\W\d_])|(?<=[^\W\d_])(?=\d)")

FILLERS = frozenset({"um", "umm", "uhm", "uh", "uhh", "er", "erm", "hmm", "hm", "mm", "mhm",
                     "ah", "eh", "ehm"})
"""Hesitations that carry no meaning; dropped before matching."""

NEGATIONS = frozenset({"not", "dont", "doesnt", "didnt", "never"})
"""A word that negates the term right after it ("not sales", "don't buy"): that match does
not count. Only the word right before: "I didn't get my invoice" still asks for billing.
"no" is not one: with punctuation gone, "No, billing." would read "no billing"."""

_UNITS = {"zero": 0, "oh": 0, "o": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
          "six": 6, "seven": 7, "eight": 8, "nine": 9}
_TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
          "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
         "eighty": 80, "ninety": 90}
_SCALES = {"hundred": 100, "thousand": 1000}
_REPEATS = {"double": 2, "triple": 3}
_ZERO_WORDS = frozenset({"oh", "o"})
"""Said for 0 only inside a run of digits ("two oh one"); alone they are words."""


def normalise(text: str) -> str:
    """Lowercase ``text``, drop apostrophes ("that's" -> "thats"), turn every other run of
    punctuation or whitespace into one space, and strip. Used on both sides of every match."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _APOSTROPHES.sub("", text)
    return _NON_WORD.sub(" ", text).strip()


def _is_number_word(word: str) -> bool:
    return (word in _UNITS or word in _TEENS or word in _TENS or word in _SCALES
            or word in _REPEATS or word.isdigit())


def _number_run(words: list[str]) -> str | None:
    """The digits a run of number words says, or None when it is not a number.

    Digits said one by one are concatenated ("two oh one" -> "201", "2 0 1" -> "201"); tens
    take a following unit ("twenty one" -> "21"); hundred and thousand scale what comes before
    ("two hundred five" -> "205"); "double 3" -> "33". A run of only "oh"/"o" is not a
    number."""
    if all(w in _ZERO_WORDS for w in words):
        return None
    groups: list[int | str] = []
    repeat = 1
    for w in words:
        if w in _REPEATS:
            repeat = _REPEATS[w]
            continue
        if w.isdigit():
            groups.extend([w] * repeat)
        elif w in _UNITS:
            last = groups[-1] if groups else None
            if isinstance(last, int) and last >= 20 and last % 10 == 0 and last < 100:
                groups[-1] = last + _UNITS[w]  # twenty one
            elif isinstance(last, int) and last >= 100 and last % 100 == 0:
                groups[-1] = last + _UNITS[w]  # two hundred five
            else:
                groups.extend([_UNITS[w]] * repeat)
        elif w in _TEENS or w in _TENS:
            value = _TEENS.get(w) or _TENS[w]
            last = groups[-1] if groups else None
            if isinstance(last, int) and last >= 100 and last % 100 == 0:
                groups[-1] = last + value
            else:
                groups.append(value)
        elif w in _SCALES:
            last = groups[-1] if groups else 1
            if isinstance(last, str):
                last = int(last)
            if groups:
                groups[-1] = last * _SCALES[w]
            else:
                groups.append(_SCALES[w])
        repeat = 1
    return "".join(str(g) for g in groups) or None


def words(text: str) -> list[str]:
    """The caller's words as match tokens: normalised (:func:`normalise`), hesitations dropped
    ("um", "uh": :data:`FILLERS`), digits split from letters ("ext2001" -> "ext 2001"), and
    every run of number words or digits turned into one digit string ("extension two oh oh
    one" -> ["extension", "2001"], "one two three" -> ["123"]). "and" between number words is
    dropped ("two thousand and one" -> "2001")."""
    raw = _DIGITS_AND_LETTERS.sub(" ", normalise(text)).split()
    raw = [w for w in raw if w not in FILLERS]
    out: list[str] = []
    i = 0
    while i < len(raw):
        j = i
        while j < len(raw) and (_is_number_word(raw[j]) or raw[j] in _ZERO_WORDS or (
                raw[j] == "and" and j > i and j + 1 < len(raw) and _is_number_word(raw[j + 1]))):
            j += 1
        run = [w for w in raw[i:j] if w != "and"]
        number = _number_run(run) if run else None
        if number is not None and not (len(run) == 1 and run[0] in _ZERO_WORDS):
            out.append(number)
            i = j
        else:
            out.append(raw[i])
            i += 1
    return out
