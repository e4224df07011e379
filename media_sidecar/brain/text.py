"""Sentence splitting for brains: a reply is said one :class:`Say` per sentence.

Speaking sentence by sentence lets the first sentence play while the next is synthesised, and
gives barge-in a natural unit to cut at. :func:`split_sentences` splits a whole reply;
:class:`SentenceBuffer` releases sentences from text that arrives in pieces (an LLM's token
stream). Pure: it lives with the brains, not with the speech engines, so the brain layer
imports nothing that loads models or threads.
"""

from __future__ import annotations

import re

__all__ = ["SentenceBuffer", "split_sentences"]

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
