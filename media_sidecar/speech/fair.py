"""The inference pool's queue: round-robin across calls, speech recognition before synthesis.

Pure (no I/O, no clock): the pool pushes a waiting request with its call (any hashable) and
its class, and pops one whenever an inference process is free.

- Classes are strict priorities: every queued request of class 0 (speech-to-text) goes before
  any of class 1 (synthesis). A transcription is always on the critical path of a turn (the
  caller waits in silence until it is done), while a call's later sentence is synthesised
  while its previous one plays; and a caller produces at most one utterance per turn, so
  recognition cannot starve synthesis.
- Within a class, calls take turns: the call served longest ago goes first, one request per
  turn, whatever each has queued. A call with ten sentences queued gets every other slot when
  one other call waits, never all ten first. Each call's own requests stay in order.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["FairQueue"]

T = TypeVar("T")


class FairQueue(Generic[T]):
    def __init__(self, classes: int = 2) -> None:
        self._classes: list[OrderedDict[Hashable, deque[T]]] = [
            OrderedDict() for _ in range(classes)]
        self._where: dict[int, tuple[int, Hashable]] = {}
        """id(item) -> (class, call), for :meth:`remove`."""

    def __len__(self) -> int:
        return len(self._where)

    def push(self, call: Hashable, cls: int, item: T) -> None:
        """Queue ``item`` behind ``call``'s earlier ones. A call new to the class takes its
        turn after the calls already waiting."""
        self._classes[cls].setdefault(call, deque()).append(item)
        self._where[id(item)] = (cls, call)

    def pop(self) -> T | None:
        """The next item to serve, or None when nothing waits."""
        for calls in self._classes:
            if not calls:
                continue
            call, items = next(iter(calls.items()))
            item = items.popleft()
            del self._where[id(item)]
            if items:
                calls.move_to_end(call)  # served: its next request waits for the others
            else:
                del calls[call]
            return item
        return None

    def remove(self, item: T) -> bool:
        """Take a waiting ``item`` out (cancelled); False if it is not queued."""
        where = self._where.pop(id(item), None)
        if where is None:
            return False
        cls, call = where
        items = self._classes[cls][call]
        items.remove(item)
        if not items:
            del self._classes[cls][call]
        return True

    def waiting(self, cls: int) -> int:
        return sum(len(items) for items in self._classes[cls].values())
