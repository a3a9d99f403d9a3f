"""Encoding and decoding of the store's records (FORMAT.md section 4).

Records are msgpack maps with a ``kind`` and a ``format`` key. Content-addressed records
(manifests, commits) are encoded canonically so that the same content always yields the
same bytes and so the same digest.
"""

from __future__ import annotations

import array
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, NewType

import msgpack
import xxhash

from .errors import CorruptDataError, InvalidInputError, UnknownFormatError

#: A digest as 32 lowercase hex characters.
Digest = NewType("Digest", str)

STORE_FORMAT = "artstore-store"
STORE_VERSION = 1
RECORD_FORMAT = 1


def digest_bytes(data: bytes) -> Digest:
    """Return the XXH3-128 digest of ``data`` in hex."""
    return Digest(xxhash.xxh3_128_hexdigest(data))


def to_bin(digest: str) -> bytes:
    return bytes.fromhex(digest)


def from_bin(raw: bytes) -> Digest:
    if type(raw) is not bytes or len(raw) != 16:
        raise TypeError(f"a digest is 16 bytes, found {raw!r:.40}")
    return Digest(raw.hex())


class Entry(NamedTuple):
    """One file of a version.

    Attributes:
        path: the path inside the artifact, '/'-separated.
        digest: XXH3-128 of the bytes, in hex (of the URI for an unchecksummed reference).
        size: length in bytes, or None for a reference recorded without a checksum.
        ref: the URI for a reference, None for a stored file.
    """

    path: str
    digest: Digest
    size: int | None
    ref: str | None = None

    @property
    def is_reference(self) -> bool:
        return self.ref is not None


#: The size column's marker for "unknown" (a reference recorded without a checksum).
NO_SIZE = 2**64 - 1


class Manifest(Sequence[Entry]):
    """A decoded entry list, kept as columns; :class:`Entry` objects are made on demand.

    A million entries decode in a fraction of a second because nothing is built per
    entry until it is asked for.
    """

    __slots__ = ("_digests", "_index", "_paths", "_refs", "_sizes")

    def __init__(
        self, paths: list[str], digests: bytes, sizes: list[int], refs: dict[int, str]
    ) -> None:
        self._paths = paths
        self._digests = digests
        self._sizes = sizes
        self._refs = refs
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self._paths)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Manifest, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Manifest of {len(self)} entries>"

    def _entry(self, i: int) -> Entry:
        size = self._sizes[i]
        return Entry(
            self._paths[i],
            Digest(self._digests[16 * i : 16 * i + 16].hex()),
            None if size == NO_SIZE else size,
            self._refs.get(i),
        )

    def __getitem__(self, i):  # type: ignore[no-untyped-def,override]
        if isinstance(i, slice):
            return [self._entry(j) for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._entry(i)

    def __iter__(self) -> Iterator[Entry]:
        return (self._entry(i) for i in range(len(self._paths)))

    @property
    def paths(self) -> list[str]:
        return self._paths

    def get(self, path: str) -> Entry | None:
        if self._index is None:
            self._index = {p: i for i, p in enumerate(self._paths)}
        i = self._index.get(path)
        return None if i is None else self._entry(i)

    def blob_digests(self) -> set[str]:
        """The digests of every stored (non-reference) entry, without building entries."""
        hexed = self._digests.hex()
        return {hexed[32 * i : 32 * i + 32] for i in range(len(self._paths)) if i not in self._refs}


def entries_fields(entries: Iterable[Entry]) -> dict[str, Any]:
    """Encode entries, sorted by path, as the columns of FORMAT.md 4.1."""
    ordered = sorted(entries, key=lambda e: e.path)  # code point order = UTF-8 byte order
    sizes = array.array("Q", (NO_SIZE if e.size is None else e.size for e in ordered))
    if sys.byteorder != "little":
        sizes.byteswap()
    return {
        "count": len(ordered),
        "paths": "\0".join(e.path for e in ordered),
        "digests": b"".join(bytes.fromhex(e.digest) for e in ordered),
        "sizes": sizes.tobytes(),
        "refs": {i: e.ref for i, e in enumerate(ordered) if e.ref is not None},
    }


def entries_from_fields(record: dict[str, Any], where: str) -> Manifest:
    """Decode the columns written by :func:`entries_fields`, checking their shapes."""
    try:
        count = record["count"]
        paths = record["paths"].split("\0") if count else []
        digests = record["digests"]
        sizes = array.array("Q")
        sizes.frombytes(record["sizes"])
        if sys.byteorder != "little":
            sizes.byteswap()
        refs = {int(k): v for k, v in record["refs"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptDataError(f"{where}: malformed entry columns ({exc})", where) from exc
    if not (
        type(count) is int
        and len(paths) == count
        and type(digests) is bytes
        and len(digests) == 16 * count
        and len(sizes) == count
        and all(type(v) is str and 0 <= k < count for k, v in refs.items())
    ):
        raise CorruptDataError(f"{where}: entry columns disagree in length or type", where)
    return Manifest(paths, digests, sizes.tolist(), refs)


def encode(record: dict[str, Any]) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


def decode(data: bytes, kind: str, where: str) -> dict[str, Any]:
    """Decode one record and check its kind and format version.

    Args:
        data: the encoded bytes.
        kind: the kind the caller expects.
        where: the file the bytes came from, for error messages.
    """
    try:
        record = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:
        raise CorruptDataError(f"{where}: cannot decode {kind} record ({exc})", where) from exc
    if not isinstance(record, dict):
        raise CorruptDataError(f"{where}: {kind} record is not a map", where)
    if record.get("kind") != kind:
        raise CorruptDataError(
            f"{where}: expected a {kind} record, found kind {record.get('kind')!r}", where
        )
    version = record.get("format")
    if not isinstance(version, int) or version < 1:
        raise CorruptDataError(f"{where}: {kind} record has no valid format version", where)
    if version > RECORD_FORMAT:
        raise UnknownFormatError(
            f"{where}: {kind} format {version} is newer than this artstore supports "
            f"({RECORD_FORMAT}); upgrade artstore",
            where,
        )
    return record


def encode_manifest(entries: Iterable[Entry]) -> bytes:
    """Encode entries as a canonical manifest record."""
    return encode({"kind": "manifest", "format": RECORD_FORMAT, **entries_fields(entries)})


def decode_manifest(data: bytes, where: str) -> Manifest:
    return entries_from_fields(decode(data, "manifest", where), where)


def normalize_metadata(metadata: object) -> dict[str, Any]:
    """Check that metadata is a JSON-compatible mapping and return a plain copy."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInputError(
            f"metadata must be a dict of JSON-compatible values, got {type(metadata).__name__}"
        )

    def clean(value: object, where: str, depth: int = 0) -> Any:
        if depth > 64:
            raise InvalidInputError(f"metadata {where}: nested more than 64 levels deep")
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return value
        if isinstance(value, int):
            if not -(2**63) <= value < 2**64:
                raise InvalidInputError(
                    f"metadata {where}: {value} is outside the 64-bit integer range; "
                    "store it as a string"
                )
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidInputError(f"metadata {where}: {value} is not allowed (not finite)")
            return value
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise InvalidInputError(f"metadata {where}: key {k!r} is not a string")
                out[k] = clean(v, f"{where}.{k}", depth + 1)
            return out
        raise InvalidInputError(
            f"metadata {where}: {type(value).__name__} is not JSON-compatible"
        )

    return clean(metadata, "root")  # type: ignore[no-any-return]
