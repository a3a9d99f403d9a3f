"""The store: objects, refs, and committing versions.

A :class:`Store` reads and writes the records of FORMAT.md through a :class:`Backend`.
Versions are committed with a compare-and-swap on the artifact's refs generation; the
per-name lock only keeps concurrent committers from redoing work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _format as fmt
from ._backend import HOST, MARKER, Backend, URLPath, is_url, open_backend
from ._cache import BlobCache
from ._format import Digest, Entry
from ._ingest import Ingest, Progress, blob_key
from ._names import check_alias, check_name, parse_spec, parse_version
from ._statcache import StatCache
from .errors import (
    ArtifactNotFoundError,
    CorruptDataError,
    InvalidInputError,
    ObjectNotFoundError,
    StoreNotFoundError,
    TypeMismatchError,
    UnknownFormatError,
    VersionNotFoundError,
)

if TYPE_CHECKING:
    from ._artifact import Artifact
    from ._collab import Staging
    from ._maintenance import FsckReport, GcReport

log = logging.getLogger(__name__)

#: Older refs generations than this many behind the newest are deleted after a commit.
KEEP_GENERATIONS = 16


def default_store_path() -> Path | URLPath:
    """The store used when none is named: ``$ARTSTORE_DIR``, else the user data directory."""
    env = os.environ.get("ARTSTORE_DIR")
    if env:
        return store_location(env)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "artstore"


def object_key(kind: str, digest: str) -> str:
    return f"{kind}/{digest[:2]}/{digest[2:]}"


@dataclass
class Refs:
    """One generation of an artifact name's refs (FORMAT.md 4.3)."""

    name: str
    type: str
    generation: int = 0
    versions: list[tuple[Digest, float] | None] = field(default_factory=list)
    aliases: dict[str, int] = field(default_factory=dict)

    def latest(self) -> int | None:
        for index in range(len(self.versions) - 1, -1, -1):
            if self.versions[index] is not None:
                return index
        return None

    def aliases_of(self, index: int) -> list[str]:
        return sorted(a for a, i in self.aliases.items() if i == index)

    def fix_latest(self) -> None:
        latest = self.latest()
        if latest is None:
            self.aliases.pop("latest", None)
        else:
            self.aliases["latest"] = latest

    def encode(self) -> bytes:
        return fmt.encode(
            {
                "kind": "refs",
                "format": fmt.RECORD_FORMAT,
                "name": self.name,
                "type": self.type,
                "generation": self.generation,
                "versions": [
                    None if v is None else [fmt.to_bin(v[0]), v[1]] for v in self.versions
                ],
                "aliases": dict(sorted(self.aliases.items())),
            }
        )

    @classmethod
    def decode(cls, data: bytes, where: str) -> "Refs":
        record = fmt.decode(data, "refs", where)
        try:
            return cls(
                name=record["name"],
                type=record["type"],
                generation=record["generation"],
                versions=[
                    None if v is None else (fmt.from_bin(v[0]), float(v[1]))
                    for v in record["versions"]
                ],
                aliases={str(k): int(v) for k, v in record["aliases"].items()},
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CorruptDataError(f"{where}: malformed refs record ({exc})", where) from exc


def store_location(where: str | os.PathLike[str]) -> Path | URLPath:
    """A store's location: a filesystem path, or an ``s3://bucket/prefix`` URL."""
    text = os.fspath(where)
    if is_url(text):
        scheme, rest = text.split("://", 1)
        return URLPath(f"{scheme}://{rest.rstrip('/')}")
    return Path(text).expanduser()


class Store:
    """An artstore store: a directory, or a prefix in an S3 bucket, of blobs and records.

    Args:
        path: the store's location, a path or an ``s3://bucket/prefix`` URL; None means
            ``$ARTSTORE_DIR`` or the default ``~/.local/share/artstore``.

    A store that does not exist yet reads as empty and is created by the first write.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = store_location(path) if path is not None else default_store_path()
        self.backend: Backend = open_backend(self.path)
        self._checked = False
        self._manifests: dict[str, fmt.Manifest] = {}
        self._statcache: StatCache | None = None
        self._cache: BlobCache | None = None
        self._id = ""

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- the marker ----------------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike[str] | None = None, shared: bool = False) -> "Store":
        """Create a store at ``path`` (or open it, if one is already there)."""
        store = cls(path)
        existed = store.exists()
        store._ensure_created(shared=shared)
        if existed and shared and not store.backend.shared:
            raise InvalidInputError(
                f"{store.path} is already a store, not a shared one; a store cannot be made "
                "shared after the fact: create a new store with --shared and log the versions into it"
            )
        return store

    def exists(self) -> bool:
        return self.backend.exists(MARKER)

    @property
    def id(self) -> str:
        """The store's unique id, from its marker (FORMAT.md section 3)."""
        self._require()
        return self._id

    def _check_marker(self) -> bool:
        """Check the store's format version; return whether the store exists."""
        if self._checked:
            return True
        try:
            raw = self.backend.read(MARKER)
        except FileNotFoundError:
            if self.backend.list("refs") or self.backend.list("blobs"):
                # The first writer may have made the store between our two looks.
                if self.backend.exists(MARKER):
                    return self._check_marker()
                where = str(self.path / MARKER)
                raise CorruptDataError(
                    f"{where} is missing, but {self.path} holds a store's files; restore the "
                    "marker (from a backup, or as FORMAT.md section 3 describes) before using it",
                    where,
                ) from None
            return False
        except NotADirectoryError:
            raise StoreNotFoundError(f"{self.path} is a file, not an artstore store") from None
        where = str(self.path / MARKER)
        try:
            marker = json.loads(raw)
        except ValueError as exc:
            raise CorruptDataError(f"{where}: not valid JSON ({exc})", where) from exc
        if not isinstance(marker, dict) or marker.get("format") != fmt.STORE_FORMAT:
            raise CorruptDataError(f"{where}: not an artstore store marker", where)
        version = marker.get("version")
        if type(version) is not int:
            raise UnknownFormatError(
                f"{where}: store format version {version!r} is not a version number; this "
                f"artstore reads version {fmt.STORE_VERSION}. The marker is damaged",
                where,
            )
        if not isinstance(marker.get("id"), str):
            raise CorruptDataError(f"{where}: malformed store marker (no id)", where)
        if version != fmt.STORE_VERSION:
            raise UnknownFormatError(
                f"{where}: store format version {marker.get('version')!r} is not supported "
                f"by this artstore (it reads version {fmt.STORE_VERSION}); upgrade artstore",
                where,
            )
        self.backend.set_shared(bool(marker.get("shared")))
        self._id = marker["id"]
        self._checked = True
        return True

    def _ensure_created(self, shared: bool = False) -> None:
        if self._check_marker():
            return
        try:
            self.backend.prepare_create(shared)
        except InvalidInputError:
            # Another process may have created the store since we looked for the marker.
            if self._check_marker():
                return
            raise
        marker = {
            "format": fmt.STORE_FORMAT,
            "version": fmt.STORE_VERSION,
            "id": secrets.token_hex(16),
            "created": time.time(),
            "shared": shared,
        }
        # create-if-absent: two processes creating one store at once agree on one marker.
        self.backend.create(MARKER, (json.dumps(marker, indent=1) + "\n").encode())
        self._check_marker()
        log.info("created store %s", self.path)

    def _require(self) -> None:
        if not self._check_marker():
            raise StoreNotFoundError(
                f"no artstore store at {self.path}; create one with 'artstore init "
                f"{self.path}' or point ARTSTORE_DIR at an existing store"
            )

    # -- objects -------------------------------------------------------------------

    def _read_object(self, kind: str, digest: str) -> bytes:
        key = object_key(kind, digest)
        try:
            return self.backend.read(key)
        except FileNotFoundError:
            raise ObjectNotFoundError(
                f"{kind[:-1]} {digest} is missing from {self.path} (file {key}); "
                "run 'artstore fsck'",
                digest,
            ) from None

    def _write_object(self, kind: str, data: bytes) -> Digest:
        digest = fmt.digest_bytes(data)
        # Always (re)published, never trusted because the name exists: a copy that a
        # power loss damaged before the flush that precedes every refs update would
        # otherwise be reused. Records are small next to the blobs they describe.
        self.backend.publish(object_key(kind, digest), data)
        return digest

    def read_manifest(self, digest: str) -> fmt.Manifest:
        cached = self._manifests.get(digest)
        if cached is None:
            data = self._read_object("manifests", digest)
            where = str(self.path / object_key("manifests", digest))
            if fmt.digest_bytes(data) != digest:
                raise CorruptDataError(f"{where}: bytes do not match the manifest's name", where)
            cached = fmt.decode_manifest(data, where)
            self._manifests[digest] = cached
        return cached

    def read_commit(self, digest: str) -> dict[str, Any]:
        data = self._read_object("commits", digest)
        where = str(self.path / object_key("commits", digest))
        record = fmt.decode(data, "commit", where)
        try:
            record["manifest"] = fmt.from_bin(record["manifest"])
            if record.get("parent") is not None:
                record["parent"] = fmt.from_bin(record["parent"])
            if record.get("base") is not None:
                record["base"] = fmt.from_bin(record["base"])
        except (KeyError, TypeError) as exc:
            raise CorruptDataError(f"{where}: malformed commit ({exc})", where) from exc
        return record

    def blob_path(self, digest: str) -> Path | None:
        """A local file holding blob ``digest``: in the store, or in the download cache."""
        if self.backend.is_local:
            return self.backend.local_path(blob_key(digest))
        return self.cache.get(digest)

    @property
    def cache(self) -> BlobCache:
        """Where blobs of a store on object storage are kept once downloaded."""
        if self._cache is None:
            self._cache = BlobCache()
        return self._cache

    def blob_batches(
        self, entries: Sequence[Entry], progress: Progress | None = None
    ) -> Iterator[list[Entry]]:
        """Yield ``entries`` in batches during which :meth:`blob_path` finds their blobs.

        A local store has every blob at hand: one batch. A store on object storage
        fetches each batch's blobs into the bounded download cache first.
        """
        if self.backend.is_local:
            yield list(entries)
            return
        yield from self.cache.batches(self.backend, entries, blob_key, progress, self.quarantine)

    def ingest(self, progress: Progress | None = None) -> Ingest:
        """Start a batch of blob writes into this store."""
        self._ensure_created()
        if self._statcache is None:
            self._statcache = StatCache()
        return Ingest(self.backend, self._statcache, progress)

    # -- refs ----------------------------------------------------------------------

    def _refs_dir(self, name: str) -> str:
        return f"refs/{name}"

    def read_refs(self, name: str) -> Refs | None:
        """Return the newest refs generation of ``name``, or None if it has none."""
        check_name(name)
        if not self._check_marker():
            return None
        for _ in range(10):
            gens = sorted(
                (int(n) for n in self.backend.list(self._refs_dir(name)) if n.isdigit()),
                reverse=True,
            )
            if not gens:
                return None
            key = f"{self._refs_dir(name)}/{gens[0]:012d}"
            try:
                data = self.backend.read(key)
            except FileNotFoundError:
                continue  # pruned between listing and reading: list again
            return Refs.decode(data, str(self.path / key))
        raise CorruptDataError(f"refs of {name!r} keep changing under the reader; retry")

    def update_refs(
        self, name: str, type_: str | None, change: Callable[[Refs], Refs | None]
    ) -> Refs:
        """Apply ``change`` to the newest refs of ``name`` and publish the result.

        ``change`` gets a copy of the current refs (a fresh one, with ``type_``, if the
        name has none) and returns the new state, or None to change nothing. It may be
        called several times, if another writer commits in between.
        """
        self._ensure_created()
        with self.backend.lock(f"refs/{name}", timeout=600):
            while True:
                current = self.read_refs(name)
                if current is None:
                    if type_ is None:
                        raise ArtifactNotFoundError(f"no artifact named {name!r} in {self.path}")
                    current = Refs(name=name, type=type_, generation=0)
                base_gen = current.generation
                new = change(
                    Refs(
                        current.name,
                        current.type,
                        current.generation,
                        list(current.versions),
                        dict(current.aliases),
                    )
                )
                if new is None:
                    return current
                new.generation = base_gen + 1
                new.fix_latest()
                key = f"{self._refs_dir(name)}/{new.generation:012d}"
                if self.backend.create(key, new.encode()):
                    self._prune_generations(name, new.generation)
                    return new
                log.debug("refs of %s moved past generation %d; retrying", name, base_gen)

    def _prune_generations(self, name: str, newest: int) -> None:
        for entry in self.backend.list(self._refs_dir(name)):
            if entry.isdigit() and int(entry) < newest - KEEP_GENERATIONS:
                self.backend.delete(f"{self._refs_dir(name)}/{entry}")

    def _resolve(self, refs: Refs, which: str) -> int:
        number = parse_version(which)
        if number is None:
            if which not in refs.aliases:
                raise VersionNotFoundError(
                    f"artifact {refs.name!r} has no alias {which!r}; aliases: "
                    f"{', '.join(sorted(refs.aliases)) or 'none'}"
                )
            number = refs.aliases[which]
        if number < len(refs.versions) and refs.versions[number] is None:
            raise VersionNotFoundError(
                f"version v{number} of {refs.name!r} was deleted; latest is "
                f"{self._latest_label(refs)}"
            )
        if number >= len(refs.versions):
            raise VersionNotFoundError(
                f"artifact {refs.name!r} has no version v{number}; "
                f"latest is {self._latest_label(refs)}"
            )
        return number

    @staticmethod
    def _latest_label(refs: Refs) -> str:
        latest = refs.latest()
        return "none" if latest is None else f"v{latest}"

    # -- the public API ------------------------------------------------------------

    def artifact(self, spec: str, type: str | None = None) -> "Artifact":  # noqa: A002
        """Return the logged version named by ``NAME[:VERSION_OR_ALIAS]`` (default latest)."""
        from ._artifact import Artifact

        name, which = parse_spec(spec)
        refs = self.read_refs(name)
        if refs is None or refs.latest() is None:
            raise ArtifactNotFoundError(f"no artifact named {name!r} in store {self.path}")
        if type is not None and refs.type != type:
            raise VersionNotFoundError(
                f"artifact {name!r} has type {refs.type!r}, not {type!r}"
            )
        return Artifact._logged(self, refs, self._resolve(refs, which))

    def artifact_names(self) -> list[str]:
        """Return the names of all artifacts that have at least one version."""
        if not self._check_marker():
            return []
        names = []
        for n in self.backend.list("refs"):
            refs = self.read_refs(n)
            if refs is not None and refs.latest() is not None:
                names.append(n)
        return sorted(names)

    def versions(self, name: str) -> list["Artifact"]:
        """Return every version of ``name``, oldest first."""
        from ._artifact import Artifact

        refs = self.read_refs(name)
        if refs is None:
            raise ArtifactNotFoundError(f"no artifact named {name!r} in store {self.path}")
        return [
            Artifact._logged(self, refs, i) for i, v in enumerate(refs.versions) if v is not None
        ]

    def add_alias(self, spec: str, alias: str) -> "Artifact":
        """Point ``alias`` at the version ``spec`` names, moving it from any other version."""
        name, which = parse_spec(spec)
        check_alias(alias)
        if alias == "latest":
            raise InvalidInputError("'latest' always names the newest version; it cannot be set")

        def change(refs: Refs) -> Refs | None:
            index = self._resolve(refs, which)
            if refs.aliases.get(alias) == index:
                return None
            refs.aliases[alias] = index
            return refs

        self.update_refs(name, None, change)
        return self.artifact(f"{name}:{alias}")

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` from artifact ``name``."""
        check_name(name)
        check_alias(alias)
        if alias == "latest":
            raise InvalidInputError("'latest' always names the newest version; it cannot be removed")

        def change(refs: Refs) -> Refs | None:
            if alias not in refs.aliases:
                raise VersionNotFoundError(f"artifact {name!r} has no alias {alias!r}")
            del refs.aliases[alias]
            return refs

        self.update_refs(name, None, change)

    def commit_version(
        self,
        name: str,
        type_: str,
        entries: list[Entry],
        *,
        aliases: Iterable[str] = (),
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        run: dict[str, Any] | None = None,
        merge: Callable[[list[Entry], Refs], list[Entry]] | None = None,
        base: Digest | None = None,
        created: float | None = None,
    ) -> tuple[Refs, int, bool]:
        """Commit ``entries`` as the next version of ``name``.

        Blobs must already be durable in the store. ``merge``, if given, rebuilds the
        entry list against the current refs each time the commit is attempted (patches
        use it to apply their change on top of whatever version is newest).

        Returns the refs after the commit, the version number, and whether a new
        version was made (False when the content equals the latest version's).
        """
        aliases = [check_alias(a) for a in aliases if a != "latest"]
        result: dict[str, Any] = {}

        def change(refs: Refs) -> Refs | None:
            if refs.type != type_:
                raise TypeMismatchError(
                    f"artifact {name!r} already exists with type {refs.type!r}; "
                    f"log it with that type or choose another name"
                )
            latest = refs.latest()
            parent = refs.versions[latest][0] if latest is not None else None
            mine = merge(entries, refs) if merge else entries
            manifest = self._write_object("manifests", fmt.encode_manifest(mine))
            if parent is not None and self.read_commit(parent)["manifest"] == manifest:
                assert latest is not None
                result.update(index=latest, created=False)
                moved = [a for a in aliases if refs.aliases.get(a) != latest]
                if not moved:
                    return None
                for a in moved:
                    refs.aliases[a] = latest
                return refs
            commit = self._write_object(
                "commits",
                fmt.encode(
                    {
                        "kind": "commit",
                        "format": fmt.RECORD_FORMAT,
                        "name": name,
                        "type": type_,
                        "manifest": fmt.to_bin(manifest),
                        "parent": fmt.to_bin(parent) if parent else None,
                        "description": description,
                        "metadata": metadata or {},
                        "created": time.time() if created is None else created,
                        "run": run,
                        "base": fmt.to_bin(base) if base else None,
                    }
                ),
            )
            index = len(refs.versions)
            refs.versions.append((commit, time.time()))
            for a in aliases:
                refs.aliases[a] = index
            result.update(index=index, created=True)
            return refs

        refs = self.update_refs(name, type_, change)
        return refs, result["index"], result["created"]

    def quarantine(self, digest: str) -> None:
        """Move a blob whose bytes no longer match its digest out of the way.

        The next add of the same content then stores a good copy instead of trusting the
        damaged one because "it already exists".
        """
        key = blob_key(digest)
        if self.backend.exists(key):
            if not self.backend.is_local:
                from ._materialize import hash_chunks

                # Look again: a writer may have just replaced it with a good copy.
                with contextlib.suppress(FileNotFoundError):
                    if hash_chunks(self.backend.read_chunks(key)) == digest:
                        return
            dest = f"corrupt/{digest}.{int(time.time())}"
            self.backend.rename(key, dest)
            log.info("blob %s does not match its digest; moved to %s", digest, dest)

    def fsck(self, sample: float = 1.0) -> "FsckReport":
        """Check every record and (a ``sample`` fraction of) the blobs; see :mod:`_maintenance`."""
        import math

        from ._maintenance import fsck

        if not (isinstance(sample, (int, float)) and math.isfinite(sample) and 0 <= sample <= 1):
            raise InvalidInputError(f"sample must be a fraction from 0 to 1, got {sample!r}")
        return fsck(self, sample)

    def gc(self, grace: float | None = None, dry_run: bool = False) -> "GcReport":
        """Remove what no version, contribution or recent write needs."""
        import math

        from ._maintenance import DEFAULT_GRACE, gc

        if not self.backend.is_local:
            raise InvalidInputError(
                f"gc of a store on object storage ({self.path}) is not supported yet: "
                "deleted versions keep their blobs there; run gc on filesystem stores only"
            )
        if grace is not None and not (isinstance(grace, (int, float)) and math.isfinite(grace)
                                      and grace >= 0):
            raise InvalidInputError(f"grace must be a finite number of seconds >= 0, got {grace!r}")
        return gc(self, DEFAULT_GRACE if grace is None else grace, dry_run)

    def delete_version(self, spec: str, delete_aliases: bool = False) -> None:
        """Delete one version; refused while it has aliases unless ``delete_aliases``."""
        name, which = parse_spec(spec, default="")
        if not which:
            raise InvalidInputError(f"give the version to delete, as {name}:vN")

        def change(refs: Refs) -> Refs | None:
            index = self._resolve(refs, which)
            held = refs.aliases_of(index)
            if held and not delete_aliases:
                raise InvalidInputError(
                    f"{name}:v{index} has aliases {', '.join(held)}; move them first ('latest' "
                    "cannot be moved) or delete with --delete-aliases (delete_aliases=True)"
                )
            refs.versions[index] = None
            for alias in held:
                del refs.aliases[alias]
            return refs

        self.update_refs(name, None, change)

    def set_retention(self, name: str, keep_last: int | None) -> None:
        """Keep only the last ``keep_last`` versions of ``name`` (and aliased ones) at gc."""
        check_name(name)
        key = f"policies/{name}"
        if keep_last is None:
            self.backend.delete(key)
            return
        if self.read_refs(name) is None:
            raise ArtifactNotFoundError(f"no artifact named {name!r} in store {self.path}")
        if not isinstance(keep_last, int) or keep_last < 1:
            raise InvalidInputError(f"keep_last must be a whole number of at least 1, got {keep_last!r}")
        self._ensure_created()
        self.backend.publish(
            key,
            fmt.encode({"kind": "retention", "format": fmt.RECORD_FORMAT, "name": name,
                        "keep_last": keep_last}),
            readonly=False,
        )

    def retention(self, name: str) -> int | None:
        """The ``keep_last`` rule of ``name``, or None."""
        check_name(name)
        key = f"policies/{name}"
        try:
            data = self.backend.read(key)
        except FileNotFoundError:
            return None
        return int(fmt.decode(data, "retention", str(self.path / key))["keep_last"])

    @property
    def staging(self) -> "Staging":
        """The collaborative staging area: pending versions, upsert, finish, abort."""
        from ._collab import Staging

        return Staging(self)

    def write_run(self, record: dict[str, Any]) -> None:
        self._ensure_created()
        self.backend.publish(f"runs/{record['id']}", fmt.encode(record), readonly=False)


def run_summary(run_id: str, project: str | None, group: str | None, job_type: str | None) -> dict[str, Any]:
    return {
        "id": run_id,
        "project": project,
        "group": group,
        "job_type": job_type,
        "host": HOST,
        "pid": os.getpid(),
    }
