"""Writing a version's files into a directory, and checking a directory against one.

Every file is written to a temporary name in its target directory and renamed over the
target, so an existing file, or a symlink at the target name, is replaced and never
written through. A target whose parent directories lead outside the root (through a
symlink) is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import shutil
import stat as stat_mod
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

import xxhash

from ._backend import current_umask, hash_open_file, kernel_copy
from ._format import Entry
from ._names import check_path
from .errors import CorruptDataError, InvalidInputError, ObjectNotFoundError

log = logging.getLogger(__name__)

MODES = ("auto", "copy", "hardlink", "symlink", "reflink")
CHUNK = 4 * 1024 * 1024
SMALL = 1024 * 1024
_FICLONE = 0x40049409

Progress = Callable[[int, int], None]


def reference_path(uri: str) -> Path:
    """Return the local path of a ``file://`` URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise InvalidInputError(
            f"cannot fetch reference {uri!r}: only file:// references can be downloaded"
        )
    return Path(unquote(parsed.path))


def hash_file(path: Path) -> str:
    with open(path, "rb", buffering=0) as f:
        return hash_open_file(f)


def hash_chunks(chunks: Iterable[bytes]) -> str:
    hasher = xxhash.xxh3_128()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


ABSENT, SAME, OTHER = object(), object(), object()


def _missing_blob(entry: Entry) -> ObjectNotFoundError:
    return ObjectNotFoundError(
        f"blob {entry.digest} of {entry.path!r} is missing from the store; run 'artstore fsck'",
        entry.digest,
    )


class Materializer:
    """Writes entries under ``root`` from blobs found by ``blob_path``."""

    def __init__(
        self,
        root: Path,
        blob_path: Callable[[str], Path | None],
        mode: str = "copy",
        progress: Progress | None = None,
    ) -> None:
        if mode not in MODES:
            raise InvalidInputError(f"unknown link mode {mode!r}; choose one of {', '.join(MODES)}")
        self.root = Path(os.path.abspath(root))
        self.blob_path = blob_path
        self.mode = mode
        self.progress = progress
        self._reflink_ok = mode in ("auto", "reflink")
        self._dirs_ok: set[Path] = set()
        #: Parent directories checked so far: '/'-path in the artifact -> path on disk.
        self._parents: dict[str, str] = {}

    def _target(self, path: str) -> str:
        check_path(path)
        parent, _, name = path.rpartition("/")
        where = self._parents.get(parent)
        if where is None:
            directory = self.root.joinpath(*parent.split("/")) if parent else self.root
            self._make_parents(directory, path)
            where = self._parents[parent] = str(directory)
        return f"{where}/{name}"

    def _make_parents(self, directory: Path, path: str) -> None:
        if directory in self._dirs_ok:
            return
        if directory != self.root:
            self._make_parents(directory.parent, path)
        try:
            st = os.lstat(directory)
        except FileNotFoundError:
            os.mkdir(directory)
            self._dirs_ok.add(directory)
            return
        if stat_mod.S_ISLNK(st.st_mode):
            real = Path(os.path.realpath(directory))
            root_real = Path(os.path.realpath(self.root))
            if directory == self.root or real == root_real or root_real in real.parents:
                self._dirs_ok.add(directory)
                return
            raise InvalidInputError(
                f"refusing to write {path!r}: {directory} is a symlink to {real}, outside "
                f"{self.root}; remove the link or choose another root"
            )
        if not stat_mod.S_ISDIR(st.st_mode):
            raise InvalidInputError(
                f"cannot write {path!r}: {directory} exists and is not a directory"
            )
        self._dirs_ok.add(directory)

    def write(self, entry: Entry) -> None:
        dest = self._target(entry.path)
        state = self._state(dest, entry)
        if state is SAME:
            self._tick(entry.size or 0)
            return
        # A new file is made in place; one that exists is replaced by a rename, so that
        # an interrupted download never leaves an old file half overwritten.
        fresh = state is ABSENT
        if entry.ref is not None:
            self._copy(reference_path(entry.ref), dest, entry, f"reference {entry.ref}", fresh)
        else:
            src = self.blob_path(entry.digest)
            # A symlink can be made to nothing; the other modes fail on opening src.
            if src is None or (self.mode == "symlink" and not os.path.exists(src)):
                raise _missing_blob(entry)
            try:
                self._place(src, dest, entry, fresh)
            except FileNotFoundError as exc:
                if exc.filename is not None and os.fspath(exc.filename) == os.fspath(src):
                    raise _missing_blob(entry) from None
                raise
        streamed = self.mode not in ("symlink", "hardlink") and (entry.size or 0) > SMALL
        self._tick(0 if streamed else entry.size or 0)

    def _tick(self, nbytes: int) -> None:
        if self.progress:
            self.progress(nbytes, 1)

    def _state(self, dest: str, entry: Entry) -> object:
        """ABSENT, SAME (already holds the entry's bytes), or OTHER."""
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            return ABSENT
        if stat_mod.S_ISDIR(st.st_mode):
            raise InvalidInputError(
                f"cannot write {entry.path!r}: {dest} is a directory; remove it first"
            )
        if not stat_mod.S_ISREG(st.st_mode) or entry.size is None or st.st_size != entry.size:
            return OTHER
        if self.mode in ("symlink", "hardlink"):
            return OTHER
        return SAME if hash_file(dest) == entry.digest else OTHER

    def _temp_beside(self, dest: str) -> str:
        directory, _, name = dest.rpartition("/")
        return f"{directory}/.{name}.artstore-{secrets.token_hex(4)}.tmp"

    def _place(self, src: Path, dest: str, entry: Entry, fresh: bool = False) -> None:
        if fresh:
            try:
                self._make(src, dest, entry)
                return
            except FileExistsError:
                pass  # made meanwhile by someone else: replace it as below
        temp = self._temp_beside(dest)
        try:
            self._make(src, temp, entry)
            os.replace(temp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def _make(self, src: Path, temp: str, entry: Entry) -> None:
        """Create ``temp`` (which must not exist) holding the blob, by the chosen mode."""
        try:
            if self.mode == "symlink":
                os.symlink(os.path.abspath(src), temp)
            elif self.mode == "hardlink":
                os.link(src, temp)
            elif self._reflink_ok and self._reflink(src, temp):
                pass
            else:
                if self.mode == "reflink":
                    raise InvalidInputError(
                        f"cannot reflink into {self.root}: the filesystem does not support "
                        "it; use --mode copy or auto"
                    )
                self._copy_verified(src, temp, entry, what=f"blob {entry.digest}")
        except FileExistsError:
            raise
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def _reflink(self, src: Path, temp: str) -> bool:
        with open(src, "rb") as s, open(temp, "xb") as d:
            try:
                fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY):
                    os.unlink(temp)
                    self._reflink_ok = False
                    return False
                raise
        os.chmod(temp, 0o644 & ~current_umask())
        return True

    def _copy(self, src: Path, dest: str, entry: Entry, what: str, fresh: bool = False) -> None:
        if fresh:
            try:
                self._copy_verified(src, dest, entry, what, check=entry.size is not None)
                return
            except FileExistsError:
                pass
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(dest)
                raise
        temp = self._temp_beside(dest)
        try:
            self._copy_verified(src, temp, entry, what, check=entry.size is not None)
            os.replace(temp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def _copy_verified(
        self, src: Path, temp: str, entry: Entry, what: str, check: bool = True
    ) -> None:
        hasher = xxhash.xxh3_128()
        try:
            s = open(src, "rb", buffering=0)
        except FileNotFoundError:
            raise ObjectNotFoundError(f"{what} for {entry.path!r} is missing", entry.digest) from None
        with s, open(temp, "xb+", buffering=0) as d:
            if entry.size is not None and entry.size <= SMALL:
                data = s.read(entry.size + 1)  # one read, into a buffer of its size
                hasher.update(data)
                d.write(data)
                actual = hasher.hexdigest()
            elif kernel_copy(s, d, self.progress) is not None:
                # The kernel copied the bytes; what the file now holds is what is hashed.
                actual = hash_open_file(d)
            else:
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while n := s.readinto(buf):
                    hasher.update(view[:n])
                    d.write(view[:n])
                    if self.progress:
                        self.progress(n, 0)
                actual = hasher.hexdigest()
        if check and actual != entry.digest:
            raise CorruptDataError(
                f"{what} for {entry.path!r} does not match its digest (found "
                f"{actual}); that file was not written",
                str(src),
            )


def list_files(root: Path) -> list[str]:
    """Return the '/'-paths of all files (and symlinks) under ``root``, not following links."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for d in list(dirnames):
            if os.path.islink(os.path.join(dirpath, d)):
                found.append(prefix + d)
        found.extend(prefix + f for f in filenames)
    return found


def remove_extra(root: Path, keep: set[str]) -> list[str]:
    """Delete files under ``root`` that are not in ``keep``; return what was removed."""
    removed = []
    keep_dirs = {p.rsplit("/", i)[0] for p in keep for i in range(1, p.count("/") + 1)}
    for path in list_files(root):
        if path not in keep:
            full = root / path
            if full.is_dir() and not full.is_symlink():
                shutil.rmtree(full)
            else:
                full.unlink()
            removed.append(path)
    for dirpath, _dirs, _files in sorted(os.walk(root), reverse=True):
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        if rel != "." and rel not in keep_dirs:
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
    return removed


def verify_dir(root: Path, entries: Iterable[Entry],
               chosen: Callable[[str], bool] | None = None) -> list[tuple[str, str]]:
    """Compare ``root`` with ``entries``; return (path, problem) for each difference.

    With ``chosen``, only entries and files whose path it accepts are compared.
    """
    if chosen is not None:
        entries = [e for e in entries if chosen(e.path)]
    problems: list[tuple[str, str]] = []
    if not root.is_dir():
        return [(str(root), "directory does not exist")]
    known = {e.path for e in entries}
    for entry in entries:
        full = root.joinpath(*entry.path.split("/"))
        if entry.ref is not None and entry.size is None:
            continue
        if not full.is_file():
            problems.append((entry.path, "missing"))
            continue
        size = full.stat().st_size
        if entry.size is not None and size != entry.size:
            problems.append((entry.path, f"size {size}, expected {entry.size}"))
        elif hash_file(full) != entry.digest:
            problems.append((entry.path, "content differs"))
    for path in list_files(root):
        if path not in known and (chosen is None or chosen(path)):
            problems.append((path, "not in the version"))
    return sorted(problems)
