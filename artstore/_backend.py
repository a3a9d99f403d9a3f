"""The storage interface and its filesystem implementation.

Everything artstore keeps goes through :class:`Backend`: read a key, create a key only if it
is absent, publish a key atomically, list a prefix, delete, lock. Keys are '/'-separated
relative paths such as ``blobs/ab/cdef...``. A store on object storage is a second
implementation of this class; nothing above it touches files directly, except through the
optional :meth:`Backend.local_path` capability that link modes use.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import itertools
import logging
import os
import secrets
import socket
import stat
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import filelock

from ._lock import LeaseLock, LockTimeout
from .errors import InvalidInputError, LockTimeoutError

log = logging.getLogger(__name__)

#: How long a lock survives its holder when the holder's host cannot tell whether it lives.
LEASE_SECONDS = 60.0

HOST = socket.gethostname()

#: The file that marks a store, with its format version (FORMAT.md section 3).
MARKER = "artstore.json"


#: Read size for streaming an object.
CHUNK = 4 * 1024 * 1024


#: Bytes per in-kernel copy call (each one reports progress).
RANGE_CHUNK = 64 * 1024 * 1024
_RANGE_UNSUPPORTED = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}


def kernel_copy(src: BinaryIO, dst: BinaryIO,
                progress: Callable[[int, int], None] | None = None) -> int | None:
    """Copy the rest of ``src`` to the empty ``dst`` inside the kernel (copy_file_range).

    Returns the bytes copied, or None (with ``src`` and ``dst`` rewound and ``dst`` empty)
    where the kernel cannot. Writing through the kernel's own copy is several times
    faster here than write(2) of the same bytes from user space (1 GiB: 0.5 s, not 4 s).
    """
    if not hasattr(os, "copy_file_range"):
        return None
    start = src.tell()
    total = 0
    try:
        while n := os.copy_file_range(src.fileno(), dst.fileno(), RANGE_CHUNK):
            total += n
            if progress:
                progress(n, 0)
    except OSError as exc:
        if exc.errno not in _RANGE_UNSUPPORTED or total:
            raise
        src.seek(start)
        dst.seek(0)
        dst.truncate()
        return None
    return total


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def hash_open_file(f: BinaryIO) -> str:
    """The XXH3-128 hex digest of ``f`` from its start."""
    import xxhash

    hasher = xxhash.xxh3_128()
    f.seek(0)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n := f.readinto(buf):  # type: ignore[attr-defined]
        hasher.update(view[:n])
    return hasher.hexdigest()


class Lease(Protocol):
    """A lock held by a marker in the store; see :mod:`_lock`."""

    def acquire(self, timeout: float) -> None: ...

    def release(self) -> None: ...


class TempFile:
    """A file being written in the store's temporary area, not yet published."""

    def __init__(self, backend: "Backend", path: str | Path, fobj: BinaryIO | None) -> None:
        self.backend = backend
        self.path = path
        self.file = fobj
        #: True once the file has its final (read-only) mode.
        self.ready = fobj is None

    def write(self, data: bytes) -> None:
        assert self.file is not None
        self.file.write(data)

    def close(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()

    def discard(self) -> None:
        try:
            # Closing flushes the last buffered bytes, which fails again on a full disk.
            with contextlib.suppress(OSError):
                self.close()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class Backend(ABC):
    """What artstore needs from the place a store lives."""

    #: The URL or path the backend was opened on, for messages.
    location: str
    #: Whether the store is laid out for several Unix users (filesystems only).
    shared = False

    def set_shared(self, shared: bool) -> None:
        """Lay out new files for several Unix users of one group, where that means anything."""
        self.shared = shared

    @abstractmethod
    def read(self, key: str) -> bytes:
        """Return the bytes at ``key``; raise FileNotFoundError if absent."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int | None:
        """Return the size in bytes of ``key``, or None if it is absent."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` at ``key`` only if ``key`` is absent; return whether it was."""

    @abstractmethod
    def publish(self, key: str, data: bytes, readonly: bool = True) -> None:
        """Write ``data`` at ``key`` atomically, replacing what is there."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Return the names directly under ``prefix`` (empty if it does not exist)."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def _lease(self, name: str) -> "Lease":
        """A lease lock named ``name`` in this store, not yet acquired."""

    @contextlib.contextmanager
    def lock(self, name: str, timeout: float = 600.0) -> Iterator[None]:
        """Hold the store-wide lock ``name`` (released at the end of the ``with``)."""
        # Processes of this host queue on a kernel lock first (released by the kernel if
        # the holder dies), so only one of them at a time contends for the lease in the
        # store, which is what excludes other hosts.
        local_dir = _local_lock_dir()
        deadline = time.monotonic() + timeout
        queue = None
        if local_dir is not None:
            local = local_dir / hashlib.sha1(f"{self.location}|{name}".encode()).hexdigest()
            queue = filelock.FileLock(local, timeout=timeout)
        try:
            if queue is not None:
                try:
                    queue.acquire(timeout=min(timeout, 5.0))
                except filelock.Timeout:
                    log.warning("waiting for lock %s in %s, held by another process of "
                                "this host", name, self.location)
                    queue.acquire(timeout=max(0.0, deadline - time.monotonic()))
            lease = self._lease(name)
            lease.acquire(max(0.0, deadline - time.monotonic()))
        except (filelock.Timeout, LockTimeout):
            if queue is not None and queue.is_locked:
                queue.release()
            raise LockTimeoutError(
                f"lock {name!r} in {self.location} is held by another process "
                f"(waited {timeout:g} s); retry, or check for a stuck artstore process"
            ) from None
        except OSError as exc:
            if queue is not None and queue.is_locked:
                queue.release()
            raise LockTimeoutError(f"cannot take lock {name!r} in {self.location}: {exc}") from None
        try:
            yield
        finally:
            lease.release()
            if queue is not None:
                queue.release()

    def read_chunks(self, key: str) -> Iterator[bytes]:
        """Yield the bytes at ``key`` in pieces; raise FileNotFoundError if absent."""
        with open(self._local_or_fail(key), "rb", buffering=0) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    def _local_or_fail(self, key: str) -> Path:
        path = self.local_path(key)
        if path is None:
            raise NotImplementedError(f"{type(self).__name__} must implement read_chunks")
        return path

    def prepare_create(self, shared: bool) -> None:
        """Check that a new store can be made here, and make room for it."""

    @property
    def is_local(self) -> bool:
        """Whether objects are files this machine can open (link modes, inotify)."""
        return False

    @abstractmethod
    def temp(self) -> TempFile:
        """Open a new temporary file for streaming bytes into the store."""

    def temp_with(self, data: bytes) -> TempFile:
        """A closed temp file holding ``data``, ready for :meth:`publish_temp`."""
        temp = self.temp()
        try:
            temp.write(data)
            temp.close()
        except BaseException:
            temp.discard()
            raise
        return temp

    def link_in(self, source: Path, key: str) -> bool:
        """Make a local file the object at ``key`` without copying it; False if impossible."""
        return False

    @abstractmethod
    def sync(self) -> None:
        """Make everything written so far durable."""

    @abstractmethod
    def publish_temp(self, temp: TempFile, key: str) -> bool:
        """Move a closed temp file to ``key`` unless ``key`` exists; return whether moved."""

    def publish_many(self, items: Iterable[tuple[TempFile, str]]) -> None:
        """:meth:`publish_temp` each (temp file, key) pair."""
        for temp, key in items:
            self.publish_temp(temp, key)

    @abstractmethod
    def touch(self, key: str) -> bool:
        """Refresh the modification time of ``key`` (marks a reused object as young).

        Returns False if ``key`` does not exist (any more).
        """

    @abstractmethod
    def stat(self, key: str) -> tuple[int, float] | None:
        """Return (size, modification time) of ``key``, or None if it is absent."""

    @abstractmethod
    def rename(self, key: str, new_key: str) -> None:
        """Move ``key`` to ``new_key`` (used to quarantine a damaged object)."""

    def local_path(self, key: str) -> Path | None:
        """Return a filesystem path for ``key`` where the backend has one."""
        return None


def _local_lock_dir() -> Path | None:
    """This user's private directory for host-local queue locks, or None if unusable."""
    path = Path(tempfile.gettempdir()) / f"artstore-locks-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError:
        return None
    # Someone else's directory (or a symlink) in a shared /tmp must not be trusted.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        log.debug("not using %s for local lock queues: not a private directory", path)
        return None
    return path


def _load_syncfs():  # type: ignore[no-untyped-def]
    # The C library is already loaded into the interpreter: look the symbol up there
    # (ctypes.util.find_library would run ldconfig, tens of milliseconds at start-up).
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    return fn


_syncfs_fn: Any = False


def _syncfs(fd: int) -> int:
    global _syncfs_fn
    if _syncfs_fn is False:
        _syncfs_fn = _load_syncfs()
    if _syncfs_fn is None:
        return -1
    return int(_syncfs_fn(fd))


class LocalBackend(Backend):
    """A store in a directory of a local or network filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)
        #: Published files are read-only for everyone; rewritable records get owner write.
        self.file_mode = 0o444
        self.writable_mode = 0o644
        self.shared = False
        self._tmp = root / "tmp"
        # Hot paths (one call per file) build keys' paths as strings, not Path objects.
        self._root_s = str(root)
        self._tmp_s = str(self._tmp)
        self._made_dirs: set[Path] = set()
        self._made_dirs_s: set[str] = set()
        self._umask = current_umask()
        self._temp_pid = 0
        self._temp_prefix = ""
        self._temp_seq = itertools.count()

    def set_shared(self, shared: bool) -> None:
        """Lay out new files and directories for several Unix users of one group.

        Directories become group-writable and setgid (so everything in the store keeps
        the store's group); rewritable records and lock files become group-writable.
        Blobs and content-addressed records stay read-only for everyone.
        """
        self.shared = shared
        self.writable_mode = 0o664 if shared else 0o644

    @property
    def is_local(self) -> bool:
        return True

    def prepare_create(self, shared: bool) -> None:
        root = self.root
        if root.exists() and not root.is_dir():
            raise InvalidInputError(f"cannot create a store at {root}: it is a file")
        if root.is_dir() and any(n for n in os.listdir(root) if n not in ("tmp", "locks", MARKER)):
            raise InvalidInputError(
                f"cannot create a store at {root}: the directory is not empty and is "
                "not an artstore store; choose an empty or new directory"
            )
        root.mkdir(parents=True, exist_ok=True)
        if shared:
            os.chmod(root, 0o2775)
            self.set_shared(True)

    # -- helpers ---------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root / key

    def _ensure_dir(self, directory: Path) -> None:
        if directory in self._made_dirs:
            return
        if not self.shared:
            directory.mkdir(parents=True, exist_ok=True)
        else:
            missing = []
            here = directory
            while not here.exists():
                missing.append(here)
                here = here.parent
            for d in reversed(missing):
                try:
                    d.mkdir()
                except FileExistsError:
                    continue  # another writer made it, and sets its mode
                # mkdir's mode is cut by the umask; set it explicitly.
                os.chmod(d, 0o2775)
        self._made_dirs.add(directory)

    def _key_path(self, key: str) -> str:
        return f"{self._root_s}/{key}"

    def _ensure_parent(self, path: str) -> None:
        parent = path.rpartition("/")[0]
        if parent not in self._made_dirs_s:
            self._ensure_dir(Path(parent))
            self._made_dirs_s.add(parent)

    def _temp_path(self) -> str:
        if self._tmp_s not in self._made_dirs_s:
            self._ensure_dir(self._tmp)
            self._made_dirs_s.add(self._tmp_s)
        # One random part per process, then a counter: unique without a syscall per name.
        if self._temp_pid != os.getpid():
            self._temp_pid, self._temp_prefix = os.getpid(), secrets.token_hex(6)
        return f"{self._tmp_s}/{HOST}.{self._temp_pid}.{self._temp_prefix}.{next(self._temp_seq)}.tmp"

    def _write_temp(self, data: bytes, readonly: bool) -> str:
        path = self._temp_path()
        mode = self.file_mode if readonly else self.writable_mode
        # Created with its final mode where the umask keeps it; a file is writable
        # through the descriptor that created it, whatever its mode.
        exact = mode & ~self._umask == mode
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode if exact else 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if not exact:
                os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        return path

    # -- the interface -----------------------------------------------------------------

    def read(self, key: str) -> bytes:
        with open(self._path(key), "rb") as f:
            return f.read()

    def exists(self, key: str) -> bool:
        return os.path.exists(self._path(key))

    def size(self, key: str) -> int | None:
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            return None

    def create(self, key: str, data: bytes) -> bool:
        dest = self._path(key)
        self._ensure_dir(dest.parent)
        temp = self._write_temp(data, readonly=True)
        try:
            self.sync()
            try:
                # link(2) fails if the name exists: this is the compare-and-swap.
                os.link(temp, dest)
            except FileExistsError:
                # NOTE: over NFS a retransmitted LINK whose first reply was lost answers
                # EEXIST although it succeeded; the temp file's link count tells the truth.
                return os.stat(temp).st_nlink > 1
            return True
        finally:
            os.unlink(temp)

    def publish(self, key: str, data: bytes, readonly: bool = True) -> None:
        dest = self._path(key)
        self._ensure_dir(dest.parent)
        temp = self._write_temp(data, readonly)
        try:
            os.replace(temp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def list(self, prefix: str) -> list[str]:
        try:
            return os.listdir(self._path(prefix))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def _lease(self, name: str) -> LeaseLock:
        path = self._path(f"locks/{name}")
        self._ensure_dir(path.parent)
        self._ensure_dir(self._tmp)
        return LeaseLock(path, self._tmp, LEASE_SECONDS, self.writable_mode)

    def temp(self) -> TempFile:
        path = self._temp_path()
        # Readable too: a file copied in by the kernel is hashed from here.
        return TempFile(self, path, open(path, "xb+"))  # noqa: SIM115 - closed by TempFile

    def temp_with(self, data: bytes) -> TempFile:
        return TempFile(self, self._write_temp(data, readonly=True), None)

    def link_in(self, source: Path, key: str) -> bool:
        dest = self._path(key)
        self._ensure_dir(dest.parent)
        # The store's copy and the user's file become one inode: make it read-only, so
        # neither can be changed in place by accident.
        os.chmod(source, stat.S_IMODE(os.stat(source).st_mode) & ~0o222)
        try:
            os.link(source, dest)
        except FileExistsError:
            return True
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                return False
            raise
        return True

    def sync(self) -> None:
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _syncfs(fd) == 0:
                return
            log.debug("syncfs failed (errno %d), falling back to sync", ctypes.get_errno())
        finally:
            os.close(fd)
        os.sync()

    def publish_temp(self, temp: TempFile, key: str) -> bool:
        temp.close()
        dest = self._key_path(key)
        if not temp.ready:
            os.chmod(temp.path, self.file_mode)
        self._ensure_parent(dest)
        # NOTE: renaming over an existing blob is harmless (the bytes hashed to its name),
        # and is how a damaged copy gets replaced.
        os.replace(temp.path, dest)
        return True

    def touch(self, key: str) -> bool:
        try:
            os.utime(self._key_path(key))
        except FileNotFoundError:
            return False
        except OSError as exc:
            # Another user's read-only blob in a shared store cannot be touched; gc's
            # grace period then rests on the blob's own age.
            if exc.errno not in (errno.EPERM, errno.EACCES, errno.EROFS):
                raise
        return True

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def stat(self, key: str) -> tuple[int, float] | None:
        try:
            st = os.stat(self._key_path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_size, st.st_mtime

    def rename(self, key: str, new_key: str) -> None:
        dest = self._path(new_key)
        self._ensure_dir(dest.parent)
        os.replace(self._path(key), dest)


class URLPath(str):
    """A store URL such as ``s3://bucket/prefix``; ``/`` appends a key, as for a Path."""

    def __truediv__(self, key: str) -> "URLPath":
        return URLPath(f"{self}/{key}")


def is_url(location: str) -> bool:
    return "://" in location


def open_backend(location: Path | URLPath) -> Backend:
    """The backend for a store location (see :func:`artstore._store.store_location`)."""
    if isinstance(location, URLPath):
        scheme = location.split("://", 1)[0]
        if scheme != "s3":
            raise InvalidInputError(
                f"cannot open a store at {location}: unknown scheme {scheme!r}; use a "
                "filesystem path or an s3://bucket/prefix URL"
            )
        try:
            from ._s3 import S3Backend
        except ImportError as exc:
            raise InvalidInputError(
                f"cannot open {location}: object storage needs the obstore package "
                f"({exc.name} is missing); install it with: pip install obstore"
            ) from None
        return S3Backend(location)
    return LocalBackend(location)
