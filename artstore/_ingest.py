"""Getting file contents into the store: hash while copying, publish after one flush.

Each file is read once. Its bytes go to a temporary file in the store while they are
hashed; the temporary files of a whole batch are made durable with one filesystem flush
and only then renamed to their blob names, so a blob name never points at bytes a power
loss could take back (FORMAT.md section 6). Files that the stat cache knows, and whose
blob the store already has, are not read at all.
"""

from __future__ import annotations

import errno
import logging
import os
import stat as stat_mod
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ._backend import Backend, TempFile, hash_open_file, kernel_copy
from ._format import Digest
from ._statcache import StatCache, now_ns
from .errors import InvalidInputError, StoreFullError

log = logging.getLogger(__name__)

CHUNK = 4 * 1024 * 1024
#: Files up to this size are read whole, hashed, and written only if the store lacks them.
SMALL = 1024 * 1024
#: Worker threads for large files: their reads, writes and hashing of big chunks release
#: the interpreter lock, so two cores gain.
WORKERS = 2
#: At most this many files per task given to a worker.
TASK_FILES = 128
#: Existence checks in flight at once on object storage.
REQUESTS = 16

Progress = Callable[[int, int], None]


def blob_key(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest[2:]}"


#: A reused blob older than this gets its modification time refreshed, so that gc's grace
#: period counts from its reuse (FORMAT.md section 6; README, "Why gc is safe"). Blobs
#: refreshed within the last second need no second refresh.
FRESHEN_AFTER = 1.0


def _stat_regular(path: str | Path) -> os.stat_result:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None
    if not stat_mod.S_ISREG(st.st_mode):
        raise InvalidInputError(f"cannot add {path}: not a regular file")
    return st


def _absolute(path: str) -> str:
    # Walked paths are absolute and normal already; abspath is for the odd relative one.
    normal = path.startswith("/") and "/." not in path and "//" not in path
    return path if normal and not path.endswith("/") else os.path.abspath(path)


def _read_upto(fd: int, size: int) -> bytes:
    """Up to ``size`` bytes from ``fd``, fewer only at its end."""
    data = os.read(fd, size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.read(fd, size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _same_file_state(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns)


@dataclass
class _Pending:
    temp: TempFile
    digest: Digest


class Ingest:
    """One batch of files going into a store; :meth:`finish` publishes them."""

    def __init__(
        self, backend: Backend, cache: StatCache | None, progress: Progress | None = None
    ) -> None:
        self.backend = backend
        self.cache = cache
        self.progress = progress
        self._pending: list[_Pending] = []
        self._known: set[str] = set()

    def add_files(
        self, paths: list[Path], link: list[bool] | None = None
    ) -> list[tuple[Digest, int]]:
        """Store each file; return (digest, size) for each, in order.

        ``link`` marks files to be hard-linked into the store rather than copied (the
        caller promises not to modify them; they become read-only).
        """
        keys = [_absolute(os.fspath(p)) for p in paths]
        cached = self.cache.lookup_many(keys) if self.cache else {}
        results: list[tuple[Digest, int] | None] = [None] * len(paths)
        misses: list[tuple[int, os.stat_result]] = []
        # Files the stat cache knows cost a stat or two; only the rest go to workers.
        hits: list[tuple[int, os.stat_result, Digest]] = []
        for i, key in enumerate(keys):
            st = _stat_regular(key)
            hit = cached.get(key)
            if hit and hit[:3] == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
                hits.append((i, st, Digest(hit[3])))
            else:
                misses.append((i, st))
        # Whether the store still has each known file's blob: a stat each on a
        # filesystem, a request each on object storage, where many go at once.
        def have(item: tuple[int, os.stat_result, Digest]) -> bool:
            _i, st, digest = item
            return digest in self._known or self._have(digest, st.st_size)

        if self.backend.is_local or len(hits) < 8:
            found = [have(item) for item in hits]
        else:
            with ThreadPoolExecutor(REQUESTS) as pool:
                found = list(pool.map(have, hits))
        for (i, st, digest), there in zip(hits, found):
            if there:
                results[i] = (digest, st.st_size)
                self._tick(st.st_size)
            else:
                misses.append((i, st))
        misses.sort(key=lambda item: item[0])
        links = link or [False] * len(paths)

        def work(items: list[tuple[int, os.stat_result]]) -> None:
            for i, st in items:
                results[i] = self._add_one(paths[i], keys[i], st, links[i])

        if self.backend.is_local:
            # Small files are stored by this thread alone: each costs a handful of short
            # system calls, and threads taking turns at the interpreter lock around them
            # cost more than they overlap (measured: 1 thread 1.7 s, 4 threads 2.9 s for
            # 20,000 files of 4 KiB). Large files, read in big chunks, go to workers.
            small = [m for m in misses if m[1].st_size <= SMALL]
            large = [m for m in misses if m[1].st_size > SMALL]
        else:
            # On object storage each file waits on requests: many at once pay.
            small, large = [], misses
        workers = WORKERS if self.backend.is_local else REQUESTS
        if len(large) < 2:
            work(large)
            large = []
        with ThreadPoolExecutor(max(1, min(workers, len(large)))) as pool:
            # Runs of files per task, not one task each: a task costs more than a file.
            step = max(1, min(TASK_FILES, len(large) // (workers * 4)))
            done = [pool.submit(work, large[k : k + step]) for k in range(0, len(large), step)]
            work(small)
            for future in done:
                future.result()
        return results  # type: ignore[return-value]

    def _have(self, digest: str, size: int) -> bool:
        """Whether the store has the blob; refreshes its age for gc if it is old."""
        st = self.backend.stat(blob_key(digest))
        if st is None or st[0] != size:
            return False
        # If gc moves the blob away at this moment, the touch fails and the blob is
        # written again; if the touch comes first, gc sees it young and puts it back.
        return time.time() - st[1] <= FRESHEN_AFTER or self.backend.touch(blob_key(digest))

    def _add_one(
        self, path: Path, key: str, st: os.stat_result, link: bool = False
    ) -> tuple[Digest, int]:
        if link and st.st_size > SMALL:
            digest = self._link_in(path, st)
            st = os.stat(path)  # linking changed its ctime and mode
        else:
            digest = self._copy_in(path, st)
        if self.cache:
            self.cache.record(key, st, digest, now_ns())
        streamed = st.st_size > SMALL and not link
        if self.progress:
            self.progress(0 if streamed else st.st_size, 1)  # streamed bytes went by chunk
        return digest, st.st_size

    def _link_in(self, path: Path, st: os.stat_result) -> Digest:
        """Hash a file, then hard-link it into the store instead of copying its bytes."""
        try:
            with open(path, "rb", buffering=0) as src:
                hasher = xxhash.xxh3_128()
                buf = bytearray(CHUNK)
                nread = 0
                while n := src.readinto(buf):
                    hasher.update(memoryview(buf)[:n])
                    nread += n
                self._check_unchanged(path, st, os.fstat(src.fileno()), nread)
        except OSError as exc:
            raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None
        digest = Digest(hasher.hexdigest())
        if digest in self._known or self._have(digest, st.st_size):
            return digest
        self._known.add(digest)
        if not self.backend.link_in(path, blob_key(digest)):
            # Another filesystem: fall back to a copy, which re-reads and re-hashes.
            self._known.discard(digest)
            return self._copy_in(path, st)
        return digest

    def add_bytes(self, data: bytes) -> Digest:
        digest = Digest(xxhash.xxh3_128_hexdigest(data))
        self._store_small(data, digest)
        return digest

    def _tick(self, nbytes: int) -> None:
        if self.progress:
            self.progress(nbytes, 1)

    def _copy_in(self, path: Path, st: os.stat_result) -> Digest:
        try:
            return self._copy_in_unchecked(path, st)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StoreFullError(
                    f"the store's filesystem is full ({exc.strerror}) while storing {path}; "
                    "nothing was committed. Free space (artstore gc) and run again"
                ) from None
            raise

    def _copy_in_unchecked(self, path: Path, st: os.stat_result) -> Digest:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None
        try:
            if st.st_size <= SMALL:
                try:
                    # One read of what the stat promised, plus a byte to see growth: a
                    # buffer of that size, not of SMALL (a large allocation is an
                    # mmap and munmap per file, expensive with several threads).
                    data = _read_upto(fd, st.st_size + 1)
                    after = os.fstat(fd)
                finally:
                    os.close(fd)
                self._check_unchanged(path, st, after, len(data))
                digest = Digest(xxhash.xxh3_128_hexdigest(data))
                self._store_small(data, digest)
                return digest
            with os.fdopen(fd, "rb", buffering=0) as src:
                return self._stream(path, src, st)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            if exc.filename and str(exc.filename).startswith(self.backend.location):
                raise InvalidInputError(
                    f"cannot write into the store at {self.backend.location}: {exc.strerror} "
                    f"({exc.filename}); check that you may write there (for a shared store: "
                    "that you are in its group)"
                ) from None
            raise InvalidInputError(f"cannot read {path}: {exc.strerror}") from None

    def _check_unchanged(
        self, path: Path, before: os.stat_result, after: os.stat_result, nread: int
    ) -> None:
        if not _same_file_state(before, after) or nread != before.st_size:
            raise InvalidInputError(
                f"{path} changed while it was being read; nothing of it was stored. "
                "Add it again once it is no longer being written"
            )

    def _store_small(self, data: bytes, digest: Digest) -> None:
        if digest in self._known:
            return
        self._known.add(digest)
        key = blob_key(digest)
        if self._have(digest, len(data)):
            # A small blob is cheap to compare: a damaged copy is replaced, not trusted.
            try:
                if self.backend.read(key) == data:
                    return
                log.warning("blob %s was damaged; storing a good copy", digest)
            except FileNotFoundError:
                pass  # removed by gc just now: store it again
        self._pending.append(_Pending(self.backend.temp_with(data), digest))

    def _stream(self, path: Path, src, st: os.stat_result) -> Digest:  # type: ignore[no-untyped-def]
        temp = self.backend.temp()
        try:
            assert temp.file is not None
            copied = kernel_copy(src, temp.file, self.progress)
            if copied is not None:
                # What is hashed is what the store's file holds, read back from the page
                # cache; the source's state before and after says it did not change.
                nread = copied
                digest = Digest(hash_open_file(temp.file))
            else:
                hasher = xxhash.xxh3_128()
                nread = 0
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while n := src.readinto(buf):
                    chunk = view[:n]
                    hasher.update(chunk)
                    temp.write(chunk)
                    nread += n
                    if self.progress:
                        self.progress(n, 0)
                digest = Digest(hasher.hexdigest())
            temp.close()
            self._check_unchanged(path, st, os.fstat(src.fileno()), nread)
        except BaseException:
            temp.discard()
            raise
        # An existing blob of this digest is replaced by the fresh copy rather than
        # trusted: the bytes are written already, and a damaged copy gets repaired.
        if digest in self._known:
            temp.discard()
        else:
            self._known.add(digest)
            self._pending.append(_Pending(temp, digest))
        return digest

    def finish(self) -> None:
        """Make every new blob durable, then give it its name."""
        if self._pending:
            self.backend.sync()
            self.backend.publish_many((i.temp, blob_key(i.digest)) for i in self._pending)
            self._pending = []
        if self.cache:
            self.cache.flush()

    def abort(self) -> None:
        for item in self._pending:
            item.temp.discard()
        self._pending = []
