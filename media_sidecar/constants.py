"""Audio constants shared by every part of the media plane.

The call leg toward Asterisk is 8 kHz, 16-bit signed little-endian mono PCM in 20 ms frames
(the AudioSocket() dialplan app always forces slin 8 kHz). Everything that talks about frame
sizes or rates takes them from here.
"""

from typing import Final

SAMPLE_RATE: Final = 8000
"""The call-leg rate toward Asterisk, in Hz."""

FRAME_MS: Final = 20
"""One AudioSocket frame of audio, in milliseconds."""

FRAME_SECONDS: Final = FRAME_MS / 1000

SAMPLE_WIDTH: Final = 2
"""Bytes per sample of slin (16-bit signed little-endian)."""

FRAME_SAMPLES: Final = SAMPLE_RATE * FRAME_MS // 1000
"""Samples in one 20 ms frame at 8 kHz (160)."""

FRAME_BYTES: Final = FRAME_SAMPLES * SAMPLE_WIDTH
"""Bytes of one 20 ms slin frame at 8 kHz (320)."""


def frame_bytes(rate: int, sample_width: int = SAMPLE_WIDTH) -> int:
    """Bytes of one 20 ms frame at `rate` Hz with `sample_width` bytes per sample."""
    return rate * FRAME_MS // 1000 * sample_width
