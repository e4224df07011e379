"""agi-voice media plane: the trio AudioSocket sidecar (see ARCHITECTURE.md)."""

__version__ = "0.1.0"
