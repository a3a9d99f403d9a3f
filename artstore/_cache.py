"""A local cache of blobs fetched from a store on object storage, bounded in size.

Downloading a version from a remote store fetches only the blobs of the entries asked
for, several at a time, into ``blobs/`` of ``$ARTSTORE_CACHE_DIR`` (default
``~/.cache/artstore``),
hashing each as it arrives: a blob whose bytes do not match its name is never cached.
After each batch the least recently used blobs are removed until the cache is no larger
than ``$ARTSTORE_CACHE_SIZE`` (default 10 GiB). A version larger than the cache is
fetched and written out one cache-sized batch at a time.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import xxhash

from ._backend import Backend
from ._statcache import default_cache_dir as default_statcache_dir
from ._format import Entry
from .errors import CorruptDataError, InvalidInputError, ObjectNotFoundError

#: Blobs fetched at once.
FETCHES = 8
DEFAULT_LIMIT = 10 * 1024**3

_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """``'500M'``, ``'10GiB'``, ``'1.5g'`` or a plain byte count, as bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise InvalidInputError(
            f"cannot read {text!r} as a size; give bytes or a number with K, M, G or T "
            "(for example 500M or 10G)"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def default_cache_dir() -> Path:
    """``blobs/`` in artstore's cache directory (the one that holds the stat cache)."""
    return default_statcache_dir() / "blobs"


def default_limit() -> int:
    env = os.environ.get("ARTSTORE_CACHE_SIZE")
    return parse_size(env) if env else DEFAULT_LIMIT


class BlobCache:
    """Blobs named by digest under ``root``, at most ``limit`` bytes after each trim."""

    def __init__(self, root: Path | None = None, limit: int | None = None) -> None:
        self.root = root if root is not None else default_cache_dir()
        self.limit = default_limit() if limit is None else limit

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:]

    def evict(self, digest: str) -> None:
        """Forget a cached blob (one found damaged, say)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))

    def get(self, digest: str) -> Path | None:
        """The cached blob, marked as just used; None if it is not cached."""
        path = self.path(digest)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def fetch(self, backend: Backend, key: str, digest: str,
              progress: Callable[[int, int], None] | None = None) -> Path:
        """Return the cached blob ``digest``, downloading it from ``key`` if needed."""
        cached = self.get(digest)
        if cached is not None:
            return cached
        dest = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        temp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.part"
        hasher = xxhash.xxh3_128()
        try:
            with open(temp, "xb") as f:
                try:
                    for chunk in backend.read_chunks(key):
                        hasher.update(chunk)
                        f.write(chunk)
                        if progress:
                            progress(len(chunk), 0)
                except FileNotFoundError:
                    raise ObjectNotFoundError(
                        f"blob {digest} is missing from {backend.location}; run "
                        f"'artstore fsck --store {backend.location}'",
                        digest,
                    ) from None
            if hasher.hexdigest() != digest:
                where = f"{backend.location}/{key}"
                raise CorruptDataError(
                    f"{where}: downloaded bytes hash to {hasher.hexdigest()}, not to the "
                    "blob's name; the remote copy is damaged (run 'artstore fsck' there)",
                    where,
                )
            os.chmod(temp, 0o444)
            os.replace(temp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return dest

    def batches(self, backend: Backend, entries: Sequence[Entry], key: Callable[[str], str],
                progress: Callable[[int, int], None] | None = None) -> Iterator[list[Entry]]:
        """Yield ``entries`` in batches whose blobs are in the cache while the batch is used.

        Each batch's missing blobs are fetched in parallel; a batch holds at most
        ``limit`` bytes of them (or one blob, if it alone is larger), and the cache is
        trimmed to its limit after each batch has been used.
        """
        batch: list[Entry] = []
        wanted: dict[str, int] = {}
        for entry in entries:
            if entry.ref is not None or entry.digest in wanted:
                batch.append(entry)
                continue
            size = entry.size or 0
            if batch and sum(wanted.values()) + size > self.limit:
                yield from self._fetched(backend, batch, wanted, key, progress)
                batch, wanted = [], {}
            batch.append(entry)
            wanted[entry.digest] = size
        if batch:
            yield from self._fetched(backend, batch, wanted, key, progress)

    def _fetched(self, backend: Backend, batch: list[Entry], wanted: dict[str, int],
                 key: Callable[[str], str],
                 progress: Callable[[int, int], None] | None) -> Iterator[list[Entry]]:
        with ThreadPoolExecutor(FETCHES) as pool:
            for done in [pool.submit(self.fetch, backend, key(d), d, progress) for d in wanted]:
                done.result()
        yield batch
        self.trim()

    def trim(self) -> None:
        """Remove least recently used blobs until the cache fits its limit."""
        files = []
        total = 0
        if not self.root.is_dir():
            return
        for sub in os.scandir(self.root):
            if not sub.is_dir(follow_symlinks=False):
                continue
            for f in os.scandir(sub.path):
                if f.name.startswith("."):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    st = f.stat(follow_symlinks=False)
                    files.append((st.st_mtime, st.st_size, f.path))
                    total += st.st_size
        files.sort()
        for _mtime, size, path in files:
            if total <= self.limit:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            total -= size
