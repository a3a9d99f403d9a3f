"""The on-disk records of FORMAT.md: property tests of encoding, decoding and path rules."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import msgpack
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from artstore import CorruptDataError, Entry, InvalidNameError, Store, UnknownFormatError
from artstore import _format as fmt
from artstore._names import check_path, normalize_path
from artstore._store import Refs

# Pure functions only: the autouse store fixture does not need resetting between examples.
pure = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

component = st.text(
    alphabet=st.characters(blacklist_characters="/\\\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=12,
).filter(lambda c: c not in (".", ".."))
paths = st.lists(component, min_size=1, max_size=4).map("/".join)
digests = st.binary(min_size=16, max_size=16).map(bytes.hex)
sizes = st.integers(min_value=0, max_value=2**63 - 1)
uris = st.text(max_size=40).map(lambda t: "file:///" + t)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    path = draw(paths)
    digest = draw(digests)
    kind = draw(st.sampled_from(["blob", "checked-ref", "unchecked-ref"]))
    if kind == "blob":
        return Entry(path, fmt.Digest(digest), draw(sizes), None)
    if kind == "checked-ref":
        return Entry(path, fmt.Digest(digest), draw(sizes), draw(uris))
    return Entry(path, fmt.Digest(digest), None, draw(uris))


entry_lists = st.lists(entries(), max_size=30, unique_by=lambda e: e.path)


def by_utf8(items: list[Entry]) -> list[Entry]:
    return sorted(items, key=lambda e: e.path.encode("utf-8"))


# -- manifests ---------------------------------------------------------------------------------


@pure
@given(entry_lists)
def test_manifest_round_trip(items: list[Entry]) -> None:
    for e in items:
        check_path(e.path)  # the strategy builds valid paths only
    data = fmt.encode_manifest(items)
    assert list(fmt.decode_manifest(data, "test")) == by_utf8(items)


@pure
@given(entry_lists, st.randoms(use_true_random=False))
def test_manifest_encoding_is_canonical(items: list[Entry], rnd: random.Random) -> None:
    shuffled = list(items)
    rnd.shuffle(shuffled)
    a = fmt.encode_manifest(items)
    b = fmt.encode_manifest(shuffled)
    assert a == b
    assert fmt.digest_bytes(a) == fmt.digest_bytes(b)


def unpack(data: bytes) -> dict:  # type: ignore[type-arg]
    return msgpack.unpackb(data, raw=False, strict_map_key=False)  # type: ignore[no-any-return]


def paths_in_record(record: dict) -> list[str]:  # type: ignore[type-arg]
    """The entry paths of a manifest record, in stored order, in either 4.1 layout."""
    if "entries" in record:  # rows: [path, digest, size, ref]
        return [row[0] for row in record["entries"]]
    return record["paths"].split("\0") if record["count"] else []  # columns


@pure
@given(entry_lists)
def test_manifest_record_layout(items: list[Entry]) -> None:
    data = fmt.encode_manifest(items)
    record = unpack(data)
    assert list(record)[:2] == ["kind", "format"]
    assert record["kind"] == "manifest" and record["format"] == 1
    stored = paths_in_record(record)
    assert sorted(stored) == sorted(e.path for e in items)
    keys = [p.encode("utf-8") for p in stored]
    assert keys == sorted(keys)  # sorted by UTF-8 bytes
    for e in items:
        assert bytes.fromhex(e.digest) in data  # digests are stored as 16 raw bytes


def test_manifest_sort_is_by_utf8_bytes_not_code_points() -> None:
    # U+FF5E sorts before U+1F600 by code point and by UTF-8 bytes alike, but U+E000
    # (3 UTF-8 bytes, 0xEE...) sorts before U+FF5E (0xEF...): check an order where
    # UTF-16 and UTF-8 would disagree.
    d = fmt.Digest("00" * 16)
    items = [Entry("\U0001f600", d, 1), Entry("\uff5e", d, 1), Entry("\ue000", d, 1)]
    decoded = list(fmt.decode_manifest(fmt.encode_manifest(items), "t"))
    assert [e.path for e in decoded] == ["\ue000", "\uff5e", "\U0001f600"]


@pure
@given(entry_lists, st.data())
def test_truncated_manifest_is_refused(items: list[Entry], data: st.DataObject) -> None:
    encoded = fmt.encode_manifest(items)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(CorruptDataError):
        list(fmt.decode_manifest(encoded[:cut], "truncated"))


@pure
@given(st.sampled_from(["commit", "refs", "run", "seal", "MANIFEST", ""]))
def test_wrong_kind_is_refused(kind: str) -> None:
    data = msgpack.packb({"kind": kind, "format": 1, "entries": []}, use_bin_type=True)
    with pytest.raises(CorruptDataError) as info:
        fmt.decode_manifest(data, "some/file")
    assert not isinstance(info.value, UnknownFormatError)
    assert "some/file" in str(info.value)


@pure
@given(st.integers(min_value=2, max_value=2**31))
def test_newer_format_version_is_refused(version: int) -> None:
    data = msgpack.packb({"kind": "manifest", "format": version, "entries": []}, use_bin_type=True)
    with pytest.raises(UnknownFormatError) as info:
        fmt.decode_manifest(data, "manifests/ab/cd")
    assert str(version) in str(info.value)
    assert "manifests/ab/cd" in str(info.value)
    for kind in ("commit", "refs", "run"):
        raw = msgpack.packb({"kind": kind, "format": version}, use_bin_type=True)
        with pytest.raises(UnknownFormatError):
            fmt.decode(raw, kind, "x")


@pytest.mark.parametrize("version", [0, -1, None, "1", 1.0])
def test_invalid_format_version_is_corrupt(version: object) -> None:
    data = msgpack.packb({"kind": "manifest", "format": version, "entries": []}, use_bin_type=True)
    with pytest.raises(CorruptDataError):
        fmt.decode_manifest(data, "x")


def _manifest(**fields: object) -> bytes:
    return msgpack.packb({"kind": "manifest", "format": 1, **fields}, use_bin_type=True)


MALFORMED_MANIFESTS = {
    "empty": b"",
    "reserved-byte": b"\xc1",  # never used in msgpack
    "array": msgpack.packb([1, 2, 3]),
    "string": msgpack.packb("manifest"),
    "no-entries": _manifest(),
    "entries-not-a-list": _manifest(entries=5),
    "trailing-bytes": fmt.encode_manifest([]) + b"\x00",
}


@pytest.mark.parametrize("data", list(MALFORMED_MANIFESTS.values()), ids=list(MALFORMED_MANIFESTS))
def test_malformed_manifests_are_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptDataError):
        fmt.decode_manifest(data, "x")


SAMPLE = [
    Entry("a.txt", fmt.Digest("01" * 16), 3, None),
    Entry("b/c.bin", fmt.Digest("02" * 16), 5, None),
    Entry("ref.csv", fmt.Digest("03" * 16), None, "file:///data/ref.csv"),
]


def _mutations(record: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    """Damaged copies of a valid manifest record, for the layout the writer uses."""
    out = {}
    if "entries" in record:  # FORMAT.md 4.1 rows
        rows = record["entries"]
        for name, bad in {
            "short-row": rows[0][:2],
            "long-row": [*rows[0], "extra"],
            "row-is-a-string": "abcd",
            "digest-is-text": [rows[0][0], "notbin", 3, None],
            "digest-of-3-bytes": [rows[0][0], b"\x01" * 3, 3, None],
            "digest-of-17-bytes": [rows[0][0], b"\x01" * 17, 3, None],
            "path-not-text": [b"a.txt", rows[0][1], 3, None],
            "size-is-text": [rows[0][0], rows[0][1], "3", None],
        }.items():
            out[name] = dict(record, entries=[bad, *rows[1:]])
    else:  # FORMAT.md 4.1 columns
        out["count-too-high"] = dict(record, count=record["count"] + 1)
        out["count-too-low"] = dict(record, count=record["count"] - 1)
        out["digests-cut"] = dict(record, digests=record["digests"][:-1])
        out["digests-one-short"] = dict(record, digests=record["digests"][:-16])
        out["sizes-cut"] = dict(record, sizes=record["sizes"][:-1])
        out["sizes-one-short"] = dict(record, sizes=record["sizes"][:-8])
        out["paths-one-short"] = dict(record, paths=record["paths"].rsplit("\0", 1)[0])
        out["ref-index-out-of-range"] = dict(record, refs={99: "file:///x"})
        out["digests-as-text"] = dict(record, digests=record["digests"].hex())
    for key in record:
        if key not in ("kind", "format"):
            out[f"no-{key}"] = {k: v for k, v in record.items() if k != key}
            wrong = 5 if not isinstance(record[key], int) else "five"
            out[f"{key}-wrong-type"] = dict(record, **{key: wrong})
    return out


_SAMPLE_RECORD = unpack(fmt.encode_manifest(SAMPLE))
_MUTATIONS = _mutations(_SAMPLE_RECORD)


@pytest.mark.parametrize("damage", sorted(_MUTATIONS))
def test_damaged_manifest_records_are_corrupt(damage: str) -> None:
    assert fmt.decode_manifest(fmt.encode_manifest(SAMPLE), "ok") == SAMPLE
    data = msgpack.packb(_MUTATIONS[damage], use_bin_type=True)
    with pytest.raises(CorruptDataError):
        list(fmt.decode_manifest(data, "manifests/ab/cd"))


@pytest.mark.parametrize(
    "versions",
    [[["not-bin", 1.0]], [[b"\x01" * 16]], [5], [[b"\x01" * 16, "soon"]]],
    ids=["digest-is-text", "no-time", "not-a-pair", "time-is-text"],
)
def test_refs_with_malformed_versions_are_corrupt(versions: list[object]) -> None:
    data = msgpack.packb(
        {"kind": "refs", "format": 1, "name": "x", "type": "t", "generation": 1,
         "versions": versions, "aliases": {}},
        use_bin_type=True,
    )
    with pytest.raises(CorruptDataError):
        Refs.decode(data, "refs/x/000000000001")


GOOD_COMMIT = {
    "kind": "commit", "format": 1, "name": "x", "type": "t", "manifest": b"\x01" * 16,
    "parent": None, "description": None, "metadata": {}, "created": 0.0, "run": None,
    "base": None,
}


def test_commit_record_decodes(tmp_path: Path) -> None:
    store = Store.init(tmp_path / "s")
    digest = store._write_object("commits", msgpack.packb(GOOD_COMMIT, use_bin_type=True))
    commit = store.read_commit(digest)
    assert commit["manifest"] == "01" * 16
    assert commit["parent"] is None and commit["base"] is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("manifest", None), ("manifest", "not-bin"), ("parent", "not-bin"), ("base", 12)],
)
def test_commit_with_malformed_digests_is_corrupt(tmp_path: Path, key: str, value: object) -> None:
    store = Store.init(tmp_path / "s")
    record = dict(GOOD_COMMIT)
    if value is None:
        del record[key]
    else:
        record[key] = value
    digest = store._write_object("commits", msgpack.packb(record, use_bin_type=True))
    with pytest.raises(CorruptDataError):
        store.read_commit(digest)


def test_unknown_keys_in_a_known_record_are_ignored() -> None:
    record = unpack(fmt.encode_manifest(SAMPLE))
    record["future"] = {"x": 1}
    data = msgpack.packb(record, use_bin_type=True)
    assert list(fmt.decode_manifest(data, "x")) == SAMPLE


def test_digest_is_xxh3_128_lowercase_hex() -> None:
    assert fmt.digest_bytes(b"abc") == xxhash.xxh3_128_hexdigest(b"abc")
    assert fmt.digest_bytes(b"") == "99aa06d3014798d86001c324468d497f"
    assert fmt.from_bin(fmt.to_bin("00ff" * 8)) == "00ff" * 8


# -- refs ----------------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
aliases = names.filter(lambda a: not (a[0] == "v" and a[1:].isdigit() and len(a) > 1))
finite_times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)


@st.composite
def refs_states(draw: st.DrawFn) -> Refs:
    versions = draw(st.lists(st.none() | st.tuples(digests, finite_times), max_size=10))
    alias_map = {}
    if versions:
        alias_map = draw(
            st.dictionaries(aliases, st.integers(0, len(versions) - 1), max_size=6)
        )
    return Refs(
        name=draw(names),
        type=draw(names),
        generation=draw(st.integers(0, 2**40)),
        versions=[None if v is None else (fmt.Digest(v[0]), v[1]) for v in versions],
        aliases=alias_map,
    )


@pure
@given(refs_states())
def test_refs_round_trip(refs: Refs) -> None:
    data = refs.encode()
    back = Refs.decode(data, "refs/x/000000000001")
    assert back == refs
    assert back.encode() == data  # canonical: aliases are written sorted
    record = msgpack.unpackb(data, raw=False)
    assert record["kind"] == "refs" and record["format"] == 1
    assert list(record["aliases"]) == sorted(record["aliases"])


@pure
@given(refs_states(), st.data())
def test_truncated_refs_are_refused(refs: Refs, data: st.DataObject) -> None:
    encoded = refs.encode()
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(CorruptDataError):
        Refs.decode(encoded[:cut], "refs/x/1")


def test_refs_of_wrong_kind_or_newer_format_are_refused() -> None:
    manifest = fmt.encode_manifest([])
    with pytest.raises(CorruptDataError):
        Refs.decode(manifest, "refs/x/1")
    newer = msgpack.packb(
        {"kind": "refs", "format": 2, "name": "x", "type": "t", "generation": 1,
         "versions": [], "aliases": {}},
        use_bin_type=True,
    )
    with pytest.raises(UnknownFormatError):
        Refs.decode(newer, "refs/x/1")
    malformed = msgpack.packb({"kind": "refs", "format": 1, "name": "x"}, use_bin_type=True)
    with pytest.raises(CorruptDataError):
        Refs.decode(malformed, "refs/x/1")


# -- the store marker ------------------------------------------------------------------------------


def _marker(path: Path, **fields: object) -> None:
    path.mkdir(parents=True, exist_ok=True)
    marker = {"format": "artstore-store", "version": 1, "id": "0" * 32, "created": 0.0,
              "shared": False}
    marker.update(fields)
    (path / "artstore.json").write_text(json.dumps(marker))


def test_store_marker_with_unknown_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future-store"
    _marker(path, version=99)
    with pytest.raises(UnknownFormatError) as info:
        Store(path).artifact_names()
    message = str(info.value)
    assert "99" in message  # the version found
    assert "1" in message.replace("99", "")  # and the one supported
    with pytest.raises(UnknownFormatError):
        Store(path).artifact("anything")
    # Writing is refused too, and the marker is left alone.
    f = tmp_path / "f.txt"
    f.write_text("x")
    from artstore import Artifact

    art = Artifact("x", "dataset")
    art.add_file(f)
    with pytest.raises(UnknownFormatError):
        art.save(path)
    assert json.loads((path / "artstore.json").read_text())["version"] == 99
    assert not (path / "refs").exists()


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        json.dumps([1, 2]),
        json.dumps({"format": "something-else", "version": 1}),
        json.dumps({"version": 1}),
    ],
)
def test_store_marker_that_is_not_ours_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "s"
    path.mkdir()
    (path / "artstore.json").write_text(content)
    with pytest.raises(CorruptDataError):
        Store(path).artifact_names()


def test_store_marker_written_by_init(tmp_path: Path) -> None:
    s = Store.init(tmp_path / "s")
    marker = json.loads((tmp_path / "s" / "artstore.json").read_text())
    assert marker["format"] == "artstore-store"
    assert marker["version"] == fmt.STORE_VERSION == 1
    assert set(marker) >= {"format", "version", "id", "created", "shared"}
    assert s.exists()
    assert s.artifact_names() == []


# -- entry paths --------------------------------------------------------------------------------

path_alphabet = st.sampled_from(["a", "b", ".", "..", "/", "\\", "\x00", " ", "é", "\n"])
raw_paths = st.lists(path_alphabet, max_size=12).map("".join) | st.text(max_size=20)


@pure
@given(raw_paths)
def test_check_path_accepts_only_contained_relative_paths(path: str) -> None:
    try:
        accepted = check_path(path)
    except InvalidNameError:
        return
    assert accepted == path
    assert path
    assert not path.startswith("/")
    parts = path.split("/")
    assert ".." not in parts
    assert "." not in parts
    assert "" not in parts
    assert "\\" not in path and "\x00" not in path
    # Joined under any root, the path stays under it.
    root = "/some/root"
    assert os.path.normpath(os.path.join(root, path)).startswith(root + "/")


@pure
@given(st.lists(component, min_size=1, max_size=5).map("/".join))
def test_check_path_accepts_every_valid_path(path: str) -> None:
    assert check_path(path) == path


@pure
@given(raw_paths)
def test_normalize_path_output_is_always_valid(path: str) -> None:
    try:
        normalized = normalize_path(path)
    except InvalidNameError:
        return
    assert check_path(normalized) == normalized
    assert ".." not in normalized.split("/")
    # '..' is never resolved away: a path with a '..' component is refused, not rewritten.
    assert ".." not in path.split("/")


@pytest.mark.parametrize(
    ("given_path", "expected"),
    [("./a", "a"), ("a//b", "a/b"), ("a/./b/", "a/b"), ("a", "a"), ("././x/", "x")],
)
def test_normalize_path_folds_dots_and_slashes(given_path: str, expected: str) -> None:
    assert normalize_path(given_path) == expected


@pytest.mark.parametrize("bad", ["", ".", "./", "/", "/a", "a/../b", "..", "a\\b", "a\x00"])
def test_normalize_path_refuses(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        normalize_path(bad)
