"""The dialog brain interface: what the agent says and does, given what the caller did.

A brain sees text and digits, never audio. It answers each input with an async stream of
:class:`Say` (one sentence or phrase, spoken in order) and at most one :class:`Act` (transfer or
hang up, carried out after everything said before it has been played). The rule brain of this
package is one implementation; an LLM brain streams sentences the same way, so the media
session never changes when brains do.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    interruptible: bool = True


@dataclass(frozen=True, slots=True)
class Act:
    kind: Literal["transfer", "hangup"]
    destination: str = ""
    reason: str = ""


BrainOutput = Say | Act


@dataclass(frozen=True, slots=True)
class UserText:
    text: str


@dataclass(frozen=True, slots=True)
class UserDtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class NoInputTimeout:
    count: int
    """1 for the first timeout since the caller last spoke, 2 for the second, ..."""


@dataclass(frozen=True, slots=True)
class Start:
    """The call has started: produce the greeting."""


BrainInput = Start | UserText | UserDtmf | NoInputTimeout


@dataclass(slots=True)
class TurnInfo:
    """What the brain reports about how it handled an input (for the call record)."""

    intent: str = ""
    matched: list[str] = field(default_factory=list)
    match: dict[str, object] = field(default_factory=dict)
    """The rule brain's match for speech: ``term`` (the keyword or phrase), ``heard`` (the
    caller's words that matched), ``score`` (0..1, 1.0 exact), ``how`` (phrase, keyword,
    fuzzy, spoken_key, extension, or none when nothing matched)."""
    first_token: float | None = None
    """trio time an LLM's first token (text or tool call) arrived."""
    first_sentence: float | None = None
    """trio time the first complete sentence was released."""
    llm_done: float | None = None
    llm_ms: float = 0.0
    """Time spent in LLM requests this turn."""
    llm_requests: int = 0


class Brain(Protocol):
    """One per call. ``respond`` must be cancellable (barge-in cancels the turn)."""

    def respond(self, event: BrainInput, info: TurnInfo) -> AsyncGenerator[BrainOutput, None]: ...

    def heard(self, text: str, complete: bool) -> None:
        """Tell the brain what of its last answer the caller actually heard."""
