"""Lease locks that hold on NFS and never outlive a dead holder for long.

A lock is a marker file published with ``link(2)`` from a fully written claim file, so a
marker is never seen half-written, even when its writer is killed mid-way (a plain
create-then-write marker can be left empty by a kill, and then nobody can tell whose it
is). The claim names its owner: a host id, process id, process start time and a random
nonce. While it holds the lock, the owner refreshes the marker's modification time.

A waiter takes over a marker when its owner is provably gone:

- same host (same host id): the process id is dead, or now belongs to a process that
  started at another time;
- another host: the marker was not refreshed for a whole lease, judged on the store's
  own clock (the modification time of the waiter's claim file, just written there), so
  clock skew between machines does not matter.

Taking over renames the stale marker to a unique name first, so only one waiter can win,
and checks that what it moved is the marker it judged stale.

Correctness of the store never rests on these locks alone (FORMAT.md section 6): they
keep concurrent writers from redoing each other's work.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


#: Identifies this machine among those sharing a store. Hostnames repeat across
#: containers, so the boot id joins them; ARTSTORE_HOST_ID overrides both.
HOST_ID = os.environ.get("ARTSTORE_HOST_ID") or f"{socket.gethostname()}/{_boot_id()}"


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    current = _start_time(pid)
    return current is None or start is None or current == start


#: Seconds of waiting for a lock after which a warning says who holds it.
WARN_AFTER = 5.0


class LockTimeout(Exception):
    """Raised by :meth:`LeaseLock.acquire` when the time is up."""


class LeaseLock:
    """One lease lock at ``path``; claim files are written in ``scratch`` (same filesystem)."""

    def __init__(self, path: Path, scratch: Path, lease: float = 60.0, mode: int = 0o644) -> None:
        self.path = path
        self.scratch = scratch
        self.lease = lease
        self.mode = mode
        self._nonce = ""
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _claim(self) -> bytes:
        pid = os.getpid()
        return json.dumps(
            {"host": HOST_ID, "pid": pid, "start": _start_time(pid), "nonce": self._nonce,
             "time": time.time()}
        ).encode()

    def acquire(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._nonce = secrets.token_hex(8)
        claim = self.scratch / f"lock.{os.getpid()}.{self._nonce}"
        fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, self._claim())
            os.fchmod(fd, self.mode)
        finally:
            os.close(fd)
        delay = 0.005
        warn_at = time.monotonic() + WARN_AFTER
        try:
            while True:
                try:
                    os.link(claim, self.path)
                    break
                except FileExistsError:
                    # NOTE: a retransmitted NFS LINK may answer EEXIST although it worked.
                    if os.stat(claim).st_nlink > 1:
                        break
                if self._break_if_stale(claim):
                    continue
                if time.monotonic() >= deadline:
                    raise LockTimeout(str(self.path))
                if warn_at and time.monotonic() >= warn_at:
                    warn_at = 0.0
                    seen = self._read(self.path)
                    owner = seen[0] if seen else None
                    log.warning(
                        "waiting for lock %s, held by %s; it is taken over if that process "
                        "dies (or, on another host, stops refreshing it for %g s)",
                        self.path,
                        f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "?",
                        self.lease,
                    )
                time.sleep(delay)
                delay = min(delay * 1.5, 0.2)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(claim)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                      name=f"artstore-lease-{self.path.name}")
        self._beat.start()

    def _read(self, path: Path) -> tuple[dict | None, float] | None:  # type: ignore[type-arg]
        try:
            with open(path, "rb") as f:
                raw = f.read()
                mtime = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ESTALE:
                return None
            raise
        try:
            owner = json.loads(raw)
            if not isinstance(owner, dict):
                owner = None
        except ValueError:
            owner = None
        return owner, mtime

    def _is_stale(self, owner: dict | None, mtime: float, claim: Path) -> bool:  # type: ignore[type-arg]
        if owner is not None and owner.get("host") == HOST_ID:
            pid = owner.get("pid")
            return not (isinstance(pid, int) and _alive(pid, owner.get("start")))
        now = os.stat(claim).st_mtime  # the store's clock, not ours
        os.utime(claim)  # keep our claim's mtime current for the next reading
        return now - mtime > self.lease

    def _break_if_stale(self, claim: Path) -> bool:
        seen = self._read(self.path)
        if seen is None:
            return True  # released meanwhile: try again at once
        owner, mtime = seen
        if not self._is_stale(owner, mtime, claim):
            return False
        moved = self.path.with_name(f"{self.path.name}.broken.{self._nonce}")
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return True
        again = self._read(moved)
        if again is not None and again[0] != owner:
            # Someone took the lock between our look and the rename: give it back.
            with contextlib.suppress(FileExistsError):
                os.link(moved, self.path)
        else:
            log.warning("took over lock %s from %s", self.path,
                        f"pid {owner.get('pid')} on {owner.get('host')}" if owner is not None
                        else "an unreadable claim")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(moved)
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease / 4):
            seen = self._read(self.path)
            if seen is None or seen[0] is None or seen[0].get("nonce") != self._nonce:
                log.warning("lock %s was taken over while held", self.path)
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        seen = self._read(self.path)
        if seen is not None and seen[0] is not None and seen[0].get("nonce") == self._nonce:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
