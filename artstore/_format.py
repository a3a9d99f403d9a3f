"""Encoding and decoding of the store's records (FORMAT.md section 4).

Records are msgpack maps with a ``kind`` and a ``format`` key. Content-addressed records
(manifests, commits) are encoded canonically so that the same content always yields the
same bytes and so the same digest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NewType

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


@dataclass(frozen=True, slots=True)
class Entry:
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


def encode_manifest(entries: list[Entry]) -> bytes:
    """Encode entries (sorted here) as a canonical manifest record."""
    rows = sorted(
        ([e.path, to_bin(e.digest), e.size, e.ref] for e in entries),
        key=lambda row: row[0].encode("utf-8"),
    )
    return encode({"kind": "manifest", "format": RECORD_FORMAT, "entries": rows})


def decode_manifest(data: bytes, where: str) -> list[Entry]:
    record = decode(data, "manifest", where)
    try:
        entries = [Entry(path, d.hex(), size, ref) for path, d, size, ref in record["entries"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CorruptDataError(f"{where}: malformed manifest entries ({exc})", where) from exc
    for e in entries:
        if not (
            type(e.path) is str
            and len(e.digest) == 32
            and (e.size is None or type(e.size) is int)
            and (e.ref is None or type(e.ref) is str)
        ):
            raise CorruptDataError(f"{where}: malformed manifest entry {e.path!r}", where)
    return entries


def normalize_metadata(metadata: object) -> dict[str, Any]:
    """Check that metadata is a JSON-compatible mapping and return a plain copy."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInputError(
            f"metadata must be a dict of JSON-compatible values, got {type(metadata).__name__}"
        )

    def clean(value: object, where: str) -> Any:
        if value is None or isinstance(value, (str, bool, int)):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidInputError(f"metadata {where}: {value} is not allowed (not finite)")
            return value
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if not isinstance(k, str):
                    raise InvalidInputError(f"metadata {where}: key {k!r} is not a string")
                out[k] = clean(v, f"{where}.{k}")
            return out
        raise InvalidInputError(
            f"metadata {where}: {type(value).__name__} is not JSON-compatible"
        )

    return clean(metadata, "root")  # type: ignore[no-any-return]
