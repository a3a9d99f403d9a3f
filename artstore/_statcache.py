"""A local cache of file digests keyed by path and stat, so unchanged files are not re-hashed.

The cache lives on the local machine (never in the store, which may be on NFS where SQLite
locking is unreliable). An entry is trusted only if the file's size, modification time
and change time are unchanged, and only if the file was already older than the clock
tick margin when the digest was recorded: a file rewritten with the same size within the
same timestamp tick as its hashing would otherwise look unchanged ("racily clean").
Inode numbers are not used, since network filesystems do not keep them stable.
Any failure of the cache only costs a re-hash: it is logged and ignored.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: A file whose mtime is within this many nanoseconds of the moment it was hashed is not
#: recorded: a same-size rewrite inside one timestamp tick could not be told apart.
RACY_MARGIN_NS = 2_000_000_000


def default_cache_dir() -> Path:
    env = os.environ.get("ARTSTORE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "artstore"


class StatCache:
    """Maps (path, size, mtime, ctime) to a digest."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_cache_dir()
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, int, int, int, str]] = []
        self._broken = os.environ.get("ARTSTORE_NO_STATCACHE") == "1"

    def _connect(self) -> sqlite3.Connection | None:
        if self._broken:
            return None
        if self._db is None:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.directory / "statcache.sqlite3", timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER,"
                    " mtime INTEGER, ctime INTEGER, digest TEXT)"
                )
                self._db = db
            except (OSError, sqlite3.Error):
                log.warning("stat cache unavailable in %s; files will be re-hashed",
                            self.directory, exc_info=True)
                self._broken = True
                return None
        return self._db

    def lookup_many(self, paths: list[str]) -> dict[str, tuple[int, int, int, str]]:
        """Return the cached (size, mtime, ctime, digest) of each path that has one."""
        db = self._connect()
        if db is None or not paths:
            return {}
        found: dict[str, tuple[int, int, int, str]] = {}
        try:
            for start in range(0, len(paths), 500):
                chunk = paths[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in db.execute(
                    f"SELECT path, size, mtime, ctime, digest FROM files WHERE path IN ({marks})",
                    chunk,
                ):
                    found[row[0]] = (row[1], row[2], row[3], row[4])
        except sqlite3.Error:
            log.warning("stat cache lookup failed; re-hashing", exc_info=True)
            return {}
        return found

    def record(self, path: str, st: os.stat_result, digest: str, hashed_at_ns: int) -> None:
        if hashed_at_ns - st.st_mtime_ns < RACY_MARGIN_NS:
            return
        self._pending.append((path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest))

    def flush(self) -> None:
        db = self._connect()
        pending, self._pending = self._pending, []
        if db is None or not pending:
            return
        try:
            with db:
                db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?)", pending)
        except sqlite3.Error:
            log.warning("stat cache update failed", exc_info=True)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def now_ns() -> int:
    return time.time_ns()
