"""The call store (issue 17): finished calls in SQLite (default) or PostgreSQL.

``open_store(url)`` opens (and with ``create`` migrates) a store; :class:`CallStore` is the
blocking API the dashboard reads through; :class:`StoreWriter` is how a media worker writes
its records without blocking its trio loop. ``url`` empty: ``sqlite:///<data_dir()>/calls.db``.
"""

from __future__ import annotations

from .db import StoreError, default_url, mask_url
from .paths import data_dir
from .schema import SCHEMA_VERSION
from .store import CallStore, open_db_store


def open_store(url: str = "", *, create: bool = True) -> CallStore:
    """Open the call store at ``url`` (``""``: the default SQLite file in :func:`data_dir`;
    ``sqlite:////abs/path.db``; ``postgresql://user@host/db``, password from
    ``$AGI_VOICE_STORE_PASSWORD`` or the URL). With ``create`` a missing SQLite file is
    created (mode 0640) and missing migrations are applied; without it the store must exist.

    Raises :class:`StoreError` when it cannot be opened, is not a store, or was written by a
    newer agi-voice.
    """
    return open_db_store(url or default_url(), create=create)


__all__ = ["SCHEMA_VERSION", "CallStore", "StoreError", "data_dir", "default_url", "mask_url",
           "open_store"]
