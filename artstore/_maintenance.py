"""Checking and cleaning a store: fsck, garbage collection, retention.

Why gc is safe while other processes write (also in README, "Garbage collection"):

1. gc reads its clock from the store itself (the modification time of a file it just
   wrote), so machines whose clocks disagree with the file server cannot make a young
   object look old.
2. It marks as live every blob, manifest and commit reachable from the newest refs
   generation of every artifact and from every staged contribution. If any of those
   records cannot be read, it stops without deleting anything.
3. It deletes an unmarked object only if its modification time is older than the clock
   reading of step 1 minus the grace period. A writer publishes new objects, or refreshes
   the modification time of objects it reuses, before it commits, and commits within
   the grace period of doing so; so an object that a commit in progress will reference
   is never older than the grace period at the moment gc read its clock, and a commit
   finished before that moment is seen by the marking of step 2.
4. gc runs under a store-wide lock, so two gc runs never interleave.

The grace period (24 hours by default) bounds how long a single put or upsert may take
between storing its first blob and committing. Temporary files older than it are
leftovers of crashed writers and are removed too.
"""

from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import _format as fmt
from ._ingest import blob_key
from ._materialize import hash_chunks, hash_file
from .errors import ArtstoreError, CorruptDataError

if TYPE_CHECKING:
    from ._store import Refs, Store

log = logging.getLogger(__name__)

DEFAULT_GRACE = 24 * 3600.0
KINDS = ("blobs", "manifests", "commits")


@dataclass
class Problem:
    """One finding of fsck. ``severity`` is ``error`` or ``warning``."""

    severity: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}"


@dataclass
class FsckReport:
    problems: list[Problem] = field(default_factory=list)
    versions: int = 0
    blobs_checked: int = 0
    blobs_hashed: int = 0

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]


@dataclass
class GcReport:
    removed: dict[str, int] = field(default_factory=dict)
    freed_bytes: int = 0
    versions_deleted: list[str] = field(default_factory=list)
    dry_run: bool = False
    kept_young: int = 0


def _all_objects(store: "Store", kind: str) -> list[tuple[str, str]]:
    """Return (digest, key) of every object file of a kind."""
    out = []
    for fan in store.backend.list(kind):
        for rest in store.backend.list(f"{kind}/{fan}"):
            out.append((fan + rest, f"{kind}/{fan}/{rest}"))
    return out


def fsck(store: "Store", sample: float = 1.0) -> FsckReport:
    """Check the store: decode every record and re-hash (a sample of) the blobs."""
    from ._store import Refs

    report = FsckReport()
    where = lambda key: str(store.path / key)  # noqa: E731
    store._require()
    referenced: dict[str, int | None] = {}

    # Object storage: one listing tells which blobs exist, instead of a request each.
    lister = getattr(store.backend, "blob_sizes", None)
    listed: dict[str, int] | None = lister() if lister is not None else None

    def exists(digest: str) -> bool:
        if listed is not None:
            return digest in listed
        return store.backend.stat(blob_key(digest)) is not None

    def check_entries(entries: list[fmt.Entry], owner: str) -> None:
        for e in entries:
            if e.ref is None:
                referenced.setdefault(e.digest, e.size)
                if not exists(e.digest):
                    report.problems.append(Problem(
                        "error", where(blob_key(e.digest)),
                        f"blob of {e.path!r} in {owner} is missing"))

    for name in sorted(store.backend.list("refs")):
        gens = sorted(n for n in store.backend.list(f"refs/{name}"))
        for gen in gens:
            key = f"refs/{name}/{gen}"
            if not gen.isdigit():
                report.problems.append(Problem("warning", where(key), "unexpected file in refs"))
                continue
            try:
                Refs.decode(store.backend.read(key), where(key))
            except ArtstoreError as exc:
                report.problems.append(Problem("error", where(key), str(exc)))
        try:
            refs = store.read_refs(name)
        except ArtstoreError:
            continue  # reported above
        if refs is None:
            continue
        for index, version in enumerate(refs.versions):
            if version is None:
                continue
            report.versions += 1
            label = f"{name}:v{index}"
            try:
                commit = store.read_commit(version[0])
                ckey = f"commits/{version[0][:2]}/{version[0][2:]}"
                if fmt.digest_bytes(store.backend.read(ckey)) != version[0]:
                    raise CorruptDataError(f"{where(ckey)}: bytes do not match the commit's name")
                entries = store.read_manifest(commit["manifest"])
            except ArtstoreError as exc:
                report.problems.append(Problem("error", where(f"refs/{name}"), f"{label}: {exc}"))
                continue
            check_entries(entries, label)
        newest = where(f"refs/{name}/{refs.generation:012d}")
        for alias, index in refs.aliases.items():
            if index >= len(refs.versions) or refs.versions[index] is None:
                report.problems.append(Problem(
                    "error", newest, f"alias {alias!r} names missing v{index}"))

    for pending in _pending_safely(store, report):
        for contrib in pending.contributions:
            check_entries(contrib.entries, f"staged {pending.name}/{pending.distributed_id}")

    rng = random.Random(0)
    if listed is not None:
        sizes: dict[str, int | None] = dict(listed)
        blobs = [(d, f"blobs/{d[:2]}/{d[2:]}") for d in sorted(sizes)]
    else:
        blobs = _all_objects(store, "blobs")
        sizes = {}
    to_hash: list[tuple[str, str]] = []
    for digest, key in blobs:
        report.blobs_checked += 1
        if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
            report.problems.append(Problem("warning", where(key), "not a blob name"))
            continue
        if digest in sizes:
            size = sizes[digest]
        else:
            st = store.backend.stat(key)
            size = None if st is None else st[0]
        expected = referenced.get(digest)
        if size is not None and expected is not None and size != expected:
            report.problems.append(Problem(
                "error", where(key), f"blob is {size} bytes, expected {expected} (truncated?)"))
            continue
        if sample >= 1.0 or rng.random() < sample:
            to_hash.append((digest, key))

    def rehash(item: tuple[str, str]) -> Problem | None:
        digest, key = item
        try:
            path = store.backend.local_path(key)
            actual = hash_file(path) if path is not None else hash_chunks(
                store.backend.read_chunks(key))
        except OSError as exc:
            return Problem("error", where(key), f"unreadable: {exc}")
        if actual != digest:
            return Problem("error", where(key), f"bytes hash to {actual}, not to the blob's name")
        return None

    # Reading from object storage waits on the network: several blobs at once.
    with ThreadPoolExecutor(1 if store.backend.is_local else 8) as pool:
        for problem in pool.map(rehash, to_hash):
            report.blobs_hashed += 1
            if problem is not None:
                report.problems.append(problem)

    for temp in store.backend.list("tmp"):
        report.problems.append(Problem(
            "warning", where(f"tmp/{temp}"),
            "temporary file left by an interrupted write; gc removes it after the grace period"))
    return report


def _pending_safely(store: "Store", report: FsckReport) -> list:  # type: ignore[type-arg]
    try:
        return store.staging.pending()
    except ArtstoreError as exc:
        report.problems.append(Problem("error", str(store.path / "staging"), str(exc)))
        return []


def store_clock(store: "Store") -> float:
    """The store's own idea of now: the modification time of a file just written there."""
    probe = f"tmp/clock.{os.getpid()}.{time.time_ns()}"
    store.backend.publish(probe, b"", readonly=False)
    try:
        st = store.backend.stat(probe)
        return st[1] if st else time.time()
    finally:
        store.backend.delete(probe)


def _apply_retention(store: "Store", report: GcReport) -> None:
    for name in store.backend.list("policies"):
        keep = store.retention(name)
        refs = store.read_refs(name)
        if keep is None or refs is None:
            continue
        alive = [i for i, v in enumerate(refs.versions) if v is not None]
        doomed = [i for i in alive[:-keep] if not refs.aliases_of(i)]
        for index in doomed:
            report.versions_deleted.append(f"{name}:v{index}")
        if doomed and not report.dry_run:
            def change(r: "Refs", doomed: list[int] = doomed) -> "Refs | None":
                for i in doomed:
                    if r.versions[i] is not None and not r.aliases_of(i):
                        r.versions[i] = None
                return r

            store.update_refs(name, None, change)


def _remove_unless_refreshed(store: "Store", key: str, cutoff: float) -> bool:
    """Delete ``key`` unless a writer refreshed it since gc looked; return whether deleted.

    The object is first moved aside, atomically. A writer that refreshes it before the
    move leaves a young modification time, seen here, and the object is put back; a
    writer that tries after the move finds it gone and writes it again.
    """
    aside = f"tmp/gc.{os.getpid()}.{time.time_ns()}"
    try:
        store.backend.rename(key, aside)
    except FileNotFoundError:
        return False
    st = store.backend.stat(aside)
    if st is not None and st[1] >= cutoff:
        store.backend.rename(aside, key)
        return False
    store.backend.delete(aside)
    return True


def gc(store: "Store", grace: float = DEFAULT_GRACE, dry_run: bool = False) -> GcReport:
    """Delete objects nothing needs; see the module docstring for why this is safe."""
    report = GcReport(dry_run=dry_run)
    if not store.exists():
        return report
    store._require()
    with store.backend.lock("gc", timeout=3600):
        now = store_clock(store)
        _apply_retention(store, report)
        live = {kind: set() for kind in KINDS}  # type: dict[str, set[str]]
        # Staging first, refs second: a finish that commits after gc read the refs
        # deletes its contributions only after that, so gc has listed them already.
        for pending in store.staging.pending():
            for contrib in pending.contributions:
                live["blobs"].update(e.digest for e in contrib.entries if e.ref is None)
        for name in store.backend.list("refs"):
            refs = store.read_refs(name)
            if refs is None:
                continue
            for index, version in enumerate(refs.versions):
                if version is None:
                    continue
                if dry_run and f"{name}:v{index}" in report.versions_deleted:
                    continue
                commit = store.read_commit(version[0])
                live["commits"].add(version[0])
                live["manifests"].add(commit["manifest"])
                live["blobs"].update(store.read_manifest(commit["manifest"]).blob_digests())

        cutoff = now - grace
        for kind in KINDS:
            for digest, key in _all_objects(store, kind):
                if digest in live[kind]:
                    continue
                st = store.backend.stat(key)
                if st is None:
                    continue
                if st[1] >= cutoff:
                    report.kept_young += 1
                    continue
                if not dry_run and not _remove_unless_refreshed(store, key, cutoff):
                    report.kept_young += 1
                    continue
                report.removed[kind] = report.removed.get(kind, 0) + 1
                report.freed_bytes += st[0]
        for temp in store.backend.list("tmp"):
            st = store.backend.stat(f"tmp/{temp}")
            if st is not None and st[1] < cutoff:
                report.removed["tmp"] = report.removed.get("tmp", 0) + 1
                report.freed_bytes += st[0]
                if not dry_run:
                    store.backend.delete(f"tmp/{temp}")
    log.info("gc %s %d bytes", "would free" if dry_run else "freed", report.freed_bytes)
    return report
