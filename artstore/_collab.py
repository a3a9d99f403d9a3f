"""Collaborative versions: many writers upsert files into one pending version, one finishes it.

A pending version is named by (artifact name, distributed id). Each upsert stores its blobs,
then publishes one contribution record under ``staging/NAME/ID/`` with a create-if-absent
write, so a contribution is whole or absent and writers never share a file. ``finish``
merges every contribution into one manifest, commits it, and writes a seal record under
``sealed/NAME/ID`` naming the version and the contributions it took in.

The protocol that keeps a late contribution from being dropped silently (FORMAT.md
section 7): a finisher holds the id's lock and publishes a CLOSING marker before it lists
contributions. An upsert checks for the marker after publishing its record. No marker
means the finisher will list the record. A marker means the upsert waits for the lock,
then reads the seal: if the seal names its record, the contribution is in the version;
if not, the record is withdrawn and SealedError raised; if there is no seal (the finish
failed), the record stays staged for the next finish.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _format as fmt
from ._backend import HOST
from ._format import Entry
from ._names import check_name
from .errors import (
    ConflictError,
    InvalidInputError,
    InvalidNameError,
    LockTimeoutError,
    SealedError,
    TypeMismatchError,
)

if TYPE_CHECKING:
    from ._artifact import Artifact
    from ._store import Store

log = logging.getLogger(__name__)

CLOSING = "CLOSING"
POLICIES = ("error", "newest", "oldest")
#: Filesystems on which inotify cannot see other machines' writes.
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "ceph", "fuse", "9p", "afs")


def check_distributed_id(value: object) -> str:
    try:
        return check_name(value)
    except InvalidNameError:
        raise InvalidNameError(
            f"invalid distributed id {value!r}: use 1-128 characters of letters, digits, "
            "'_', '-' and '.', not starting with '.' or '-'"
        ) from None


@dataclass
class Contribution:
    """One writer's staged files."""

    key: str
    writer: dict[str, Any]
    created: float
    entries: list[Entry]

    @property
    def label(self) -> str:
        w = self.writer
        return f"{w.get('host')}:{w.get('pid')} (run {w.get('run')})"


@dataclass
class Pending:
    """A collaborative version not yet finished."""

    name: str
    distributed_id: str
    type: str | None
    contributions: list[Contribution]
    closing: bool

    @property
    def entry_count(self) -> int:
        return len({e.path for c in self.contributions for e in c.entries})

    @property
    def size(self) -> int:
        return sum(e.size or 0 for c in self.contributions for e in c.entries)

    @property
    def oldest(self) -> float | None:
        return min((c.created for c in self.contributions), default=None)

    @property
    def newest(self) -> float | None:
        return max((c.created for c in self.contributions), default=None)


class Staging:
    """The staging area of one store."""

    def __init__(self, store: "Store") -> None:
        self.store = store
        self.backend = store.backend

    # -- keys ------------------------------------------------------------------------

    @staticmethod
    def _dir(name: str, did: str) -> str:
        return f"staging/{name}/{did}"

    @staticmethod
    def _seal_key(name: str, did: str) -> str:
        return f"sealed/{name}/{did}"

    @staticmethod
    def _lock_name(name: str, did: str) -> str:
        return f"staging/{name}/{did}"

    # -- records ---------------------------------------------------------------------

    def read_seal(self, name: str, did: str) -> dict[str, Any] | None:
        key = self._seal_key(name, did)
        try:
            data = self.backend.read(key)
        except FileNotFoundError:
            return None
        return fmt.decode(data, "seal", str(self.store.path / key))

    def _sealed_error(self, name: str, did: str, seal: dict[str, Any]) -> SealedError:
        return SealedError(
            f"distributed id {did!r} of artifact {name!r} was finished as "
            f"{name}:v{seal['version']}; its contributions are closed. Use a new "
            "distributed id (for example a new run group) for a new version"
        )

    def contributions(self, name: str, did: str) -> list[Contribution]:
        out = []
        prefix = self._dir(name, did)
        for entry in sorted(self.backend.list(prefix)):
            if not entry.startswith("c."):
                continue
            key = f"{prefix}/{entry}"
            try:
                data = self.backend.read(key)
            except FileNotFoundError:
                continue  # withdrawn or cleaned up while listing
            record = fmt.decode(data, "contribution", str(self.store.path / key))
            out.append(
                Contribution(
                    key=entry,
                    writer=record["writer"],
                    created=record["created"],
                    entries=list(fmt.entries_from_fields(record, str(self.store.path / key))),
                )
            )
        return out

    def pending(self) -> list[Pending]:
        """Every pending collaborative version of the store."""
        found = []
        for name in sorted(self.backend.list("staging")):
            for did in sorted(self.backend.list(f"staging/{name}")):
                if self.backend.exists(self._seal_key(name, did)):
                    continue  # finished; leftovers of a finisher that died are cleaned up
                contribs = self.contributions(name, did)
                closing = CLOSING in self.backend.list(self._dir(name, did))
                if not contribs and not closing:
                    continue
                type_ = None
                if contribs:
                    type_ = contribs[0].writer.get("type")
                found.append(Pending(name, did, type_, contribs, closing))
        return found

    # -- upsert ----------------------------------------------------------------------

    def upsert(
        self, artifact: "Artifact", did: str, run: dict[str, Any] | None, progress: Any = None
    ) -> int:
        """Stage the artifact's files as one contribution; return the number of entries."""
        from ._artifact import check_tree, store_sources

        check_distributed_id(did)
        name = artifact.name
        seal = self.read_seal(name, did)
        if seal is not None:
            raise self._sealed_error(name, did, seal)
        self._check_type(name, artifact.type)
        entries = store_sources(self.store, artifact, progress)
        check_tree(e.path for e in entries)
        writer = {
            "host": HOST,
            "pid": os.getpid(),
            "run": run["id"] if run else None,
            "type": artifact.type,
        }
        record = fmt.encode(
            {
                "kind": "contribution",
                "format": fmt.RECORD_FORMAT,
                "name": name,
                "distributed_id": did,
                "writer": writer,
                "created": time.time(),
                **fmt.entries_fields(entries),
            }
        )
        # Sortable by time, unique per writer: c.<ns time>.<host>.<pid>.<random>
        key_name = f"c.{time.time_ns():020d}.{HOST}.{os.getpid()}.{secrets.token_hex(4)}"
        key = f"{self._dir(name, did)}/{key_name}"
        if not self.backend.create(key, record):
            raise InvalidInputError(f"contribution name collision at {key}; retry the upsert")
        # A finish that started closing, or ended, after our first look may not have
        # listed this record; _settle finds out. One of CLOSING and the seal exists at
        # every moment from a finisher's listing on (the seal is written before CLOSING
        # goes), so checking both cannot miss it.
        if self.backend.exists(f"{self._dir(name, did)}/{CLOSING}") or self.read_seal(
            name, did
        ) is not None:
            self._settle(name, did, key_name)
        log.debug("staged %d entries for %s/%s as %s", len(entries), name, did, key_name)
        return len(entries)

    def _check_type(self, name: str, type_: str) -> None:
        refs = self.store.read_refs(name)
        if refs is not None and refs.type != type_:
            raise TypeMismatchError(
                f"artifact {name!r} already exists with type {refs.type!r}; "
                "upsert it with that type or choose another name"
            )

    def _settle(self, name: str, did: str, key_name: str) -> None:
        """A finish is running: learn whether it took this contribution in."""
        try:
            with self.backend.lock(self._lock_name(name, did), timeout=600):
                seal = self.read_seal(name, did)
        except LockTimeoutError:
            raise LockTimeoutError(
                f"a finish of {name!r} (distributed id {did!r}) has run for over 10 minutes; "
                f"this contribution stays staged as {key_name} and the next finish takes it in"
            ) from None
        if seal is None or key_name in seal.get("contributions", []):
            return
        self.backend.delete(f"{self._dir(name, did)}/{key_name}")
        raise self._sealed_error(name, did, seal)

    # -- finish ----------------------------------------------------------------------

    def finish(
        self,
        artifact: "Artifact",
        did: str,
        *,
        aliases: Iterable[str] = (),
        run: dict[str, Any] | None = None,
        wait_for: int | None = None,
        timeout: float | None = None,
        on_conflict: str = "error",
        progress: Any = None,
    ) -> tuple[Any, int]:
        """Seal the pending version; return (refs, version number)."""
        from ._artifact import check_tree, commit_artifact, store_sources

        check_distributed_id(did)
        if on_conflict not in POLICIES:
            raise InvalidInputError(
                f"unknown conflict policy {on_conflict!r}; choose one of {', '.join(POLICIES)}"
            )
        name = artifact.name
        self._check_type(name, artifact.type)
        own = store_sources(self.store, artifact, progress)
        lock_timeout = 600.0 if timeout is None else max(timeout, 1.0) + 60.0
        with self.backend.lock(self._lock_name(name, did), timeout=lock_timeout):
            seal = self.read_seal(name, did)
            if seal is not None:
                self.clean_sealed(name, did, seal)
                raise self._sealed_error(name, did, seal)
            if wait_for:
                self._wait(name, did, wait_for, timeout)
            closing_key = f"{self._dir(name, did)}/{CLOSING}"
            self.backend.publish(closing_key, b"", readonly=False)
            try:
                contribs = self.contributions(name, did)
                if not contribs and not own:
                    raise InvalidInputError(
                        f"nothing to finish: no contributions staged for {name!r} under "
                        f"distributed id {did!r} and the finishing artifact has no files"
                    )
                finisher = Contribution("finish", {"host": HOST, "pid": os.getpid(),
                                                   "run": run["id"] if run else None},
                                        time.time(), own)
                entries = merge(contribs + ([finisher] if own else []), on_conflict, name, did)
                check_tree(entries)
                refs, index = commit_artifact(
                    self.store, artifact, list(entries.values()), aliases, run
                )
                self.backend.create(
                    self._seal_key(name, did),
                    fmt.encode(
                        {
                            "kind": "seal",
                            "format": fmt.RECORD_FORMAT,
                            "name": name,
                            "distributed_id": did,
                            "version": index,
                            "commit": fmt.to_bin(refs.versions[index][0]),
                            "sealed": time.time(),
                            "contributions": [c.key for c in contribs],
                        }
                    ),
                )
            finally:
                self.backend.delete(closing_key)
            for c in contribs:
                self.backend.delete(f"{self._dir(name, did)}/{c.key}")
        return refs, index

    def clean_sealed(self, name: str, did: str, seal: dict[str, Any]) -> None:
        """Delete what a finisher that died after sealing left: CLOSING, merged records."""
        prefix = self._dir(name, did)
        self.backend.delete(f"{prefix}/{CLOSING}")
        merged = set(seal.get("contributions", []))
        for entry in self.backend.list(prefix):
            if entry in merged:
                self.backend.delete(f"{prefix}/{entry}")

    def _wait(self, name: str, did: str, count: int, timeout: float | None) -> None:
        """Wait until ``count`` contributions are staged, woken by filesystem events."""
        deadline = None if timeout is None else time.monotonic() + timeout
        have = len(self.contributions(name, did))
        if have >= count:
            return
        changed = threading.Event()
        observer = None
        if self.backend.is_local:
            directory = self.store.path / self._dir(name, did)
            assert isinstance(directory, Path)
            directory.mkdir(parents=True, exist_ok=True)
            observer = make_observer(directory)
            from watchdog.events import FileSystemEventHandler

            class Wake(FileSystemEventHandler):
                def on_any_event(self, event: Any) -> None:
                    changed.set()

            observer.schedule(Wake(), str(directory), recursive=False)
            observer.start()
        # Object storage has no change events: the timed re-list below is all there is.
        try:
            while True:
                have = len(self.contributions(name, did))
                if have >= count:
                    return
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise LockTimeoutError(
                        f"waited {timeout:g} s for {count} contributions to {name!r} "
                        f"(distributed id {did!r}); {have} arrived. Nothing was finished; "
                        "finish again later, or without --wait-for"
                    )
                # The re-list on a timer is a safety net for events a watcher misses.
                pause = 2.0 if observer is not None else 1.0
                changed.wait(timeout=pause if left is None else min(left, pause))
                changed.clear()
        finally:
            if observer is not None:
                observer.stop()
                observer.join()

    # -- abort -----------------------------------------------------------------------

    def abort(self, name: str, did: str) -> int:
        """Drop every contribution of a pending version; return how many were dropped."""
        check_distributed_id(did)
        with self.backend.lock(self._lock_name(name, did), timeout=600):
            contribs = self.contributions(name, did)
            for c in contribs:
                self.backend.delete(f"{self._dir(name, did)}/{c.key}")
        return len(contribs)


def merge(
    contribs: list[Contribution], policy: str, name: str, did: str
) -> dict[str, Entry]:
    """Merge contributions into one entry map, applying the conflict policy.

    A writer's later contribution replaces its own earlier one for the same path. Between
    writers, equal entries agree; different ones conflict, unless ``policy`` picks the
    ``newest`` or ``oldest`` contribution.
    """
    ordered = sorted(contribs, key=lambda c: (c.created, c.key))
    # First each writer's own last word per path, then the writers compared.
    per_writer: dict[tuple[Any, ...], dict[str, tuple[Entry, Contribution]]] = {}
    for contrib in ordered:
        writer = (contrib.writer.get("host"), contrib.writer.get("pid"), contrib.writer.get("run"))
        mine = per_writer.setdefault(writer, {})
        for entry in contrib.entries:
            mine[entry.path] = (entry, contrib)
    candidates: dict[str, list[tuple[Entry, Contribution]]] = {}
    for mine in per_writer.values():
        for path, pick in mine.items():
            candidates.setdefault(path, []).append(pick)
    chosen: dict[str, tuple[Entry, Contribution]] = {}
    clashes: dict[str, set[str]] = {}
    for path, picks in candidates.items():
        picks.sort(key=lambda pick: (pick[1].created, pick[1].key))
        if all(entry == picks[0][0] for entry, _c in picks) or policy == "oldest":
            chosen[path] = picks[0]
        elif policy == "newest":
            chosen[path] = picks[-1]
        else:
            clashes[path] = {c.label for _e, c in picks}
    if clashes:
        paths = sorted(clashes)
        shown = "; ".join(f"{p} (from {', '.join(sorted(clashes[p]))})" for p in paths[:5])
        raise ConflictError(
            f"cannot finish {name!r} (distributed id {did!r}): {len(paths)} path(s) staged "
            f"with different contents: {shown}. The contributions are kept; resolve them, "
            "or finish with the conflict policy 'newest' or 'oldest' (--on-conflict)",
            paths,
        )
    return {p: e for p, (e, _c) in chosen.items()}


def make_observer(directory: Path) -> Any:
    """An inotify observer on local disks; a polling one where inotify is blind."""
    choice = os.environ.get("ARTSTORE_WATCH", "auto")
    if choice == "poll" or (choice == "auto" and is_network_fs(directory)):
        from watchdog.observers.polling import PollingObserver

        return PollingObserver(timeout=1.0)
    from watchdog.observers import Observer

    return Observer()


def is_network_fs(path: Path) -> bool:
    """Whether ``path`` is on a filesystem where other machines' writes escape inotify."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split() for line in f]
    except OSError:
        return False
    real = os.path.realpath(path)
    best, fstype = "", ""
    for parts in mounts:
        if len(parts) >= 3:
            point = parts[1].replace("\\040", " ")
            if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                best, fstype = point, parts[2]
    return any(fstype == t or fstype.startswith(t + ".") or fstype.startswith(t) for t in NETWORK_FS)
