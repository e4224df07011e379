"""The listen mock's wire layer, pure: the query string parsed and validated
(:func:`parse_query`), and the server messages built (:func:`results`, :func:`metadata`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ENCODINGS",
    "ListenParams",
    "QueryError",
    "metadata",
    "parse_query",
    "results",
    "shown_words",
]

ENCODINGS = (
    "linear16",
    "linear32",
    "flac",
    "alaw",
    "mulaw",
    "amr-nb",
    "amr-wb",
    "opus",
    "ogg-opus",
    "speex",
    "g729",
)
"""asyncapi ``ListenV1Encoding``."""
BOOLEANS = (
    "interim_results",
    "vad_events",
    "smart_format",
    "punctuate",
    "multichannel",
    "numerals",
    "diarize",
    "profanity_filter",
    "dictation",
    "detect_entities",
)
"""Parameters whose asyncapi schema is the enum ``'true' | 'false'``."""
DEFAULT_ENDPOINTING_MS = 10
"""asyncapi default for ``endpointing``."""
MIN_UTTERANCE_END_MS = 1000
"""The live service refuses smaller values: HTTP 400 ``Invalid 'utterance_end_ms' value of
'999'.`` (reported in deepgram-python-sdk issue 279)."""


class QueryError(ValueError):
    """The upgrade's query string is refused (HTTP 400); the message is the ``err_msg``."""


@dataclass(frozen=True)
class ListenParams:
    """The query parameters the mock acts on (all others are recorded in ``ListenLog.query``)."""

    encoding: str
    sample_rate: int
    channels: int = 1
    model: str | None = None
    language: str = "en"
    interim_results: bool = False
    endpointing: int | None = DEFAULT_ENDPOINTING_MS
    """Milliseconds of silence that end an utterance; None for ``endpointing=false``."""
    utterance_end_ms: int | None = None
    vad_events: bool = False
    smart_format: bool = False
    punctuate: bool = False
    keyterm: tuple[str, ...] = field(default_factory=tuple)

    @property
    def punctuated(self) -> bool:
        """Transcripts carry punctuation and capitals (``punctuate`` or ``smart_format``)."""
        return self.punctuate or self.smart_format


def _invalid(name: str, value: str) -> QueryError:
    return QueryError(f"Invalid '{name}' value of '{value}'.")


def _int(query: dict[str, list[str]], name: str, minimum: int) -> int | None:
    if name not in query:
        return None
    value = query[name][-1]
    if not value.isdigit() or int(value) < minimum:
        raise _invalid(name, value)
    return int(value)


def parse_query(query: dict[str, list[str]]) -> ListenParams:
    """The parameters of a ``/v1/listen`` upgrade. Raises QueryError for a value outside its
    schema, raw audio without ``encoding`` and ``sample_rate`` (the mock takes raw audio
    only), ``utterance_end_ms`` without ``interim_results=true`` or below 1000."""
    last = {k: v[-1] for k, v in query.items() if v}
    for name in BOOLEANS:
        if name in last and last[name] not in ("true", "false"):
            raise _invalid(name, last[name])
    encoding = last.get("encoding")
    if encoding is not None and encoding not in ENCODINGS:
        raise _invalid("encoding", encoding)
    sample_rate = _int(query, "sample_rate", 1)
    if encoding is None or sample_rate is None:
        raise QueryError(
            "Raw audio needs both 'encoding' and 'sample_rate' (this mock accepts raw audio only)."
        )
    channels = _int(query, "channels", 1) or 1
    endpointing: int | None = DEFAULT_ENDPOINTING_MS
    if "endpointing" in last:
        value = last["endpointing"]
        if value == "false":
            endpointing = None
        elif value != "true":  # true: the default 10 ms
            endpointing = _int(query, "endpointing", 0)
    interim = last.get("interim_results") == "true"
    utterance_end = _int(query, "utterance_end_ms", 0)
    if utterance_end is not None:
        if utterance_end < MIN_UTTERANCE_END_MS:
            raise _invalid("utterance_end_ms", last["utterance_end_ms"])
        if not interim:
            raise QueryError("'utterance_end_ms' requires 'interim_results=true'.")
    return ListenParams(
        encoding=encoding,
        sample_rate=sample_rate,
        channels=channels,
        model=last.get("model"),
        language=last.get("language", "en"),
        interim_results=interim,
        endpointing=endpointing,
        utterance_end_ms=utterance_end,
        vad_events=last.get("vad_events") == "true",
        smart_format=last.get("smart_format") == "true",
        punctuate=last.get("punctuate") == "true",
        keyterm=tuple(query.get("keyterm", ())),
    )


_NOT_WORD = re.compile(r"[^\w']+")


def shown_words(transcript: str, punctuated: bool) -> list[tuple[str, str]]:
    """(word, punctuated_word) per token of a scripted transcript: ``word`` lower-cased without
    punctuation; ``punctuated_word`` the token as scripted, or ``word`` when not punctuated."""
    out = []
    for token in transcript.split():
        word = _NOT_WORD.sub("", token).lower()
        if word:
            out.append((word, token if punctuated else word))
    return out


def _r(x: float) -> float:
    return round(x, 3)


def results(
    *,
    words: list[tuple[str, str]],
    punctuated: bool,
    span: tuple[float, float],
    words_span: tuple[float, float],
    is_final: bool,
    speech_final: bool,
    from_finalize: bool,
    confidence: float,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """A ``Results`` message: ``span`` is the (start, end) audio seconds the result covers,
    ``words_span`` the stretch the words are spread evenly over."""
    w0, w1 = words_span
    step = (w1 - w0) / len(words) if words else 0.0
    items: list[dict[str, Any]] = []
    for i, (word, shown) in enumerate(words):
        item = {
            "word": word,
            "start": _r(w0 + i * step),
            "end": _r(w0 + (i + 1) * step),
            "confidence": confidence,
        }
        if punctuated:
            item["punctuated_word"] = shown
        items.append(item)
    transcript = " ".join(shown if punctuated else word for word, shown in words)
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": _r(span[1] - span[0]),
        "start": _r(span[0]),
        "is_final": is_final,
        "speech_final": speech_final,
        "from_finalize": from_finalize,
        "channel": {
            "alternatives": [
                {
                    "transcript": transcript,
                    "confidence": confidence if words else 0.0,
                    "words": items,
                }
            ]
        },
        "metadata": meta,
    }


def metadata(
    *, request_id: str, sha256: str, created: str, duration: float, channels: int
) -> dict[str, Any]:
    """The ``Metadata`` message sent after CloseStream."""
    return {
        "type": "Metadata",
        "transaction_key": "deprecated",
        "request_id": request_id,
        "sha256": sha256,
        "created": created,
        "duration": _r(duration),
        "channels": channels,
    }
