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
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import xxhash

from ._backend import HOST, Backend
from ._format import Entry
from ._lock import _alive
from ._statcache import default_cache_dir as default_statcache_dir
from .errors import CorruptDataError, InvalidInputError, ObjectNotFoundError

#: This host in names of files: no dots, so that names split on them.
HOST_TAG = HOST.replace(".", "_")

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


def _dead_here(name: str) -> bool:
    """Whether ``HOST.PID...`` names a process of this host that is not running."""
    host, _, rest = name.partition(".")
    pid = rest.split(".", 1)[0]
    return host == HOST_TAG and pid.isdigit() and not _alive(int(pid), None)


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
              progress: Callable[[int, int], None] | None = None,
              on_damaged: Callable[[str], None] | None = None) -> Path:
        """Return the cached blob ``digest``, downloading it from ``key`` if needed.

        ``on_damaged`` is called with the digest of a blob whose bytes in the store do not
        match its name (the store moves it aside), before the error is raised.
        """
        cached = self.get(digest)
        if cached is not None:
            return cached
        dest = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        temp = dest.parent / f".{dest.name}.{HOST_TAG}.{os.getpid()}.{secrets.token_hex(4)}.part"
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
                if on_damaged is not None:
                    on_damaged(digest)
                raise CorruptDataError(
                    f"{where}: downloaded bytes hash to {hasher.hexdigest()}, not to the "
                    "blob's name; the stored copy is damaged and was moved to corrupt/ there. "
                    "Put or push the original file again to repair it",
                    where,
                )
            os.chmod(temp, 0o444)
            os.replace(temp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        return dest

    def batches(self, backend: Backend, entries: Sequence[Entry], key: Callable[[str], str],
                progress: Callable[[int, int], None] | None = None,
                on_damaged: Callable[[str], None] | None = None) -> Iterator[list[Entry]]:
        """Yield ``entries`` in batches whose blobs are in the cache while the batch is used.

        Each batch's missing blobs are fetched in parallel; a batch holds at most
        ``limit`` bytes of them (or one blob, if it alone is larger), and the cache is
        trimmed to its limit after each batch has been used.
        """
        batch: list[Entry] = []
        wanted: dict[str, int] = {}
        total = 0
        for entry in entries:
            if entry.ref is not None or entry.digest in wanted:
                batch.append(entry)
                continue
            size = entry.size or 0
            if batch and total + size > self.limit:
                yield from self._fetched(backend, batch, wanted, key, progress, on_damaged)
                batch, wanted, total = [], {}, 0
            batch.append(entry)
            wanted[entry.digest] = size
            total += size
        if batch:
            yield from self._fetched(backend, batch, wanted, key, progress, on_damaged)

    def _fetched(self, backend: Backend, batch: list[Entry], wanted: dict[str, int],
                 key: Callable[[str], str],
                 progress: Callable[[int, int], None] | None,
                 on_damaged: Callable[[str], None] | None) -> Iterator[list[Entry]]:
        # Other processes' trims leave this batch alone while it is in use.
        pin = self._pin(wanted)
        try:
            with ThreadPoolExecutor(FETCHES) as pool:
                for done in [pool.submit(self.fetch, backend, key(d), d, progress, on_damaged)
                             for d in wanted]:
                    done.result()
            yield batch
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pin)
        self.trim()

    def _pin(self, digests: Iterable[str]) -> Path:
        pins = self.root / ".pins"
        pins.mkdir(parents=True, exist_ok=True)
        pin = pins / f"{HOST_TAG}.{os.getpid()}.{secrets.token_hex(4)}"
        pin.write_text("\n".join(digests))
        return pin

    def _pinned(self) -> set[str]:
        """Digests in use by live downloads of this host; pins of dead ones are removed."""
        pinned: set[str] = set()
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root / ".pins"):
                if _dead_here(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    pinned.update(Path(entry.path).read_text().split())
        return pinned

    def trim(self) -> None:
        """Remove least recently used blobs until the cache fits its limit."""
        files = []
        total = 0
        if not self.root.is_dir():
            return
        pinned = self._pinned()
        for sub in os.scandir(self.root):
            if not sub.is_dir(follow_symlinks=False) or sub.name.startswith("."):
                continue
            for f in os.scandir(sub.path):
                if f.name.startswith("."):
                    # A partial download of a process that is gone (killed, say).
                    if f.name.endswith(".part") and _dead_here(f.name.split(".", 2)[2]):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(f.path)
                    continue
                if sub.name + f.name in pinned:
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
