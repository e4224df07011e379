"""Audio conversion between the call (slin 8 kHz) and a provider's wire format.

G.711 (mu-law, A-law) at 8 kHz is a table lookup each way; PCM16 at another rate goes through
one stateful resampler per direction (no clicks at chunk edges). The down direction can be
reset at a new agent item so the filter's memory of the cut item never leaks into the next.
"""

from __future__ import annotations

import numpy as np

from ..dsp import g711
from ..dsp.resample import Resampler
from .base import ProviderError

__all__ = ["AudioCodec"]


class AudioCodec:
    """``kind`` ulaw, alaw (8 kHz) or pcm (16-bit little-endian at ``rate``)."""

    def __init__(self, kind: str, rate: int = 8000) -> None:
        if kind in ("ulaw", "alaw"):
            if rate != 8000:
                raise ProviderError(f"{kind} at {rate} Hz is not supported", retryable=False)
            self.bytes_per_ms = 8
        elif kind == "pcm":
            if rate % 1000 or not 8000 <= rate <= 48000:
                raise ProviderError(f"PCM at {rate} Hz is not supported", retryable=False)
            self.bytes_per_ms = rate * 2 // 1000
        else:
            raise ProviderError(f"unsupported audio encoding {kind!r}", retryable=False)
        self.name, self.rate = kind, rate
        resample = kind == "pcm" and rate != 8000
        self._up = Resampler(8000, rate) if resample else None
        self._down = Resampler(rate, 8000) if resample else None

    def encode(self, slin8: bytes) -> bytes:
        """Caller audio (slin 8 kHz) in the provider's format."""
        if self.name == "ulaw":
            return g711.ulaw_encode(np.frombuffer(slin8, dtype="<i2"))
        if self.name == "alaw":
            return g711.alaw_encode(np.frombuffer(slin8, dtype="<i2"))
        if self._up is None:
            return slin8
        return self._up.process(np.frombuffer(slin8, dtype="<i2")).astype("<i2").tobytes()

    def decode(self, data: bytes) -> bytes:
        """Provider audio as slin 8 kHz (an odd trailing PCM byte is dropped)."""
        if self.name == "ulaw":
            return g711.ulaw_decode(data).astype("<i2").tobytes()
        if self.name == "alaw":
            return g711.alaw_decode(data).astype("<i2").tobytes()
        if len(data) % 2:
            data = data[:-1]
        if self._down is None:
            return data
        return self._down.process(np.frombuffer(data, dtype="<i2")).astype("<i2").tobytes()

    def reset_down(self) -> None:
        if self._down is not None:
            self._down.reset()
