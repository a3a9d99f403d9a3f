"""Artifacts: drafts that collect files, and logged versions that read them back.

An :class:`Artifact` starts as a draft: ``add_file``, ``add_dir``, ``new_file``,
``add_reference`` and ``remove`` shape its contents, which are read only when the draft is
logged. Logging turns the same object into a logged version, which can be downloaded,
checked out, verified, or drafted from again.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import logging
import os
import stat as stat_mod
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from . import _format as fmt
from ._format import Digest, Entry
from ._materialize import (
    Materializer,
    Progress,
    hash_file,
    reference_path,
    remove_extra,
    verify_dir,
)
from ._names import check_name, check_path, check_type, normalize_path
from .errors import (
    ArtifactStateError,
    ConflictError,
    CorruptDataError,
    InvalidInputError,
    InvalidNameError,
    NotFoundError,
    ObjectNotFoundError,
    VerificationError,
)

if TYPE_CHECKING:
    from ._store import Refs, Store

log = logging.getLogger(__name__)

#: What a draft entry comes from: a local file to read, or an entry already known.
Source = Path | Entry


def check_tree(paths: Iterable[str]) -> None:
    """Refuse a set of paths in which one path is a directory of another, or two paths
    differ only in Unicode normalisation (they would name one file on many systems)."""
    ordered = sorted(paths)
    seen: dict[str, str] = {}
    for p in ordered:
        folded = unicodedata.normalize("NFC", p)
        if folded in seen:
            raise ConflictError(
                f"entries {seen[folded]!r} and {p!r} differ only in Unicode normalisation; "
                "rename one of them",
                [seen[folded], p],
            )
        seen[folded] = p
    for a, b in zip(ordered, ordered[1:]):
        if b.startswith(a + "/"):
            raise ConflictError(
                f"entry {a!r} is a file but {b!r} needs it to be a directory; "
                "rename or remove one of them",
                [a, b],
            )


class Artifact:
    """A set of files logged together as one version of a named artifact.

    Args:
        name: the artifact's name (letters, digits, ``_-.``).
        type: what kind of artifact it is, for example ``dataset`` or ``model``.
        description: free text stored with the version.
        metadata: a dict of JSON-compatible values stored with the version.
        incremental: log only additions and replacements on top of the latest version.
    """

    def __init__(
        self,
        name: str,
        type: str,  # noqa: A002 - the W&B spelling users know
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        incremental: bool = False,
    ) -> None:
        self._name = check_name(name)
        self._type = check_type(type)
        if description is not None and not isinstance(description, str):
            raise InvalidInputError("description must be a string")
        self._description = description
        self._metadata = fmt.normalize_metadata(metadata)
        self._incremental = incremental
        self._sources: dict[str, Source] = {}
        #: Entry paths whose files are hard-linked into the store (policy="immutable").
        self._linked: set[str] = set()
        self._base: Digest | None = None
        self._base_entries: dict[str, Entry] | None = None
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        # Set once logged:
        self._store: Store | None = None
        self._refs: Refs | None = None
        self._index: int | None = None
        self._commit: dict[str, Any] | None = None
        self._aliases: list[str] = []
        self._frozen: str | None = None

    @classmethod
    def _logged(cls, store: "Store", refs: "Refs", index: int) -> "Artifact":
        commit = store.read_commit(refs.versions[index][0])  # type: ignore[index]
        art = cls.__new__(cls)
        art.__init__(refs.name, refs.type, commit.get("description"), commit.get("metadata"))
        art._bind(store, refs, index, commit)
        return art

    def _bind(self, store: "Store", refs: "Refs", index: int, commit: dict[str, Any]) -> None:
        self._store, self._refs, self._index, self._commit = store, refs, index, commit
        self._description = commit.get("description")
        self._metadata = commit.get("metadata") or {}
        self._aliases = refs.aliases_of(index)
        self._sources = {}
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __repr__(self) -> str:
        label = self.qualified_name if self.is_logged else f"{self._name} (draft)"
        return f"<Artifact {label} type={self._type}>"

    # -- state -----------------------------------------------------------------------

    @property
    def is_logged(self) -> bool:
        return self._commit is not None

    def is_draft(self) -> bool:
        return self._commit is None

    def _need_draft(self, what: str) -> None:
        if self._frozen is not None:
            raise ArtifactStateError(
                f"cannot {what}: artifact {self._name!r} was {self._frozen}; "
                "build a new Artifact for each upsert"
            )
        if self.is_logged:
            raise ArtifactStateError(
                f"cannot {what}: {self.qualified_name} is logged and immutable; "
                "call new_draft() to make a changed version"
            )

    def _need_logged(self, what: str) -> None:
        if not self.is_logged:
            raise ArtifactStateError(
                f"cannot {what}: artifact {self._name!r} is a draft; log it first "
                "(run.log_artifact or artifact.save)"
            )

    # -- attributes ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def type(self) -> str:
        return self._type

    @property
    def version(self) -> str | None:
        """``vN`` once logged, None for a draft."""
        return None if self._index is None else f"v{self._index}"

    @property
    def qualified_name(self) -> str:
        return f"{self._name}:{self.version}" if self.is_logged else self._name

    @property
    def id(self) -> str | None:
        """The commit digest of a logged version."""
        return None if self._refs is None else self._refs.versions[self._index][0]  # type: ignore[index]

    @property
    def aliases(self) -> list[str]:
        """The aliases of this version. Assign a new list, then ``save()``, to change them."""
        return list(self._aliases)

    @aliases.setter
    def aliases(self, value: Iterable[str]) -> None:
        from ._names import check_alias

        self._aliases = [a if a == "latest" else check_alias(a) for a in value]

    @property
    def description(self) -> str | None:
        return self._description

    @description.setter
    def description(self, value: str | None) -> None:
        self._need_draft("change the description")
        self._description = value

    @property
    def metadata(self) -> dict[str, Any]:
        """A copy of the metadata; a logged version's metadata never changes."""
        return copy.deepcopy(self._metadata)

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        self._need_draft("change the metadata")
        self._metadata = fmt.normalize_metadata(value)

    @property
    def digest(self) -> str:
        """The manifest digest: equal for equal contents, whatever the metadata."""
        if self.is_logged:
            return self._commit["manifest"]  # type: ignore[index]
        return fmt.digest_bytes(fmt.encode_manifest(list(self._draft_entries().values())))

    @property
    def created_at(self) -> float | None:
        return None if self._commit is None else self._commit["created"]

    @property
    def manifest(self) -> dict[str, Entry]:
        """Entries by path."""
        if self.is_logged:
            return {e.path: e for e in self._entries()}
        return self._draft_entries()

    def files(self) -> list[Entry]:
        """The entries, sorted by path."""
        return sorted(self.manifest.values(), key=lambda e: e.path)

    @property
    def size(self) -> int:
        return sum(e.size or 0 for e in self.manifest.values())

    def logged_by(self) -> dict[str, Any] | None:
        """The run that logged this version (id, project, group, job_type, host, pid)."""
        self._need_logged("ask who logged it")
        return self._commit.get("run")  # type: ignore[union-attr]

    @property
    def store(self) -> "Store | None":
        return self._store

    def _entries(self) -> list[Entry]:
        assert self._store is not None and self._commit is not None
        return self._store.read_manifest(self._commit["manifest"])

    # -- building a draft ----------------------------------------------------------------

    def _put(self, name: str, source: Source, overwrite: bool) -> None:
        check_path(name)
        old = self._sources.get(name)
        if old is not None and not overwrite and old != source:
            raise ConflictError(
                f"artifact {self._name!r} already has an entry {name!r}; "
                "pass overwrite=True to replace it",
                [name],
            )
        self._sources[name] = source

    @staticmethod
    def _check_policy(policy: str) -> bool:
        if policy not in ("mutable", "immutable"):
            raise InvalidInputError(f"unknown policy {policy!r}; use 'mutable' or 'immutable'")
        return policy == "immutable"

    def add_file(
        self,
        local_path: str | os.PathLike[str],
        name: str | None = None,
        overwrite: bool = False,
        policy: str = "mutable",
    ) -> None:
        """Add one file, as ``name`` (default: its file name). Its bytes are read at log time.

        With ``policy="immutable"`` you promise never to modify the file: a large file is
        then hard-linked into the store instead of copied (same filesystem only; else it
        is copied) and becomes read-only.
        """
        self._need_draft("add a file")
        link = self._check_policy(policy)
        path = Path(local_path)
        if not path.is_file():
            raise InvalidInputError(
                f"cannot add {path}: " + ("not a regular file" if path.exists() else "no such file")
            )
        entry = normalize_path(name if name is not None else path.name)
        self._put(entry, path.absolute(), overwrite)
        if link:
            self._linked.add(entry)

    def add_dir(
        self,
        local_path: str | os.PathLike[str],
        name: str | None = None,
        overwrite: bool = False,
        policy: str = "mutable",
    ) -> None:
        """Add every file under a directory, with paths relative to it, under ``name``/.

        Symlinks to files are followed; symlinks to directories, dangling symlinks and
        special files (FIFOs, sockets, devices) are skipped with a warning. ``policy`` is
        as for :meth:`add_file`.
        """
        self._need_draft("add a directory")
        link = self._check_policy(policy)
        root = Path(local_path)
        if not root.is_dir():
            raise InvalidInputError(f"cannot add {root}: not a directory")
        prefix = normalize_path(name) + "/" if name else ""
        for rel, full in _walk(root):
            self._put(prefix + rel, full, overwrite)
            if link:
                self._linked.add(prefix + rel)

    @contextlib.contextmanager
    def new_file(self, name: str, mode: str = "x", encoding: str | None = None) -> Iterator[IO[Any]]:
        """Open a new file to write; it is added as ``name`` when the block ends."""
        self._need_draft("add a file")
        name = normalize_path(name)
        if "x" in mode and name in self._sources:
            raise ConflictError(f"artifact {self._name!r} already has an entry {name!r}", [name])
        if self._tempdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="artstore-new-file-")
        path = Path(self._tempdir.name, f"{len(os.listdir(self._tempdir.name))}")
        with open(path, mode.replace("x", "w"), encoding=encoding) as f:
            yield f
        self._sources[name] = path

    def add_reference(self, uri: str, name: str | None = None, checksum: bool = True) -> None:
        """Record a file or directory by URI, without copying it into the store.

        ``file://`` URIs are hashed (with ``checksum=True``); other schemes are recorded
        by URI only and need ``checksum=False``.
        """
        self._need_draft("add a reference")
        parsed = urlparse(uri)
        if not parsed.scheme:
            raise InvalidInputError(f"reference {uri!r} has no scheme; write file://{uri}")
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise InvalidInputError(
                f"reference {uri!r} names host {parsed.netloc!r}; file:// references are to "
                "this machine's files: write file:///absolute/path"
            )
        if parsed.scheme != "file":
            if checksum:
                raise InvalidInputError(
                    f"cannot checksum reference {uri!r}: only file:// is supported; "
                    "pass checksum=False to record the URI alone"
                )
            base = name or parsed.path.rstrip("/").rsplit("/", 1)[-1] or parsed.netloc
            self._put(normalize_path(base), Entry(normalize_path(base), fmt.digest_bytes(uri.encode()), None, uri), False)
            return
        path = reference_path(uri)
        if path.is_dir():
            prefix = normalize_path(name) + "/" if name else ""
            for rel, full in _walk(path):
                self._put(prefix + rel, self._reference(full, prefix + rel, checksum), False)
        elif path.is_file():
            entry_name = normalize_path(name if name is not None else path.name)
            self._put(entry_name, self._reference(path, entry_name, checksum), False)
        else:
            raise InvalidInputError(f"cannot add reference {uri!r}: no such file or directory")

    @staticmethod
    def _reference(path: Path, name: str, checksum: bool) -> Entry:
        uri = "file://" + quote(str(path.absolute()))
        if checksum:
            return Entry(name, Digest(hash_file(path)), path.stat().st_size, uri)
        return Entry(name, fmt.digest_bytes(uri.encode()), None, uri)

    def remove(self, name: str) -> None:
        """Remove an entry, or every entry under a directory path."""
        self._need_draft("remove an entry")
        name = normalize_path(name)
        doomed = [p for p in self._draft_paths() if p == name or p.startswith(name + "/")]
        if not doomed:
            raise NotFoundError(f"artifact {self._name!r} has no entry {name!r}")
        for p in doomed:
            self._sources.pop(p, None)

    def _draft_paths(self) -> list[str]:
        return list(self._sources)

    def get_entry(self, name: str) -> Entry:
        """Return the entry at ``name``."""
        name = check_path(name)
        entries = self.manifest
        if name not in entries:
            raise NotFoundError(f"{self.qualified_name} has no entry {name!r}")
        return entries[name]

    get_path = get_entry

    def _draft_entries(self) -> dict[str, Entry]:
        out = {}
        for path, source in self._sources.items():
            if isinstance(source, Entry):
                out[path] = source
            else:
                out[path] = Entry(path, Digest(hash_file(source)), source.stat().st_size)
        return out

    # -- logging ---------------------------------------------------------------------

    def save(self, store: "Store | str | os.PathLike[str] | None" = None) -> "Artifact":
        """Log a draft without a run; on a logged version, apply changes to its aliases."""
        from ._store import Store

        if self.is_logged:
            assert self._store is not None
            current = set(self._refs.aliases_of(self._index))  # type: ignore[union-attr]
            wanted = set(self._aliases) | {"latest"} & current
            for alias in sorted(wanted - current):
                self._store.add_alias(self.qualified_name, alias)
            for alias in sorted(current - wanted - {"latest"}):
                self._store.remove_alias(self._name, alias)
            fresh = self._store.artifact(self.qualified_name)
            self._bind(self._store, fresh._refs, fresh._index, fresh._commit)  # type: ignore[arg-type]
            return self
        target = store if isinstance(store, Store) else Store(store)
        return target_log(target, self, self._aliases)

    def wait(self, timeout: float | None = None) -> "Artifact":
        """Return the artifact: logging is synchronous, so it is done already."""
        return self

    def new_draft(self) -> "Artifact":
        """Return a draft holding every entry of this version, to change and log again."""
        self._need_logged("draft from it")
        draft = Artifact(self._name, self._type, self._description, self._metadata)
        entries = {e.path: e for e in self._entries()}
        draft._sources = dict(entries)
        draft._base = Digest(self.id)  # type: ignore[arg-type]
        draft._base_entries = entries
        return draft

    # -- reading a logged version --------------------------------------------------------

    def _default_root(self) -> Path:
        base = os.environ.get("ARTSTORE_ARTIFACT_DIR", "./artifacts")
        return Path(base) / f"{self._name}-{self.version}"

    def download(
        self,
        root: str | os.PathLike[str] | None = None,
        mode: str = "copy",
        path_prefix: str | None = None,
        progress: Progress | None = None,
        include: str | Sequence[str] | None = None,
    ) -> str:
        """Write the version's files under ``root`` (default ``./artifacts/NAME-vN``).

        Args:
            root: the directory to write into; created if missing.
            mode: ``copy`` (default), ``hardlink``, ``symlink``, ``reflink``, or ``auto``
                (reflink where the filesystem can, else copy). Linked files share the
                store's read-only blob: do not modify them in place.
            path_prefix: only entries whose path starts with this.
            progress: called with (bytes, files) as bytes arrive and files are written.
            include: only entries whose path matches one of these glob patterns
                (``fnmatch`` rules, matched against the whole '/'-separated path: ``*``
                also matches ``/``). From a store on object storage only the blobs of
                the chosen entries are downloaded.

        Returns:
            The root directory, as a string.
        """
        self._need_logged("download")
        assert self._store is not None
        target = Path(root) if root is not None else self._default_root()
        target.mkdir(parents=True, exist_ok=True)
        entries = self._entries()
        for path in entries.paths:
            check_path(path)  # refuse a bad version before writing any of it
        patterns = [include] if isinstance(include, str) else list(include or ())
        wanted = path_filter(patterns, path_prefix)
        chosen = [e for e in entries if wanted is None or wanted(e.path)]
        local = self._store.backend.is_local
        # From object storage the bytes are counted as they arrive, the files as written.
        files_only = None if progress is None else (lambda _b, n: progress(0, n))
        writer = Materializer(target, self._store.blob_path, mode,
                              progress if local else files_only)
        if not local and mode == "symlink":
            raise InvalidInputError(
                f"cannot download {self.qualified_name} from {self._store.path} with symlinks: "
                "they would point into the download cache, which is trimmed; use --mode "
                "copy or hardlink"
            )
        if patterns and not chosen:
            raise InvalidInputError(
                f"no entry of {self.qualified_name} matches {', '.join(map(repr, patterns))}"
                + (f" under {path_prefix!r}" if path_prefix else "")
                + "; 'artstore show' lists its paths"
            )
        for batch in self._store.blob_batches(chosen, None if local else progress):
            for entry in batch:
                try:
                    writer.write(entry)
                except (CorruptDataError, ObjectNotFoundError) as exc:
                    if isinstance(exc, ObjectNotFoundError) and (local or entry.ref is not None):
                        raise
                    if entry.ref is None and local:
                        self._store.quarantine(entry.digest)
                        raise CorruptDataError(
                            f"{exc}. The damaged blob was moved to the store's corrupt/ "
                            "directory; put the original file again to repair it",
                            exc.path,
                        ) from None
                    if entry.ref is not None:
                        raise
                    # A cached copy damaged since it was fetched (through a hard link,
                    # say), or trimmed by another download meanwhile: fetch it again, once.
                    self._store.cache.evict(entry.digest)
                    next(iter(self._store.blob_batches([entry])))
                    writer.write(entry)
        return str(target)

    def checkout(self, root: str | os.PathLike[str] | None = None, mode: str = "copy") -> str:
        """Like :meth:`download`, and also delete files under ``root`` not in the version."""
        self._need_logged("check out")
        target = Path(root) if root is not None else self._default_root()
        if target.is_dir():
            remove_extra(target, {e.path for e in self._entries()})
        return self.download(target, mode)

    def verify(self, root: str | os.PathLike[str] | None = None,
               include: str | Sequence[str] | None = None) -> None:
        """Re-hash the files under ``root`` and raise VerificationError on any difference.

        References recorded without a checksum are skipped. With ``include`` (glob
        patterns, as for :meth:`download`), only the matching paths are compared.
        """
        self._need_logged("verify")
        target = Path(root) if root is not None else self._default_root()
        patterns = [include] if isinstance(include, str) else list(include or ())
        wanted = path_filter(patterns, None)
        entries = self._entries()
        if wanted is not None and not any(wanted(p) for p in entries.paths):
            raise InvalidInputError(
                f"no entry of {self.qualified_name} matches "
                f"{', '.join(map(repr, patterns))}; 'artstore show' lists its paths"
            )
        problems = verify_dir(target, entries, wanted)
        if problems:
            shown = "; ".join(f"{p}: {why}" for p, why in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise VerificationError(
                f"{target} differs from {self.qualified_name} in {len(problems)} "
                f"place(s): {shown}{more}",
                problems,
            )

    def file(self, root: str | os.PathLike[str] | None = None) -> str:
        """Download a single-file artifact and return the file's path."""
        entries = self._entries() if self.is_logged else []
        if len(entries) != 1:
            raise ArtifactStateError(
                f"file() needs an artifact with exactly one entry; {self.qualified_name} "
                f"has {len(entries)}: use download()"
            )
        return os.path.join(self.download(root), *entries[0].path.split("/"))


def path_filter(patterns: Sequence[str], prefix: str | None) -> Callable[[str], bool] | None:
    """A test of entry paths: under ``prefix`` and matching any of ``patterns``."""
    if not patterns and prefix is None:
        return None

    def wanted(path: str) -> bool:
        return (prefix is None or path.startswith(prefix)) and (
            not patterns or any(fnmatch.fnmatchcase(path, p) for p in patterns))

    return wanted


def _walk(root: Path) -> Iterator[tuple[str, Path]]:
    """Yield (relative '/'-path, absolute path) of files to add under ``root``.

    Directory entries carry their file type, so only symlinks cost a ``stat`` here; the
    ingest stats every file once more when it reads it, and that is the one it trusts.
    """
    pending = [(root.absolute(), "")]
    while pending:
        here, prefix = pending.pop()
        try:
            with os.scandir(here) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("skipping %s: cannot list it (%s)", here, exc.strerror)
            continue
        for entry in reversed(found):  # popped last-first: files come out in name order
            full = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                pending.append((full, f"{prefix}{entry.name}/"))
                continue
            if entry.is_symlink():
                try:
                    mode = os.stat(full).st_mode
                except OSError:
                    log.warning("skipping %s: a dangling symlink or unreadable entry", full)
                    continue
                if stat_mod.S_ISDIR(mode):
                    log.warning("skipping %s: a symlink to a directory", full)
                    continue
                if not stat_mod.S_ISREG(mode):
                    log.warning("skipping %s: not a regular file", full)
                    continue
            elif not entry.is_file(follow_symlinks=False):
                log.warning("skipping %s: not a regular file", full)
                continue
            rel = prefix + entry.name
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidNameError(
                    f"cannot add {full!r}: its name is not valid UTF-8; rename it"
                ) from None
            yield rel, full


def store_sources(store: "Store", artifact: Artifact, progress: Progress | None = None) -> list[Entry]:
    """Store the blobs of a draft's files durably; return all of its entries."""
    if artifact.is_logged:
        raise ArtifactStateError(
            f"{artifact.qualified_name} is already logged; call new_draft() to change it"
        )
    sources = artifact._sources
    check_tree(sources)
    files = [(p, s) for p, s in sources.items() if isinstance(s, Path)]
    ingest = store.ingest(progress)
    try:
        results = ingest.add_files(
            [s for _, s in files], [p in artifact._linked for p, _ in files]
        )
        ingest.finish()
    except BaseException:
        ingest.abort()
        raise
    entries = [
        s if s.path == p else Entry(p, s.digest, s.size, s.ref)
        for p, s in sources.items()
        if isinstance(s, Entry)
    ]
    entries.extend(Entry(path, digest, size) for (path, _), (digest, size) in zip(files, results))
    return entries


def target_log(
    store: "Store",
    artifact: Artifact,
    aliases: Iterable[str] = (),
    run: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> Artifact:
    """Store a draft's files, commit it as a version, and turn it into that version."""
    from ._names import check_alias
    from ._store import Refs

    aliases = [a if a == "latest" else check_alias(a) for a in aliases]  # before any work

    entries = {e.path: e for e in store_sources(store, artifact, progress)}
    base_entries = artifact._base_entries
    merge = None
    if base_entries is not None:
        merge = _patch_merge(store, artifact._base, base_entries, entries)  # type: ignore[arg-type]
    elif artifact._incremental:
        merge = _incremental_merge(store, entries)

    refs, index = commit_artifact(store, artifact, list(entries.values()), aliases, run, merge)
    artifact._bind(store, refs, index, store.read_commit(refs.versions[index][0]))  # type: ignore[index]
    assert isinstance(refs, Refs)
    return artifact


def commit_artifact(  # type: ignore[no-untyped-def]
    store: "Store",
    artifact: Artifact,
    entries: list[Entry],
    aliases: Iterable[str],
    run: dict[str, Any] | None,
    merge=None,
) -> tuple["Refs", int]:
    """Commit ``entries`` as the next version of the artifact's name, with its fields."""
    refs, index, _created = store.commit_version(
        artifact.name,
        artifact.type,
        entries,
        aliases=aliases,
        description=artifact.description,
        metadata=artifact._metadata,
        run=run,
        merge=merge,
        base=artifact._base,
    )
    return refs, index


def _latest_entries(store: "Store", refs: "Refs") -> tuple[str | None, dict[str, Entry]]:
    latest = refs.latest()
    if latest is None:
        return None, {}
    commit_digest = refs.versions[latest][0]  # type: ignore[index]
    manifest = store.read_commit(commit_digest)["manifest"]
    return commit_digest, {e.path: e for e in store.read_manifest(manifest)}


def _incremental_merge(store: "Store", additions: dict[str, Entry]):  # type: ignore[no-untyped-def]
    def merge(_entries: list[Entry], refs: "Refs") -> list[Entry]:
        _, current = _latest_entries(store, refs)
        current.update(additions)
        check_tree(current)
        return list(current.values())

    return merge


def _patch_merge(  # type: ignore[no-untyped-def]
    store: "Store", base: Digest, base_entries: dict[str, Entry], mine: dict[str, Entry]
):
    changed = {
        p: mine.get(p)
        for p in set(base_entries) | set(mine)
        if base_entries.get(p) != mine.get(p)
    }

    def merge(_entries: list[Entry], refs: "Refs") -> list[Entry]:
        latest_commit, current = _latest_entries(store, refs)
        if latest_commit == base:
            return list(mine.values())
        theirs = {
            p for p in set(base_entries) | set(current) if base_entries.get(p) != current.get(p)
        }
        clash = sorted(p for p in changed if p in theirs and changed[p] != current.get(p))
        if clash:
            raise ConflictError(
                f"cannot apply the patch to {refs.name!r}: {', '.join(clash[:10])} "
                f"changed in a version logged since this draft was made; draft again "
                "from the latest version",
                clash,
            )
        for path, entry in changed.items():
            if entry is None:
                current.pop(path, None)
            else:
                current[path] = entry
        check_tree(current)
        return list(current.values())

    return merge
