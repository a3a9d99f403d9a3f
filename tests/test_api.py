"""The Python API: logging, versions, aliases, contents, downloads, drafts and runs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from conftest import h, read_tree, write_tree

import artstore
from artstore import (
    Artifact,
    ArtifactNotFoundError,
    ArtifactStateError,
    ConflictError,
    CorruptDataError,
    Entry,
    InvalidInputError,
    InvalidNameError,
    NotFoundError,
    Store,
    TypeMismatchError,
    VerificationError,
    VersionNotFoundError,
)
from artstore import _format as fmt

MakeTree = Callable[..., Path]


def log_tree(
    store: Store,
    name: str,
    files: dict[str, bytes | str],
    src: Path,
    type_: str = "dataset",
    aliases: list[str] | None = None,
    **kwargs: object,
) -> Artifact:
    """Write ``files`` into ``src`` and log that directory as a version of ``name``."""
    write_tree(src, files)
    art = Artifact(name, type_, **kwargs)  # type: ignore[arg-type]
    art.add_dir(src)
    with artstore.init(project="tests", store=store) as run:
        return run.log_artifact(art, aliases=aliases or [])


def digests(art: Artifact) -> dict[str, str]:
    return {e.path: e.digest for e in art.files()}


# -- logging and versions -------------------------------------------------------------


def test_log_artifact_numbers_versions_from_v0(store: Store, tmp_path: Path) -> None:
    v0 = log_tree(store, "ds", {"a.txt": "one"}, tmp_path / "s0")
    v1 = log_tree(store, "ds", {"a.txt": "two"}, tmp_path / "s1")
    assert (v0.version, v1.version) == ("v0", "v1")
    assert v0.qualified_name == "ds:v0"
    assert v1.qualified_name == "ds:v1"
    assert v0.is_logged and not v0.is_draft()
    assert v0.id != v1.id and v0.digest != v1.digest
    assert [a.version for a in store.versions("ds")] == ["v0", "v1"]
    assert store.artifact_names() == ["ds"]


def test_save_without_run_logs_into_given_store(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    f = tmp_path / "f.bin"
    f.write_bytes(b"\x00\x01payload")
    art = Artifact("model", "model", description="weights", metadata={"lr": 0.1})
    art.add_file(f)
    returned = art.save(other)
    assert returned is art
    assert art.version == "v0"
    assert (other / "artstore.json").is_file()
    again = Store(other).artifact("model:v0")
    assert again.type == "model"
    assert again.description == "weights"
    assert again.metadata == {"lr": 0.1}
    assert again.get_entry("f.bin").digest == h(b"\x00\x01payload")
    assert again.logged_by() is None
    # The default store (ARTSTORE_DIR) was not written.
    assert Store().artifact_names() == []


def test_save_without_store_uses_artstore_dir(store_path: Path, tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("x")
    art = Artifact("thing", "dataset")
    art.add_file(f)
    art.save()
    assert (store_path / "artstore.json").is_file()
    assert Store(store_path).artifact("thing").version == "v0"


def test_same_content_relogged_makes_no_new_version_but_merges_aliases(
    store: Store, tmp_path: Path
) -> None:
    v0 = log_tree(store, "ds", {"a.txt": "same", "d/b": "b"}, tmp_path / "s0", aliases=["first"])
    again = log_tree(
        store, "ds", {"a.txt": "same", "d/b": "b"}, tmp_path / "s1", aliases=["second"]
    )
    assert again.version == "v0"
    assert again.id == v0.id
    assert [a.version for a in store.versions("ds")] == ["v0"]
    assert set(store.artifact("ds:v0").aliases) == {"first", "second", "latest"}
    assert store.artifact("ds:second").version == "v0"


def test_content_equal_to_an_older_version_is_a_new_version(store: Store, tmp_path: Path) -> None:
    # Only the latest version is compared: A, B, A gives three versions.
    log_tree(store, "ds", {"a": "A"}, tmp_path / "s0")
    log_tree(store, "ds", {"a": "B"}, tmp_path / "s1")
    v2 = log_tree(store, "ds", {"a": "A"}, tmp_path / "s2")
    assert v2.version == "v2"
    assert v2.digest == store.artifact("ds:v0").digest


def test_latest_always_names_the_newest_version(store: Store, tmp_path: Path) -> None:
    for i in range(3):
        art = log_tree(store, "ds", {"a": f"content {i}"}, tmp_path / f"s{i}")
        assert art.version == f"v{i}"
        assert "latest" in art.aliases
        assert store.artifact("ds:latest").version == f"v{i}"
        assert store.artifact("ds").version == f"v{i}"
        for older in range(i):
            assert "latest" not in store.artifact(f"ds:v{older}").aliases


def test_log_artifact_accepts_a_single_alias_string(store: Store, tmp_path: Path) -> None:
    art = log_tree(store, "ds", {"a": "1"}, tmp_path / "s0", aliases=None)
    f = tmp_path / "b"
    f.write_text("2")
    art2 = Artifact("ds", "dataset")
    art2.add_file(f)
    with artstore.init(store=store) as run:
        run.log_artifact(art2, aliases="prod")
    assert art.version == "v0"
    assert store.artifact("ds:prod").version == "v1"
    assert sorted(store.artifact("ds:v1").aliases) == ["latest", "prod"]


# -- aliases ----------------------------------------------------------------------------


def test_add_move_and_remove_aliases(store: Store, tmp_path: Path) -> None:
    log_tree(store, "ds", {"a": "1"}, tmp_path / "s0")
    log_tree(store, "ds", {"a": "2"}, tmp_path / "s1")
    got = store.add_alias("ds:v0", "best")
    assert got.version == "v0"
    assert "best" in got.aliases
    assert store.artifact("ds:best").version == "v0"

    store.add_alias("ds:v1", "best")  # moves it
    assert store.artifact("ds:best").version == "v1"
    assert "best" not in store.artifact("ds:v0").aliases
    assert sorted(store.artifact("ds:v1").aliases) == ["best", "latest"]

    store.add_alias("ds:latest", "prod")  # by alias
    assert store.artifact("ds:prod").version == "v1"

    store.remove_alias("ds", "best")
    with pytest.raises(VersionNotFoundError):
        store.artifact("ds:best")
    assert sorted(store.artifact("ds:v1").aliases) == ["latest", "prod"]
    with pytest.raises(VersionNotFoundError):
        store.remove_alias("ds", "best")


def test_latest_cannot_be_set_or_removed(store: Store, tmp_path: Path) -> None:
    log_tree(store, "ds", {"a": "1"}, tmp_path / "s0")
    log_tree(store, "ds", {"a": "2"}, tmp_path / "s1")
    with pytest.raises(InvalidInputError):
        store.add_alias("ds:v0", "latest")
    with pytest.raises(InvalidInputError):
        store.remove_alias("ds", "latest")
    assert store.artifact("ds:latest").version == "v1"


@pytest.mark.parametrize("bad", ["v3", "v0", "v123", "", ".hidden", "-x", "a b", "a/b", "a:b"])
def test_version_like_and_malformed_aliases_are_refused(
    store: Store, tmp_path: Path, bad: str
) -> None:
    log_tree(store, "ds", {"a": "1"}, tmp_path / "s0")
    with pytest.raises(InvalidNameError):
        store.add_alias("ds:v0", bad)
    f = tmp_path / "b"
    f.write_text("2")
    art = Artifact("ds", "dataset")
    art.add_file(f)
    with pytest.raises(InvalidNameError), artstore.init(store=store) as run:
        run.log_artifact(art, aliases=[bad])
    # Nothing was committed by the refused log.
    assert [a.version for a in store.versions("ds")] == ["v0"]


def test_aliases_changed_on_a_logged_version_with_save(store: Store, tmp_path: Path) -> None:
    art = log_tree(store, "ds", {"a": "1"}, tmp_path / "s0", aliases=["old"])
    art.aliases = ["new", "latest"]
    art.save()
    assert sorted(art.aliases) == ["latest", "new"]
    assert sorted(store.artifact("ds:v0").aliases) == ["latest", "new"]
    with pytest.raises(VersionNotFoundError):
        store.artifact("ds:old")


def test_alias_on_unknown_artifact_or_version(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFoundError):
        store.add_alias("nothing:v0", "x")
    log_tree(store, "ds", {"a": "1"}, tmp_path / "s0")
    with pytest.raises(VersionNotFoundError):
        store.add_alias("ds:v7", "x")
    with pytest.raises(ArtifactNotFoundError):
        store.remove_alias("nothing", "x")


# -- immutability of logged versions -----------------------------------------------------


def test_logged_version_metadata_and_description_are_immutable(
    store: Store, tmp_path: Path
) -> None:
    art = log_tree(
        store, "ds", {"a": "1"}, tmp_path / "s0", description="first", metadata={"k": [1, 2]}
    )
    with pytest.raises(ArtifactStateError):
        art.metadata = {"k": "changed"}
    with pytest.raises(ArtifactStateError):
        art.description = "changed"
    copy = art.metadata
    copy["k"].append(3)
    assert art.metadata == {"k": [1, 2]}
    with pytest.raises(ArtifactStateError):
        art.add_file(tmp_path / "s0" / "a")
    with pytest.raises(ArtifactStateError):
        art.remove("a")
    with pytest.raises(ArtifactStateError), artstore.init(store=store) as run:
        run.log_artifact(art)
    fresh = store.artifact("ds:v0")
    assert fresh.metadata == {"k": [1, 2]}
    assert fresh.description == "first"


def test_relogging_same_content_with_other_metadata_keeps_the_version(
    store: Store, tmp_path: Path
) -> None:
    log_tree(store, "ds", {"a": "1"}, tmp_path / "s0", description="d0", metadata={"n": 0})
    again = log_tree(
        store, "ds", {"a": "1"}, tmp_path / "s1", description="d1", metadata={"n": 1}
    )
    assert again.version == "v0"
    assert [a.version for a in store.versions("ds")] == ["v0"]
    stored = store.artifact("ds:v0")
    assert stored.metadata == {"n": 0}
    assert stored.description == "d0"


def test_metadata_must_be_json_compatible() -> None:
    with pytest.raises(InvalidInputError):
        Artifact("ds", "dataset", metadata={"x": float("nan")})
    with pytest.raises(InvalidInputError):
        Artifact("ds", "dataset", metadata={"x": {1: "int key"}})
    with pytest.raises(InvalidInputError):
        Artifact("ds", "dataset", metadata={"x": object()})
    art = Artifact("ds", "dataset", metadata={"t": (1, 2), "n": None, "b": True})
    assert art.metadata == {"t": [1, 2], "n": None, "b": True}


def test_type_mismatch_on_existing_name(store: Store, tmp_path: Path) -> None:
    log_tree(store, "ds", {"a": "1"}, tmp_path / "s0", type_="dataset")
    with pytest.raises(TypeMismatchError) as info:
        log_tree(store, "ds", {"a": "2"}, tmp_path / "s1", type_="model")
    assert isinstance(info.value, ConflictError)
    assert "dataset" in str(info.value)
    # Same content, other type: still refused, not silently merged.
    with pytest.raises(TypeMismatchError):
        log_tree(store, "ds", {"a": "1"}, tmp_path / "s2", type_="model")
    assert [a.version for a in store.versions("ds")] == ["v0"]
    assert store.artifact("ds").type == "dataset"


@pytest.mark.parametrize("bad", ["", ".x", "-x", "a b", "a/b", "x" * 129, "é"])
def test_invalid_artifact_names_and_types(bad: str) -> None:
    with pytest.raises(InvalidNameError):
        Artifact(bad, "dataset")
    if bad not in (".x", "-x"):  # types may start with '.' or '-'
        with pytest.raises(InvalidNameError):
            Artifact("ok", bad if bad != "x" * 129 else "x" * 65)


# -- building contents ---------------------------------------------------------------------


def test_add_file_default_and_explicit_names(store: Store, tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"W" * 1000)
    art = Artifact("m", "model")
    art.add_file(f)
    art.add_file(f, name="copies/second.bin")
    art.add_file(f, name="./copies//third.bin")  # normalized
    assert sorted(art.manifest) == ["copies/second.bin", "copies/third.bin", "weights.bin"]
    art.save(store)
    e = art.get_entry("weights.bin")
    assert e == Entry("weights.bin", h(b"W" * 1000), 1000, None)
    assert not e.is_reference
    assert art.size == 3000


def test_add_file_refuses_missing_and_non_regular(tmp_path: Path) -> None:
    art = Artifact("m", "model")
    with pytest.raises(InvalidInputError):
        art.add_file(tmp_path / "nope")
    with pytest.raises(InvalidInputError):
        art.add_file(tmp_path)
    with pytest.raises(InvalidInputError):
        art.add_dir(tmp_path / "nope")


def test_add_file_twice_needs_overwrite(tmp_path: Path) -> None:
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.write_text("a")
    b.write_text("b")
    art = Artifact("m", "model")
    art.add_file(a, name="x")
    art.add_file(a, name="x")  # the same source again is fine
    with pytest.raises(ConflictError) as info:
        art.add_file(b, name="x")
    assert info.value.paths == ["x"]
    art.add_file(b, name="x", overwrite=True)
    assert art.get_entry("x").digest == h(b"b")


def test_add_dir_nested_and_with_prefix(store: Store, make_tree: MakeTree) -> None:
    files = {
        "top.txt": "top",
        "a/one.txt": "1",
        "a/b/two.txt": "2",
        "a/b/c/d/deep.bin": bytes(range(256)),
        "empty.dat": b"",
    }
    src = make_tree(files)
    (src / "empty-dir").mkdir()
    art = Artifact("tree", "dataset")
    art.add_dir(src)
    art.add_dir(src / "a", name="prefix/x")
    art.save(store)
    expected = set(files) | {"prefix/x/one.txt", "prefix/x/b/two.txt", "prefix/x/b/c/d/deep.bin"}
    assert set(art.manifest) == expected
    assert art.get_entry("a/b/c/d/deep.bin").digest == h(bytes(range(256)))
    assert art.get_entry("empty.dat").size == 0
    assert art.get_entry("prefix/x/b/two.txt").digest == h(b"2")
    assert [e.path for e in art.files()] == sorted(expected)


def test_add_dir_reads_contents_at_log_time(store: Store, make_tree: MakeTree) -> None:
    src = make_tree({"a.txt": "before"})
    art = Artifact("late", "dataset")
    art.add_dir(src)
    (src / "a.txt").write_text("after!")
    art.save(store)
    assert art.get_entry("a.txt").digest == h(b"after!")


def test_new_file(store: Store, tmp_path: Path) -> None:
    art = Artifact("gen", "dataset")
    with art.new_file("config/params.json") as f:
        f.write('{"a": 1}')
    with art.new_file("raw.bin", mode="xb") as f:
        f.write(b"\xff\x00")
    with pytest.raises(ConflictError), art.new_file("raw.bin", mode="xb") as f:
        f.write(b"again")
    art.save(store)
    assert art.get_entry("config/params.json").digest == h(b'{"a": 1}')
    assert art.get_entry("raw.bin").digest == h(b"\xff\x00")
    out = Path(art.download(tmp_path / "out"))
    assert (out / "config" / "params.json").read_bytes() == b'{"a": 1}'
    assert (out / "raw.bin").read_bytes() == b"\xff\x00"


def test_add_reference_file_with_checksum(store: Store, tmp_path: Path) -> None:
    data = tmp_path / "ext" / "train.csv"
    data.parent.mkdir()
    data.write_bytes(b"x,y\n1,2\n")
    art = Artifact("refs", "dataset")
    art.add_reference(data.as_uri())
    art.save(store)
    e = art.get_entry("train.csv")
    assert e.is_reference
    assert e.ref is not None and e.ref.startswith("file://")
    assert e.digest == h(b"x,y\n1,2\n")
    assert e.size == 8
    # No blob is stored for a reference.
    assert not (store.path / "blobs" / e.digest[:2] / e.digest[2:]).exists()
    out = Path(art.download(tmp_path / "out"))
    assert (out / "train.csv").read_bytes() == b"x,y\n1,2\n"
    art.verify(out)


def test_reference_changed_after_logging_is_refused_on_download(
    store: Store, tmp_path: Path
) -> None:
    data = tmp_path / "ext.bin"
    data.write_bytes(b"original")
    art = Artifact("refs", "dataset")
    art.add_reference(data.as_uri(), name="data/ext.bin")
    art.save(store)
    data.write_bytes(b"tampered")  # same size, other bytes
    out = tmp_path / "out"
    with pytest.raises(CorruptDataError):
        art.download(out)
    assert not (out / "data" / "ext.bin").exists()
    assert [p for p in read_tree(out)] == []  # no temp file left behind either


def test_add_reference_without_checksum(store: Store, tmp_path: Path) -> None:
    data = tmp_path / "big.bin"
    data.write_bytes(b"bytes that are not hashed")
    art = Artifact("refs", "dataset")
    art.add_reference(data.as_uri(), name="big.bin", checksum=False)
    art.add_reference("s3://bucket/path/obj.parquet", checksum=False)
    with pytest.raises(InvalidInputError):
        art.add_reference("s3://bucket/other", checksum=True)
    with pytest.raises(InvalidInputError):
        art.add_reference(str(data))  # no scheme
    art.save(store)
    e = art.get_entry("big.bin")
    assert e.size is None
    assert e.ref is not None
    assert e.digest == h(e.ref.encode())
    s3 = art.get_entry("obj.parquet")
    assert s3.ref == "s3://bucket/path/obj.parquet"
    assert s3.digest == h(b"s3://bucket/path/obj.parquet")
    assert s3.size is None
    # The digest of an unchecksummed reference does not depend on the bytes.
    data.write_bytes(b"changed bytes, same uri")
    art2 = Artifact("refs", "dataset")
    art2.add_reference(data.as_uri(), name="big.bin", checksum=False)
    art2.add_reference("s3://bucket/path/obj.parquet", checksum=False)
    art2.save(store)
    assert art2.version == "v0"


def test_add_reference_to_a_directory(
    store: Store, make_tree: MakeTree, tmp_path: Path
) -> None:
    src = make_tree({"a.txt": "a", "sub/b.txt": "bb"})
    art = Artifact("refdir", "dataset")
    art.add_reference(src.as_uri(), name="ext")
    art.save(store)
    assert sorted(art.manifest) == ["ext/a.txt", "ext/sub/b.txt"]
    assert art.get_entry("ext/sub/b.txt").size == 2
    assert all(e.is_reference for e in art.files())
    out = Path(art.download(tmp_path / "out"))
    assert read_tree(out) == {"ext/a.txt": b"a", "ext/sub/b.txt": b"bb"}


def test_remove_file_and_directory_prefix(store: Store, make_tree: MakeTree) -> None:
    src = make_tree({"keep.txt": "k", "d/x": "x", "d/sub/y": "y", "dd/z": "z"})
    art = Artifact("rm", "dataset")
    art.add_dir(src)
    art.remove("keep.txt")
    art.remove("d")  # a directory prefix: d/x and d/sub/y, but not dd/z
    assert sorted(art.manifest) == ["dd/z"]
    with pytest.raises(NotFoundError):
        art.remove("d")
    with pytest.raises(KeyError):
        art.remove("nothing/here")
    art.save(store)
    assert sorted(store.artifact("rm").manifest) == ["dd/z"]


def test_get_entry(store: Store, make_tree: MakeTree) -> None:
    src = make_tree({"a/b.txt": "hello"})
    art = Artifact("ge", "dataset")
    art.add_dir(src)
    assert art.get_entry("a/b.txt").digest == h(b"hello")  # on a draft
    art.save(store)
    e = store.artifact("ge:v0").get_entry("a/b.txt")
    assert (e.path, e.digest, e.size, e.ref) == ("a/b.txt", h(b"hello"), 5, None)
    with pytest.raises(NotFoundError):
        art.get_entry("a")  # a directory is not an entry
    with pytest.raises(KeyError):
        art.get_entry("missing")
    with pytest.raises(InvalidNameError):
        art.get_entry("../a/b.txt")


BAD_NAMES = [
    "/abs/path",
    "/",
    "..",
    "../escape",
    "a/../../escape",
    "a/..",
    "back\\slash",
    "..\\escape",
    "nul\x00byte",
    "",
]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_entry_names_are_refused_when_added(tmp_path: Path, bad: str) -> None:
    f = tmp_path / "f"
    f.write_text("f")
    d = write_tree(tmp_path / "d", {"x": "x"})
    art = Artifact("names", "dataset")
    with pytest.raises(InvalidNameError):
        art.add_file(f, name=bad)
    if bad:  # an empty name for add_dir means "no prefix"
        with pytest.raises(InvalidNameError):
            art.add_dir(d, name=bad)
        with pytest.raises(InvalidNameError):
            art.add_reference(f.as_uri(), name=bad)
    with pytest.raises(InvalidNameError), art.new_file(bad) as fh:
        fh.write("x")
    assert art.manifest == {}


def test_add_dir_refuses_a_file_name_with_a_backslash(tmp_path: Path) -> None:
    # On POSIX a backslash is an ordinary file-name character, but FORMAT.md section 5
    # forbids it in entry paths: add_dir must refuse such a file when it is added
    # (otherwise the version logs, and then no download of it can succeed).
    d = write_tree(tmp_path / "d", {"ok.txt": "ok", "bad\\name.txt": "bad"})
    art = Artifact("names", "dataset")
    with pytest.raises(InvalidNameError):
        art.add_dir(d)


def test_file_names_that_look_odd_but_are_valid(store: Store, tmp_path: Path) -> None:
    files = {
        "spaces in name.txt": "s",
        "ünïcödé/日本語.txt": "u",
        "...three-dots": "d",
        ".hidden": "h",
        "a..b": "ab",
        "new\nline": "n",
    }
    src = write_tree(tmp_path / "src", files)
    art = Artifact("odd", "dataset")
    art.add_dir(src)
    art.save(store)
    assert set(art.manifest) == set(files)
    out = Path(art.download(tmp_path / "out"))
    assert read_tree(out) == {k: v.encode() for k, v in files.items()}


def test_file_and_directory_with_one_name_conflict_at_log_time(
    store: Store, tmp_path: Path
) -> None:
    f = tmp_path / "f"
    f.write_text("f")
    art = Artifact("clash", "dataset")
    art.add_file(f, name="a")
    art.add_file(f, name="a/b")
    with pytest.raises(ConflictError) as info:
        art.save(store)
    assert set(info.value.paths) == {"a", "a/b"}
    assert store.artifact_names() == []


# -- download, checkout, verify ----------------------------------------------------------------


FILES = {
    "README": "read me\n",
    "data/train.csv": "a,b\n" * 500,
    "data/nested/deep/blob.bin": bytes(range(256)) * 64,
    "empty": b"",
}


def test_download_default_root_is_artifacts_name_version(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_tree(store, "ds", FILES, tmp_path / "src")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    root = store.artifact("ds:v0").download()
    assert Path(root) == Path("artifacts") / "ds-v0"
    expected = {k: (v.encode() if isinstance(v, str) else v) for k, v in FILES.items()}
    assert read_tree(work / "artifacts" / "ds-v0") == expected


def test_download_contents_are_byte_identical(store: Store, tmp_path: Path) -> None:
    big = os.urandom(3 * 1024 * 1024 + 17)  # above the small-file threshold: streamed
    files = dict(FILES, **{"big/random.bin": big})
    src = tmp_path / "src"
    log_tree(store, "ds", files, src)
    out = Path(store.artifact("ds").download(tmp_path / "out"))
    assert read_tree(out) == read_tree(src)
    assert (out / "big" / "random.bin").read_bytes() == big
    store.artifact("ds").verify(out)
    # Downloading again over an identical tree is fine and changes nothing.
    store.artifact("ds").download(out)
    assert read_tree(out) == read_tree(src)


def test_download_overwrites_changed_files(store: Store, tmp_path: Path) -> None:
    log_tree(store, "ds", {"a.txt": "good", "b.txt": "bee"}, tmp_path / "src")
    out = tmp_path / "out"
    write_tree(out, {"a.txt": "local edit that is longer", "b.txt": "BEE"})
    store.artifact("ds").download(out)
    assert read_tree(out) == {"a.txt": b"good", "b.txt": b"bee"}


def test_download_path_prefix(store: Store, tmp_path: Path) -> None:
    log_tree(store, "ds", FILES, tmp_path / "src")
    out = Path(store.artifact("ds").download(tmp_path / "out", path_prefix="data/"))
    assert sorted(read_tree(out)) == ["data/nested/deep/blob.bin", "data/train.csv"]


@pytest.mark.parametrize("mode", ["hardlink", "symlink", "auto"])
def test_download_link_modes_give_the_same_bytes(
    store: Store, tmp_path: Path, mode: str
) -> None:
    src = tmp_path / "src"
    log_tree(store, "ds", FILES, src)
    out = Path(store.artifact("ds").download(tmp_path / "out", mode=mode))
    for rel, content in read_tree(src).items():
        assert (out / rel).read_bytes() == content
    store.artifact("ds").verify(out)


def test_checkout_removes_extra_files(store: Store, tmp_path: Path) -> None:
    log_tree(store, "ds", FILES, tmp_path / "src")
    out = tmp_path / "out"
    write_tree(
        out,
        {
            "extra.txt": "x",
            "data/extra.csv": "x",
            "junk/deeper/file": "x",
            "README": "stale",
        },
    )
    root = store.artifact("ds").checkout(out)
    assert Path(root) == out
    expected = {k: (v.encode() if isinstance(v, str) else v) for k, v in FILES.items()}
    assert read_tree(out) == expected
    assert not (out / "junk").exists()
    store.artifact("ds").verify(out)


def test_checkout_replaces_a_file_where_the_version_has_a_directory(
    store: Store, tmp_path: Path
) -> None:
    log_tree(store, "ds", {"d/inner.txt": "in"}, tmp_path / "src")
    out = write_tree(tmp_path / "out", {"d": "i am a file"})
    store.artifact("ds").checkout(out)
    assert read_tree(out) == {"d/inner.txt": b"in"}


def test_verify_passes_and_detects_modified_missing_extra(store: Store, tmp_path: Path) -> None:
    log_tree(store, "ds", FILES, tmp_path / "src")
    art = store.artifact("ds:v0")

    out = Path(art.download(tmp_path / "ok"))
    art.verify(out)  # no exception

    modified = Path(art.download(tmp_path / "modified"))
    (modified / "data" / "train.csv").write_text("a,b\n" * 499 + "a,c\n")  # same size
    with pytest.raises(VerificationError) as info:
        art.verify(modified)
    assert [p for p, _ in info.value.differences] == ["data/train.csv"]
    assert isinstance(info.value, ValueError)

    resized = Path(art.download(tmp_path / "resized"))
    (resized / "README").write_text("longer than before\n")
    with pytest.raises(VerificationError) as info:
        art.verify(resized)
    assert [p for p, _ in info.value.differences] == ["README"]

    missing = Path(art.download(tmp_path / "missing"))
    (missing / "data" / "nested" / "deep" / "blob.bin").unlink()
    with pytest.raises(VerificationError) as info:
        art.verify(missing)
    assert info.value.differences == [("data/nested/deep/blob.bin", "missing")]

    extra = Path(art.download(tmp_path / "extra"))
    (extra / "data" / "surprise.txt").write_text("!")
    with pytest.raises(VerificationError) as info:
        art.verify(extra)
    assert [p for p, _ in info.value.differences] == ["data/surprise.txt"]

    with pytest.raises(VerificationError):
        art.verify(tmp_path / "does-not-exist")


def test_file_of_a_single_file_artifact(store: Store, tmp_path: Path) -> None:
    f = tmp_path / "model.pt"
    f.write_bytes(b"weights")
    art = Artifact("one", "model")
    art.add_file(f)
    art.save(store)
    path = store.artifact("one").file(tmp_path / "dl")
    assert Path(path) == tmp_path / "dl" / "model.pt"
    assert Path(path).read_bytes() == b"weights"


def test_draft_cannot_be_downloaded_or_verified(tmp_path: Path) -> None:
    art = Artifact("d", "dataset")
    with pytest.raises(ArtifactStateError):
        art.download(tmp_path / "x")
    with pytest.raises(ArtifactStateError):
        art.verify(tmp_path)
    with pytest.raises(ArtifactStateError):
        art.new_draft()
    assert art.version is None
    assert art.id is None


def test_download_refuses_a_damaged_or_missing_blob(store: Store, tmp_path: Path) -> None:
    log_tree(store, "ds", {"good.txt": "good", "bad.txt": "original"}, tmp_path / "src")
    art = store.artifact("ds")
    blob = store.path / "blobs" / h(b"original")[:2] / h(b"original")[2:]
    blob.chmod(0o644)
    blob.write_bytes(b"ORIGINAL")  # same size, other bytes
    out = tmp_path / "out"
    with pytest.raises(CorruptDataError):
        art.download(out)
    assert not (out / "bad.txt").exists()
    assert all(not p.name.endswith(".tmp") for p in out.rglob("*"))

    if blob.exists():
        blob.unlink()
    for mode in ("copy", "hardlink", "symlink"):
        with pytest.raises(artstore.ObjectNotFoundError, match="bad.txt"):
            store.artifact("ds").download(tmp_path / f"out-{mode}", mode=mode)
        assert not os.path.lexists(tmp_path / f"out-{mode}" / "bad.txt")


def test_download_replaces_a_different_file_and_keeps_an_equal_one(
    store: Store, tmp_path: Path
) -> None:
    log_tree(store, "ds", {"a.txt": "version a", "b.txt": "version b"}, tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("stale and longer content")
    (out / "b.txt").write_text("version b")
    before = os.stat(out / "b.txt").st_ino
    store.artifact("ds").download(out)
    assert (out / "a.txt").read_text() == "version a"
    assert os.stat(out / "b.txt").st_ino == before  # equal bytes: left alone
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "b.txt"]


# -- download refuses to write outside its root -----------------------------------------------


def _commit_raw(store: Store, name: str, entries: list[Entry]) -> Artifact:
    """Commit ``entries`` as a version of ``name``, bypassing every add-time check.

    Entry, encode_manifest and Store.commit_version do not check paths; should a later
    artstore refuse to write such a manifest, forge the records by hand (FORMAT.md 4).
    """
    try:
        store.commit_version(name, "dataset", entries)
    except InvalidNameError:
        rows = sorted(
            ([e.path, bytes.fromhex(e.digest), e.size, e.ref] for e in entries),
            key=lambda row: row[0].encode(),
        )
        manifest = store._write_object(
            "manifests", msgpack.packb({"kind": "manifest", "format": 1, "entries": rows})
        )
        commit = store._write_object(
            "commits",
            msgpack.packb(
                {"kind": "commit", "format": 1, "name": name, "type": "dataset",
                 "manifest": bytes.fromhex(manifest), "parent": None, "description": None,
                 "metadata": {}, "created": time.time(), "run": None, "base": None},
                use_bin_type=True,
            ),
        )

        def change(refs):  # type: ignore[no-untyped-def]
            refs.versions.append((commit, time.time()))
            return refs

        store.update_refs(name, "dataset", change)
    return store.artifact(name)


@pytest.mark.parametrize(
    "evil", ["../evil", "a/../../evil", "/tmp-abs-evil", "ok/../../evil", "..\\evil"]
)
def test_download_refuses_escaping_manifest_entries(
    store: Store, tmp_path: Path, evil: str
) -> None:
    payload = b"should never be written"
    # A blob the entry can point at, so only the path check can stop the write.
    ing = store.ingest()
    digest = ing.add_bytes(payload)
    ing.finish()
    entries = [Entry(evil, digest, len(payload)), Entry("fine.txt", digest, len(payload))]
    art = _commit_raw(store, "evil", entries)
    assert evil in art.manifest

    sandbox = tmp_path / "sandbox"
    root = sandbox / "inner" / "root"
    root.mkdir(parents=True)
    before = set(os.listdir(tmp_path))
    for attempt in (art.download, art.checkout):
        with pytest.raises(InvalidNameError):
            attempt(root)
        assert set(os.listdir(tmp_path)) == before
        written = read_tree(sandbox)
        # Nothing outside the root; inside it, at most the valid entry.
        assert set(written) <= {"inner/root/fine.txt"}
        assert all(content == payload for content in written.values())
        assert not Path("/tmp-abs-evil").exists()


def test_download_refuses_a_symlinked_subdirectory_leading_outside(
    store: Store, tmp_path: Path
) -> None:
    log_tree(store, "ds", {"sub/inner.txt": "in", "sub/deeper/x.txt": "x"}, tmp_path / "src")
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInputError):
        store.artifact("ds").download(root)
    assert os.listdir(outside) == []
    assert (root / "sub").is_symlink()


def test_download_refuses_a_deeper_symlinked_directory(store: Store, tmp_path: Path) -> None:
    log_tree(store, "ds", {"a/b/c/file.txt": "deep"}, tmp_path / "src")
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "b").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidInputError):
        store.artifact("ds").download(root)
    assert list(outside.iterdir()) == []


def test_download_replaces_a_symlinked_file_instead_of_writing_through(
    store: Store, tmp_path: Path
) -> None:
    log_tree(store, "ds", {"a.txt": "from the store"}, tmp_path / "src")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").symlink_to(victim)
    store.artifact("ds").download(root)
    assert victim.read_text() == "precious"
    assert not (root / "a.txt").is_symlink()
    assert (root / "a.txt").read_text() == "from the store"


def test_download_allows_a_symlink_that_stays_inside_the_root(
    store: Store, tmp_path: Path
) -> None:
    log_tree(store, "ds", {"alias/x.txt": "x"}, tmp_path / "src")
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    store.artifact("ds").download(root)
    assert (root / "real" / "x.txt").read_text() == "x"


def test_checkout_does_not_delete_through_a_symlinked_directory(
    store: Store, tmp_path: Path
) -> None:
    log_tree(store, "ds", {"a.txt": "a"}, tmp_path / "src")
    outside = write_tree(tmp_path / "outside", {"precious.txt": "keep me"})
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    store.artifact("ds").checkout(root)
    assert read_tree(outside) == {"precious.txt": b"keep me"}
    assert not (root / "link").exists() and not (root / "link").is_symlink()
    assert read_tree(root) == {"a.txt": b"a"}


def test_download_default_root_follows_artstore_artifact_dir(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_tree(store, "ds", {"a.txt": "a"}, tmp_path / "src")
    monkeypatch.setenv("ARTSTORE_ARTIFACT_DIR", str(tmp_path / "dl"))
    root = store.artifact("ds").download()
    assert Path(root) == tmp_path / "dl" / "ds-v0"
    assert (tmp_path / "dl" / "ds-v0" / "a.txt").read_bytes() == b"a"
    store.artifact("ds").verify()  # the same default root


# -- runs --------------------------------------------------------------------------------


def _run_record(store: Store, run_id: str) -> dict:  # type: ignore[type-arg]
    raw = (store.path / "runs" / run_id).read_bytes()
    return msgpack.unpackb(raw, raw=False)


def test_use_artifact_records_an_input_in_the_run_record(store: Store, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a": "1"})
    with artstore.init(project="p", group="g", job_type="prep", store=store) as producer:
        art = Artifact("ds", "dataset")
        art.add_dir(src)
        logged = producer.log_artifact(art)
    rec = _run_record(store, producer.id)
    assert rec["kind"] == "run"
    assert rec["format"] == 1
    assert rec["project"] == "p" and rec["group"] == "g" and rec["job_type"] == "prep"
    assert rec["outputs"] == [["ds", 0, bytes.fromhex(logged.id)]]
    assert rec["inputs"] == []
    assert rec["finished"] is not None and rec["finished"] >= rec["started"]
    assert logged.logged_by()["id"] == producer.id  # type: ignore[index]
    assert logged.logged_by()["project"] == "p"  # type: ignore[index]

    with artstore.init(project="p", job_type="train", store=store) as consumer:
        used = consumer.use_artifact("ds:latest")
        assert used.version == "v0"
        rec = _run_record(store, consumer.id)
        assert rec["inputs"] == [["ds", 0, bytes.fromhex(used.id)]]
        assert rec["finished"] is None
        used2 = consumer.use_artifact(store.artifact("ds:v0"))
        assert used2.id == used.id
    rec = _run_record(store, consumer.id)
    assert len(rec["inputs"]) == 2
    assert rec["outputs"] == []
    assert rec["finished"] is not None

    with pytest.raises(ArtifactNotFoundError), artstore.init(store=store) as run:
        run.use_artifact("nothing:latest")


@pytest.mark.parametrize("run_id", ["../../outside", "../sibling", "..", "a/b"])
def test_run_id_cannot_place_the_run_record_outside_runs(
    store: Store, tmp_path: Path, run_id: str
) -> None:
    # The run record is runs/RUN_ID: an id with '/' or '..' must be refused, not used
    # as a path (here it would write the record next to, or outside, the store).
    f = tmp_path / "f"
    f.write_text("f")
    art = Artifact("ds", "dataset")
    art.add_file(f)
    before = set(os.listdir(tmp_path))
    with pytest.raises(InvalidNameError), artstore.init(id=run_id, store=store) as run:
        run.log_artifact(art)
    # Nothing new beside the store, nothing unexpected in it, nothing nested under runs/.
    assert set(os.listdir(tmp_path)) - before <= {"store"}
    if store.path.exists():
        assert set(os.listdir(store.path)) <= STORE_TOP_LEVEL
    runs = store.path / "runs"
    if runs.exists():
        assert all(p.is_file() for p in runs.iterdir())


STORE_TOP_LEVEL = {
    "artstore.json", "blobs", "manifests", "commits", "refs", "runs", "tmp", "locks",
    "staging", "sealed", "quarantine",
}


def test_finished_run_cannot_log(store: Store, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("f")
    run = artstore.init(store=store)
    run.finish()
    art = Artifact("ds", "dataset")
    art.add_file(f)
    with pytest.raises(ArtifactStateError):
        run.log_artifact(art)
    assert store.artifact_names() == []


def test_wait_returns_the_artifact_itself(store: Store, tmp_path: Path) -> None:
    art = log_tree(store, "ds", {"a": "1"}, tmp_path / "src")
    assert art.wait() is art
    assert art.wait(timeout=1.0) is art


# -- listing and lookup errors -----------------------------------------------------------


def test_artifact_names_and_versions(store: Store, tmp_path: Path) -> None:
    assert store.artifact_names() == []
    log_tree(store, "zeta", {"a": "1"}, tmp_path / "z")
    log_tree(store, "alpha", {"a": "1"}, tmp_path / "a0")
    log_tree(store, "alpha", {"a": "2"}, tmp_path / "a1")
    assert store.artifact_names() == ["alpha", "zeta"]
    versions = store.versions("alpha")
    assert [v.version for v in versions] == ["v0", "v1"]
    assert [v.get_entry("a").digest for v in versions] == [h(b"1"), h(b"2")]
    assert all(v.name == "alpha" and v.type == "dataset" for v in versions)
    assert versions[0].created_at <= versions[1].created_at  # type: ignore[operator]


def test_unknown_name_version_and_alias(store: Store, tmp_path: Path) -> None:
    assert issubclass(ArtifactNotFoundError, KeyError)
    assert issubclass(VersionNotFoundError, KeyError)
    with pytest.raises(ArtifactNotFoundError):
        store.artifact("ghost")
    log_tree(store, "ds", {"a": "1"}, tmp_path / "src")
    with pytest.raises(ArtifactNotFoundError):
        store.artifact("ghost:v0")
    with pytest.raises(ArtifactNotFoundError):
        store.versions("ghost")
    with pytest.raises(VersionNotFoundError) as info:
        store.artifact("ds:v1")
    assert "v1" in str(info.value)
    with pytest.raises(VersionNotFoundError) as info:
        store.artifact("ds:nosuchalias")
    assert "nosuchalias" in str(info.value)
    with pytest.raises(KeyError):
        store.artifact("ds:v99")
    with pytest.raises(VersionNotFoundError):
        store.artifact("ds", type="model")
    assert store.artifact("ds", type="dataset").version == "v0"
    with pytest.raises(InvalidNameError):
        store.artifact("ds:")
    with pytest.raises(InvalidNameError):
        store.artifact("bad name")


def test_version_numbers_are_ascii_digits_only(store: Store, tmp_path: Path) -> None:
    # FORMAT.md 5: versions are 'v' and decimal digits, names are ASCII. re's \d also
    # matches other Unicode digits: 'v\u0661' (ARABIC-INDIC DIGIT ONE) must not be v1.
    log_tree(store, "ds", {"a": "0"}, tmp_path / "s0")
    log_tree(store, "ds", {"a": "1"}, tmp_path / "s1")
    for spec in ("ds:v\u0661", "ds:v\uff11", "ds:v\u09e7"):
        with pytest.raises((InvalidNameError, VersionNotFoundError)):
            store.artifact(spec)


def test_an_absurdly_long_version_number_is_an_artstore_error(
    store: Store, tmp_path: Path
) -> None:
    # Python refuses int() of more than 4300 digits with a bare ValueError; the lookup
    # must still answer with an artstore error (the CLI prints those as one clean line).
    log_tree(store, "ds", {"a": "0"}, tmp_path / "s0")
    with pytest.raises((InvalidNameError, VersionNotFoundError)):
        store.artifact("ds:v" + "9" * 5000)


def test_a_store_that_does_not_exist_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "no" / "store" / "here"
    s = Store(path)
    assert not s.exists()
    assert s.artifact_names() == []
    assert s.read_refs("anything") is None
    with pytest.raises(ArtifactNotFoundError):
        s.artifact("anything")
    with pytest.raises(ArtifactNotFoundError):
        s.versions("anything")
    assert not path.exists()  # reading never creates it


def test_a_file_in_place_of_the_store_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("not a store")
    with pytest.raises(artstore.StoreNotFoundError):
        Store(f).artifact_names()


# -- drafts from a logged version --------------------------------------------------------------


def test_new_draft_add_replace_remove(store: Store, tmp_path: Path) -> None:
    v0 = log_tree(
        store,
        "ds",
        {"keep": "k", "replace": "old", "gone": "g", "dir/a": "a"},
        tmp_path / "src",
        metadata={"m": 1},
    )
    draft = v0.new_draft()
    assert draft.is_draft()
    assert sorted(draft.manifest) == ["dir/a", "gone", "keep", "replace"]
    new = tmp_path / "new"
    new.write_text("added")
    repl = tmp_path / "repl"
    repl.write_text("new content")
    draft.add_file(new, name="dir/added")
    draft.add_file(repl, name="replace", overwrite=True)
    draft.remove("gone")
    with artstore.init(store=store) as run:
        v1 = run.log_artifact(draft)
    assert v1.version == "v1"
    commit = store.read_commit(v1.id)  # type: ignore[arg-type]
    assert commit["base"] == v0.id
    assert commit["parent"] == v0.id
    assert store.read_commit(v0.id)["base"] is None  # type: ignore[arg-type]
    expected = digests(v0)
    expected.pop("gone")
    expected["replace"] = h(b"new content")
    expected["dir/added"] = h(b"added")
    assert digests(store.artifact("ds:v1")) == expected
    assert store.artifact("ds:v1").metadata == {"m": 1}
    # v0 is untouched.
    assert sorted(store.artifact("ds:v0").manifest) == ["dir/a", "gone", "keep", "replace"]


def test_unchanged_draft_makes_no_new_version(store: Store, tmp_path: Path) -> None:
    v0 = log_tree(store, "ds", {"a": "1"}, tmp_path / "src")
    again = v0.new_draft().save(store)
    assert again.version == "v0"
    assert [a.version for a in store.versions("ds")] == ["v0"]


def test_two_drafts_touching_different_paths_both_apply(store: Store, tmp_path: Path) -> None:
    v0 = log_tree(store, "ds", {"a": "a0", "b": "b0", "c": "c0"}, tmp_path / "src")
    first = store.artifact("ds:v0").new_draft()
    second = store.artifact("ds:v0").new_draft()
    fa = tmp_path / "fa"
    fa.write_text("a1")
    fb = tmp_path / "fb"
    fb.write_text("b1")
    first.add_file(fa, name="a", overwrite=True)
    second.add_file(fb, name="b", overwrite=True)
    second.remove("c")
    v1 = first.save(store)
    v2 = second.save(store)
    assert (v1.version, v2.version) == ("v1", "v2")
    assert digests(store.artifact("ds:v2")) == {"a": h(b"a1"), "b": h(b"b1")}
    c2 = store.read_commit(v2.id)  # type: ignore[arg-type]
    assert c2["base"] == v0.id
    assert c2["parent"] == v1.id


def test_two_drafts_changing_the_same_path_conflict(store: Store, tmp_path: Path) -> None:
    v0 = log_tree(store, "ds", {"shared.txt": "0", "other": "o"}, tmp_path / "src")
    first = v0.new_draft()
    second = v0.new_draft()
    f1 = tmp_path / "f1"
    f1.write_text("first")
    f2 = tmp_path / "f2"
    f2.write_text("second")
    first.add_file(f1, name="shared.txt", overwrite=True)
    second.add_file(f2, name="shared.txt", overwrite=True)
    first.save(store)
    with pytest.raises(ConflictError) as info:
        second.save(store)
    assert "shared.txt" in info.value.paths
    assert "other" not in info.value.paths
    assert "shared.txt" in str(info.value)
    assert [a.version for a in store.versions("ds")] == ["v0", "v1"]
    assert store.artifact("ds").get_entry("shared.txt").digest == h(b"first")


def test_draft_removing_a_path_another_draft_changed_conflicts(
    store: Store, tmp_path: Path
) -> None:
    v0 = log_tree(store, "ds", {"x": "0"}, tmp_path / "src")
    first = v0.new_draft()
    second = v0.new_draft()
    f = tmp_path / "f"
    f.write_text("changed")
    first.add_file(f, name="x", overwrite=True)
    second.remove("x")
    first.save(store)
    with pytest.raises(ConflictError) as info:
        second.save(store)
    assert info.value.paths == ["x"]


def test_incremental_artifact_keeps_latest_entries(store: Store, tmp_path: Path) -> None:
    log_tree(store, "inc", {"a": "a0", "b": "b0"}, tmp_path / "s0")
    fc = tmp_path / "c"
    fc.write_text("c0")
    fa = tmp_path / "a"
    fa.write_text("a1")
    art = Artifact("inc", "dataset", incremental=True)
    art.add_file(fc)
    art.add_file(fa)
    art.save(store)
    assert art.version == "v1"
    assert digests(store.artifact("inc:v1")) == {"a": h(b"a1"), "b": h(b"b0"), "c": h(b"c0")}
    # An incremental artifact of a new name is just its own entries.
    first = Artifact("inc-new", "dataset", incremental=True)
    first.add_file(fc)
    first.save(store)
    assert sorted(first.manifest) == ["c"]


# -- objects on disk -----------------------------------------------------------------------


def test_blobs_are_content_addressed_and_read_only(store: Store, tmp_path: Path) -> None:
    art = log_tree(store, "ds", {"a": "dup", "b": "dup", "c": "other"}, tmp_path / "src")
    blobs = [p for p in (store.path / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 2  # "dup" stored once
    for p in blobs:
        assert h(p.read_bytes()) == p.parent.name + p.name
        assert not (p.stat().st_mode & 0o222)
    manifest = store.path / "manifests" / art.digest[:2] / art.digest[2:]
    assert h(manifest.read_bytes()) == art.digest
    assert {e.path for e in fmt.decode_manifest(manifest.read_bytes(), "m")} == {"a", "b", "c"}
