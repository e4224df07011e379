"""Keypad digits collected into one input for a model: ``1 2 3 #`` is one message, not four.

A group is delivered on the terminator key, at ``max_digits``, or once ``inter_digit_ms``
passed without another key. Used by the relay (digits to a speech-to-speech provider) and the
pipeline (digits to the LLM brain).
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..config.schema import DtmfInputConfig


class DigitGroup:
    def __init__(self, cfg: DtmfInputConfig, deliver: Callable[[list[str]], None]) -> None:
        self.cfg = cfg
        self.deliver = deliver
        self.digits: list[str] = []
        self._deadline = 0.0
        self._timer = False

    def add(self, digit: str, t: float, nursery: trio.Nursery) -> None:
        """One key at trio time ``t``; the gap timer runs in ``nursery``."""
        self.digits.append(digit)
        if digit == self.cfg.terminator or len(self.digits) >= self.cfg.max_digits:
            self.flush()
            return
        self._deadline = t + self.cfg.inter_digit_ms / 1000
        if not self._timer:
            self._timer = True
            nursery.start_soon(self._gap)

    async def _gap(self) -> None:
        try:
            deadline = 0.0
            while deadline != self._deadline:  # a later digit moves the deadline
                deadline = self._deadline
                await trio.sleep_until(deadline)
            self.flush()
        finally:
            self._timer = False

    def flush(self) -> None:
        digits, self.digits = self.digits, []
        if digits:
            self.deliver(digits)

    def clear(self) -> None:
        self.digits = []
