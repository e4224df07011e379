"""The call-record file: append-only JSON lines, rotated by size, pruned by age.

``calls.jsonl`` is the live file; rotation renames it to ``calls.jsonl.1`` (the previous
``.1`` becomes ``.2`` ...) and deletes what goes past ``backups``, like ``logrotate`` or
:class:`logging.handlers.RotatingFileHandler`. Retention deletes records whose ``ended_at``
(else ``started_at``) is older than ``max_age_days``: whole files whose last write is older,
then the expired head of the oldest remaining file (records are appended in the order calls
end, so the expired ones are always at the head). A line that cannot be read is kept.

Blocking file I/O: the caller runs these in a worker thread and serialises them (one lock in
:class:`~media_sidecar.session.records.RecordWriter`). Several media workers (processes) share
one file: each append, rotation and sweep holds an exclusive ``flock`` on the file's directory,
so a rotation or a sweep's rewrite never loses another worker's line. The wall clock is used because records
are stamped with it. New files are created mode 0640 (records hold caller data).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("agi_voice.records")

FILE_MODE = 0o640


@dataclass
class SweepResult:
    files_deleted: int = 0
    records_pruned: int = 0


class RotatingJsonLines:
    """One JSON-lines file with its rotated backups. Not thread-safe (see the module doc)."""

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = 0, backups: int = 0,
                 max_age_days: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.max_age_days = max_age_days
        self.clock = clock

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive across processes (the media workers) for the block. Raises OSError."""
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def append(self, line: str) -> None:
        """Append one line (no newline in it), rotating first when it would not fit.
        Raises OSError."""
        with self._locked():
            self._append(line)

    def _append(self, line: str) -> None:
        data = (line + "\n").encode("utf-8")
        if self.max_bytes:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(data) > self.max_bytes:
                self.rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _backup_numbers(self) -> list[int]:
        prefix = self.path.name + "."
        out = []
        for p in self.path.parent.glob(f"{self.path.name}.*"):
            suffix = p.name[len(prefix):]
            if suffix.isdigit():
                out.append(int(suffix))
        return sorted(out)

    def rotate(self) -> None:
        """The live file becomes ``.1`` and a new one starts; backups past ``backups`` are
        deleted (with ``backups: 0`` the live file itself is). Raises OSError."""
        for n in self._backup_numbers():
            if n >= self.backups:
                self.backup(n).unlink(missing_ok=True)
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for n in range(self.backups - 1, 0, -1):
            if self.backup(n).exists():
                os.replace(self.backup(n), self.backup(n + 1))
        if self.path.exists():
            os.replace(self.path, self.backup(1))
        log.info("call records rotated: %s -> %s", self.path, self.backup(1))

    def files(self) -> list[Path]:
        """Existing files, oldest first (the highest backup number first, the live file last)."""
        out = [self.backup(n) for n in reversed(self._backup_numbers())]
        if self.path.exists():
            out.append(self.path)
        return out

    def sweep(self) -> SweepResult:
        """Delete records older than ``max_age_days`` (nothing when it is 0). Raises OSError."""
        if not self.max_age_days:
            return SweepResult()
        with self._locked():
            return self._sweep()

    def _sweep(self) -> SweepResult:
        result = SweepResult()
        cutoff = self.clock() - self.max_age_days * 86400
        for f in self.files():
            try:
                mtime = f.stat().st_mtime
            except FileNotFoundError:
                continue
            if mtime < cutoff:
                f.unlink(missing_ok=True)
                result.files_deleted += 1
                continue
            result.records_pruned = self._prune_head(f, cutoff)
            break  # every later file is newer
        if result.files_deleted or result.records_pruned:
            log.info("call records older than %g days deleted: %d file(s), %d record(s)",
                     self.max_age_days, result.files_deleted, result.records_pruned)
        return result

    def _prune_head(self, f: Path, cutoff: float) -> int:
        """Drop the leading records of ``f`` that ended before ``cutoff``; 0 without a rewrite
        when the first one is recent."""
        with f.open("rb") as src:
            first = src.readline()
            if not _expired(first, cutoff):
                return 0
            pruned = 1
            tmp = f.with_name(f".{f.name}.sweep")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            with os.fdopen(fd, "wb") as dst:
                for line in src:
                    if _expired(line, cutoff):
                        pruned += 1
                        continue
                    dst.write(line)
                    # from here on everything is kept: copy the rest as it is
                    dst.writelines(src)
                    break
        os.replace(tmp, f)
        return pruned


def _expired(line: bytes, cutoff: float) -> bool:
    """Whether a record line ended before ``cutoff``; False when it cannot be read."""
    try:
        rec = json.loads(line)
        stamp = rec.get("ended_at") or rec.get("started_at")
        return bool(stamp) and dt.datetime.fromisoformat(stamp).timestamp() < cutoff
    except (ValueError, TypeError, AttributeError):
        return False
