"""Where agi-voice keeps its state: the call store, recordings.

One function, :func:`data_dir`, used by the store, the recordings and the dashboard, so they
agree on the place without configuration: ``$AGI_VOICE_DATA_DIR`` if set, else systemd's
``StateDirectory=`` (``$STATE_DIRECTORY``, its first entry), else ``~/.local/state/agi-voice``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_MODE = 0o750


def data_dir() -> Path:
    """The data directory, created (mode 0750) when missing.

    Raises :class:`OSError` when it cannot be created (a read-only home, permissions).
    """
    given = os.environ.get("AGI_VOICE_DATA_DIR", "")
    if not given:
        state = os.environ.get("STATE_DIRECTORY", "")
        given = state.split(":")[0] if state else ""
    path = Path(given) if given else Path.home() / ".local" / "state" / "agi-voice"
    if not path.is_dir():
        path.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    return path
