"""Remotes: other stores that versions are pushed to and pulled from.

A remote is a name for another store's location (a path or an ``s3://`` URL), kept in
the local store at ``remotes/NAME``. Push and pull are one operation, :func:`transfer`,
from a source store to a destination store:

1. the blobs of the version that the destination lacks are copied, each hashed as it
   streams and refused if its bytes do not match its name;
2. the destination is made durable;
3. only then is the version committed there, through the destination's own
   compare-and-swap on its refs, so it gets the next free number there and never
   overwrites or renumbers a version that someone else made.

The local store records which version each transferred version became on the other side
(``remote-map/STORE_ID/NAME``, keyed by the other store's id), so a version is sent once.
Content already the latest version on the other side is not committed again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import xxhash

from . import _format as fmt
from ._backend import TempFile, is_url
from ._ingest import blob_key
from ._names import check_name, parse_spec
from ._store import Store
from .errors import (
    ArtifactNotFoundError,
    CorruptDataError,
    InvalidInputError,
    VersionNotFoundError,
)

#: Blobs copied at once.
COPIES = 8
#: Above this many blobs, a store on object storage is listed rather than asked per blob.
LIST_ABOVE = 200
#: Blobs up to this size are copied through memory in one request.
SMALL = 8 * 1024 * 1024

Progress = Callable[[int, int], None]


@dataclass
class Moved:
    """One version transferred: its number on each side, and whether it was new there."""

    name: str
    source: int
    dest: int
    created: bool
    blobs: int
    bytes: int


# -- remote names ------------------------------------------------------------------------


def _remote_key(name: str) -> str:
    return f"remotes/{name}"


def add_remote(store: Store, name: str, url: str) -> str:
    """Remember ``url`` as remote ``name`` of ``store``; return the location stored."""
    check_name(name, "remote name")
    if store.backend.exists(_remote_key(name)):
        raise InvalidInputError(
            f"remote {name!r} already exists ({remote_url(store, name)}); remove it first "
            f"with 'artstore remote rm {name}'"
        )
    where = url if is_url(url) else os.path.abspath(os.path.expanduser(url))
    other = Store(where)  # refuses a malformed URL now rather than at the first push
    store._ensure_created()
    if not is_url(where) and os.path.realpath(where) == os.path.realpath(store.path):
        raise InvalidInputError(f"remote {name!r} would be this store itself ({where})")
    if not is_url(where) and os.path.exists(where) and not other.exists():
        if not os.path.isdir(where) or os.listdir(where):
            raise InvalidInputError(
                f"remote {name!r}: {where} is not an artstore store; give a store's path, "
                "an empty directory, or one that does not exist yet"
            )
        _not_itself(store, other)  # a URL is not contacted: adding works offline
    store.backend.publish(
        _remote_key(name),
        fmt.encode({"kind": "remote", "format": fmt.RECORD_FORMAT, "name": name, "url": where}),
        readonly=False,
    )
    return where


def _not_itself(store: Store, other: Store) -> None:
    """Refuse a remote that is the store itself, under another path or URL."""
    if other.exists() and store.exists() and other.id == store.id:
        raise InvalidInputError(
            f"{other.path} is this store itself (the same store id); a remote must be "
            "another store"
        )


def remote_url(store: Store, name: str) -> str:
    check_name(name, "remote name")
    try:
        data = store.backend.read(_remote_key(name))
    except FileNotFoundError:
        known = _remote_names(store)
        raise InvalidInputError(
            f"no remote named {name!r}; "
            + (f"remotes: {', '.join(sorted(known))}" if known else
               "add one with 'artstore remote add NAME URL'")
        ) from None
    return str(fmt.decode(data, "remote", str(store.path / _remote_key(name)))["url"])


def _remote_names(store: Store) -> list[str]:
    return sorted(store.backend.list("remotes"))


def remotes(store: Store) -> dict[str, str]:
    """Every remote of ``store``: name -> location."""
    return {n: remote_url(store, n) for n in _remote_names(store)}


def remove_remote(store: Store, name: str) -> None:
    remote_url(store, name)
    store.backend.delete(_remote_key(name))


def pick_remote(store: Store, name: str | None) -> tuple[str, Store]:
    """The remote named ``name``, or the only remote there is."""
    if name is None:
        known = remotes(store)
        if len(known) != 1:
            raise InvalidInputError(
                "no remote configured; add one with 'artstore remote add NAME URL'" if not known
                else f"{len(known)} remotes ({', '.join(known)}): choose one with --remote"
            )
        name = next(iter(known))
    other = Store(remote_url(store, name))
    _not_itself(store, other)
    return name, other


# -- the version map ---------------------------------------------------------------------


def _map_key(other: Store, name: str) -> str:
    return f"remote-map/{other.id}/{name}"


@dataclass
class VersionMap:
    """What one store knows of its exchanges with another, for one artifact name.

    ``pairs`` maps a local version number to the other store's. ``pushed`` and
    ``pulled`` hold the aliases as they were set by the last push (alias -> the other
    store's number) and pull (alias -> the local number): an alias is carried over
    again only if it moved since, so one moved on the other side is not moved back.
    """

    pairs: dict[int, int] = field(default_factory=dict)
    pushed: dict[str, int] = field(default_factory=dict)
    pulled: dict[str, int] = field(default_factory=dict)


def version_map(local: Store, other: Store, name: str) -> dict[int, int]:
    """Local version number -> the other store's, for versions pushed or pulled."""
    return _read_map(local, other, name).pairs


def _read_map(local: Store, other: Store, name: str) -> VersionMap:
    try:
        data = local.backend.read(_map_key(other, name))
    except FileNotFoundError:
        return VersionMap()
    record = fmt.decode(data, "remote-map", str(local.path / _map_key(other, name)))
    return VersionMap(
        {int(a): int(b) for a, b in record["pairs"]},
        {str(k): int(v) for k, v in record.get("pushed", {}).items()},
        {str(k): int(v) for k, v in record.get("pulled", {}).items()},
    )


def _write_map(local: Store, other: Store, name: str, vmap: VersionMap) -> None:
    local.backend.publish(_map_key(other, name), fmt.encode({
        "kind": "remote-map", "format": fmt.RECORD_FORMAT, "store": other.id,
        "location": str(other.path), "name": name,
        "pairs": sorted([a, b] for a, b in vmap.pairs.items()),
        "pushed": dict(sorted(vmap.pushed.items())),
        "pulled": dict(sorted(vmap.pulled.items())),
    }), readonly=False)


# -- moving bytes ------------------------------------------------------------------------


def _verified(src: Store, digest: str, progress: Progress | None) -> Iterator[bytes]:
    """The bytes of blob ``digest`` from ``src``; raises at the end if they do not match."""
    hasher = xxhash.xxh3_128()
    key = blob_key(digest)
    try:
        for chunk in src.backend.read_chunks(key):
            hasher.update(chunk)
            if progress:
                progress(len(chunk), 0)
            yield chunk
    except FileNotFoundError:
        raise CorruptDataError(f"blob {digest} is missing from {src.path}; run 'artstore "
                               f"fsck --store {src.path}'", str(src.path / key)) from None
    if hasher.hexdigest() != digest:
        where = str(src.path / key)
        raise CorruptDataError(
            f"{where}: bytes hash to {hasher.hexdigest()}, not to the blob's name; nothing "
            "was committed on the other side (run 'artstore fsck' on the source)", where)


def _missing(dst: Store, digests: dict[str, int]) -> dict[str, int]:
    """The blobs of ``digests`` (digest -> size) that ``dst`` lacks or holds truncated."""
    listing = getattr(dst.backend, "blob_sizes", None)
    if listing is not None and len(digests) > LIST_ABOVE:
        # One request per thousand blobs there beats one per blob wanted.
        have = listing()
        return {d: size for d, size in digests.items() if have.get(d) != size}

    def lacks(digest: str) -> bool:
        st = dst.backend.stat(blob_key(digest))
        return st is None or st[0] != digests[digest]

    with ThreadPoolExecutor(COPIES) as pool:
        flags = list(pool.map(lacks, digests))
    return {d: digests[d] for d, flag in zip(digests, flags) if flag}


def copy_blobs(src: Store, dst: Store, digests: dict[str, int],
               progress: Progress | None = None) -> tuple[int, int]:
    """Copy the blobs ``dst`` lacks (digest -> size) and make them durable there.

    Returns how many blobs and bytes were sent.
    """
    missing = _missing(dst, digests)
    if not missing:
        return 0, 0
    dst._ensure_created()
    upload = getattr(dst.backend, "upload_file", None)

    def send(digest: str) -> TempFile | None:
        chunks = _verified(src, digest, progress)
        if upload is not None:
            if missing[digest] <= SMALL:
                chunks = iter([b"".join(chunks)])  # verified whole before it is sent
            upload(blob_key(digest), chunks)
            return None
        temp = dst.backend.temp()
        try:
            for chunk in chunks:
                temp.write(chunk)
            temp.close()
        except BaseException:
            temp.discard()
            raise
        return temp

    temps: list[tuple[TempFile, str]] = []
    failure: BaseException | None = None
    with ThreadPoolExecutor(COPIES) as pool:
        futures = {d: pool.submit(send, d) for d in missing}
        # Every copy is collected, even after one failed, so none leaves a temp file.
        for digest, future in futures.items():
            try:
                temp = future.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                failure = failure or exc
                continue
            if temp is not None:
                temps.append((temp, blob_key(digest)))
    try:
        if failure is not None:
            raise failure
        # The same order as an ingest: every byte durable, then the names.
        dst.backend.sync()
        dst.backend.publish_many(temps)
    except BaseException:
        for temp, _key in temps:
            temp.discard()
        raise
    return len(missing), sum(missing.values())


def transfer(src: Store, dst: Store, name: str, index: int, known: dict[int, int],
             progress: Progress | None = None) -> Moved:
    """Make version ``index`` of ``name`` in ``src`` a version of ``name`` in ``dst``.

    ``known`` maps versions of ``src`` already transferred to their numbers in ``dst``;
    one of those is not sent again, even if it was deleted there since.
    """
    if index in known:
        return Moved(name, index, known[index], False, 0, 0)
    refs = src.read_refs(name)
    if refs is None or index >= len(refs.versions) or refs.versions[index] is None:
        raise ArtifactNotFoundError(f"{name}:v{index} is not in {src.path}")
    commit = src.read_commit(refs.versions[index][0])
    manifest = src.read_manifest(commit["manifest"])
    sizes = {e.digest: e.size or 0 for e in manifest if e.ref is None}
    blobs, nbytes = copy_blobs(src, dst, sizes, progress)
    _refs, j, created = dst.commit_version(
        name, refs.type, list(manifest),
        description=commit.get("description"), metadata=commit.get("metadata"),
        run=commit.get("run"), created=commit.get("created"),
    )
    return Moved(name, index, j, created, blobs, nbytes)


def _sync_aliases(src: Store, dst: Store, name: str, pairs: dict[int, int],
                  last: dict[str, int]) -> dict[str, int]:
    """Point aliases of ``dst`` where ``src`` has them, unless moved in ``dst`` since.

    ``pairs`` maps ``src`` versions to ``dst`` ones; ``last`` is where the previous sync
    left each alias in ``dst``. Returns the new ``last``.
    """
    src_refs, dst_refs = src.read_refs(name), dst.read_refs(name)
    if src_refs is None or dst_refs is None:
        return last
    synced = dict(last)
    for alias, i in sorted(src_refs.aliases.items()):
        j = pairs.get(i)
        if alias == "latest" or j is None:
            continue
        if dst_refs.aliases.get(alias) == j:
            synced[alias] = j
        elif last.get(alias) != j:
            try:
                dst.add_alias(f"{name}:v{j}", alias)
            except VersionNotFoundError:
                continue  # the paired version was deleted there
            synced[alias] = j
        # else: set there by the last sync and moved since by someone else; left alone.
    return synced


def _selection(store: Store, specs: list[str]) -> list[tuple[str, list[int]]]:
    """(name, version numbers) for each ``NAME[:V]``; every artifact when ``specs`` is empty."""
    chosen: list[tuple[str, list[int]]] = []
    for spec in specs or store.artifact_names():
        name, which = parse_spec(spec, default="")
        refs = store.read_refs(name)
        if refs is None or refs.latest() is None:
            raise ArtifactNotFoundError(f"no artifact named {name!r} in {store.path}")
        if which:
            chosen.append((name, [store._resolve(refs, which)]))
        else:
            chosen.append((name, [i for i, v in enumerate(refs.versions) if v is not None]))
    return chosen


def push(local: Store, remote: Store, specs: list[str],
         progress: Progress | None = None) -> list[Moved]:
    """Send versions of ``local`` (all of them, by default) that ``remote`` lacks."""
    return _sync(local, remote, specs, True, progress)


def pull(local: Store, remote: Store, specs: list[str],
         progress: Progress | None = None) -> list[Moved]:
    """Fetch versions of ``remote`` (all of them, by default) that ``local`` lacks."""
    return _sync(local, remote, specs, False, progress)


def _sync(local: Store, remote: Store, specs: list[str], pushing: bool,
          progress: Progress | None) -> list[Moved]:
    src, dst = (local, remote) if pushing else (remote, local)
    selection = _selection(src, specs)
    dst._ensure_created()
    _not_itself(local, remote)
    moved = []
    for name, indices in selection:
        # One push or pull of a name by this store at a time: two would copy a version
        # twice.
        with local.backend.lock(f"remote-map/{remote.id}/{name}", timeout=3600):
            vmap = _read_map(local, remote, name)
            # Source version -> destination version.
            known = dict(vmap.pairs) if pushing else {r: l for l, r in vmap.pairs.items()}
            for index in indices:
                result = transfer(src, dst, name, index, known, progress)
                if index not in known:
                    known[index] = result.dest
                    if pushing:
                        vmap.pairs[index] = result.dest
                    else:
                        vmap.pairs[result.dest] = index
                    _write_map(local, remote, name, vmap)
                moved.append(result)
            if pushing:
                vmap.pushed = _sync_aliases(src, dst, name, known, vmap.pushed)
            else:
                vmap.pulled = _sync_aliases(src, dst, name, known, vmap.pulled)
            _write_map(local, remote, name, vmap)
    return moved


def describe(moved: list[Moved], verb: str, where: str) -> list[dict[str, Any]]:
    return [{"name": m.name, "version": f"v{m.source}", verb: f"v{m.dest}", "new": m.created,
             "blobs_sent": m.blobs, "bytes_sent": m.bytes, "remote": where} for m in moved]
