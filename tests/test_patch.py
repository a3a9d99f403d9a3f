"""Patch mode: drafts from a logged version, incremental artifacts, ``artstore patch``/``diff``.

A patch is a version drafted from another (``new_draft``): its commit's ``base`` is the
commit it was drafted from, and its unchanged entries are carried over by digest, never
re-read. A patch logged after another version applies on top of it, unless both changed
the same path.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import xxhash

import artstore
from artstore import Artifact, Entry

from conftest import read_tree, write_tree

CliRun = Callable[..., tuple[int, str, str]]


def entry_for(path: str, data: bytes | str) -> Entry:
    if isinstance(data, str):
        data = data.encode()
    return Entry(path, xxhash.xxh3_128_hexdigest(data), len(data), None)


def log_tree(run: artstore.Run, name: str, files: dict[str, str | bytes], root: Path,
             **kwargs: object) -> Artifact:
    src = write_tree(root, files)
    art = Artifact(name, "dataset", **kwargs)  # type: ignore[arg-type]
    art.add_dir(src)
    return run.log_artifact(art)


def one_file(tmp_path: Path, rel: str, content: str | bytes) -> Path:
    return write_tree(tmp_path, {rel: content}) / rel


BASE_FILES = {
    "a.txt": "alpha",
    "b.txt": "bravo bravo",
    "d/c.txt": "charlie",
    "d/e.txt": "echo echo echo",
    "keep/big.bin": b"\x00\x01" * 5000,
}


@pytest.fixture
def v0(tmp_path: Path, store: artstore.Store) -> Artifact:
    """ds:v0 logged from BASE_FILES, whose source directory is then deleted."""
    src = tmp_path / "v0-src"
    art = log_tree(artstore.init(), "ds", BASE_FILES, src, metadata={"stage": "raw"},
                   description="first")
    assert art.qualified_name == "ds:v0"
    # The unchanged entries of any draft from v0 cannot be re-read from their sources.
    shutil.rmtree(src)
    return art


def test_new_draft_add_replace_remove(tmp_path: Path, store: artstore.Store, v0: Artifact) -> None:
    old_manifest = store.artifact("ds:v0").manifest
    draft = store.artifact("ds:latest").new_draft()
    assert draft.is_draft() and not draft.is_logged
    assert draft.manifest == old_manifest  # known entries, read from no file
    draft.add_file(one_file(tmp_path / "n", "new.txt", "november"), "n/new.txt")
    with pytest.raises(artstore.ConflictError):
        draft.add_file(one_file(tmp_path / "r", "a.txt", "ALPHA REPLACED"), "a.txt")
    draft.add_file(tmp_path / "r" / "a.txt", "a.txt", overwrite=True)
    draft.remove("d/c.txt")
    with pytest.raises(artstore.NotFoundError):
        draft.remove("no/such/entry")

    v1 = artstore.init().log_artifact(draft)
    assert v1.qualified_name == "ds:v1"

    expected = dict(old_manifest)
    expected["n/new.txt"] = entry_for("n/new.txt", "november")
    expected["a.txt"] = entry_for("a.txt", "ALPHA REPLACED")
    del expected["d/c.txt"]
    assert store.artifact("ds:v1").manifest == expected
    for unchanged in ("b.txt", "d/e.txt", "keep/big.bin"):
        assert expected[unchanged] == old_manifest[unchanged]

    commit = store.read_commit(v1.id)
    assert commit["base"] == v0.id
    assert commit["parent"] == v0.id
    assert store.read_commit(v0.id)["base"] is None
    # The draft keeps the description and metadata of the version it came from.
    assert v1.description == "first" and v1.metadata == {"stage": "raw"}

    # v0 is unchanged, and v1's bytes (old blobs and new) download intact.
    assert store.artifact("ds:v0").manifest == old_manifest
    got = read_tree(Path(store.artifact("ds:v1").download(tmp_path / "out")))
    want = {p: (c.encode() if isinstance(c, str) else c) for p, c in BASE_FILES.items()}
    want.update({"n/new.txt": b"november", "a.txt": b"ALPHA REPLACED"})
    del want["d/c.txt"]
    assert got == want


def test_draft_remove_directory_and_only_removals(tmp_path: Path, store: artstore.Store,
                                                  v0: Artifact) -> None:
    draft = v0.new_draft()
    draft.remove("d")
    v1 = draft.save()
    assert sorted(v1.manifest) == ["a.txt", "b.txt", "keep/big.bin"]
    assert store.read_commit(v1.id)["base"] == v0.id
    assert v1.manifest["keep/big.bin"] == v0.manifest["keep/big.bin"]


def test_logged_version_is_immutable_draft_from_it(tmp_path: Path, v0: Artifact) -> None:
    with pytest.raises(artstore.ArtifactStateError):
        v0.add_file(one_file(tmp_path, "x.txt", "x"))
    with pytest.raises(artstore.ArtifactStateError):
        v0.remove("a.txt")
    draft = v0.new_draft()
    draft.remove("a.txt")
    assert "a.txt" in v0.manifest  # the logged object is untouched by its draft


def test_unchanged_draft_logs_no_new_version(store: artstore.Store, v0: Artifact) -> None:
    again = artstore.init().log_artifact(v0.new_draft())
    assert again.version == "v0"
    assert len(store.versions("ds")) == 1


def test_two_drafts_from_one_version_different_paths(tmp_path: Path, store: artstore.Store,
                                                     v0: Artifact) -> None:
    first = v0.new_draft()
    second = store.artifact("ds:v0").new_draft()

    first.add_file(one_file(tmp_path / "1", "a.txt", "alpha by first"), "a.txt", overwrite=True)
    first.add_file(one_file(tmp_path / "1", "x.txt", "x by first"), "x.txt")
    v1 = artstore.init().log_artifact(first)
    assert v1.version == "v1"

    second.add_file(one_file(tmp_path / "2", "b.txt", "bravo by second"), "b.txt", overwrite=True)
    second.remove("d/c.txt")
    second.add_file(one_file(tmp_path / "2", "y.txt", "y by second"), "sub/y.txt")
    v2 = artstore.init().log_artifact(second)
    assert v2.version == "v2"

    expected = dict(v0.manifest)
    expected.update({
        "a.txt": entry_for("a.txt", "alpha by first"),
        "x.txt": entry_for("x.txt", "x by first"),
        "b.txt": entry_for("b.txt", "bravo by second"),
        "sub/y.txt": entry_for("sub/y.txt", "y by second"),
    })
    del expected["d/c.txt"]
    assert store.artifact("ds:v2").manifest == expected  # nothing of the first patch lost
    commit = store.read_commit(v2.id)
    assert commit["base"] == v0.id
    assert commit["parent"] == v1.id


def test_two_drafts_touching_one_path_conflict(tmp_path: Path, store: artstore.Store,
                                               v0: Artifact) -> None:
    first, second, third = v0.new_draft(), v0.new_draft(), v0.new_draft()
    first.add_file(one_file(tmp_path / "1", "b.txt", "first's bravo"), "b.txt", overwrite=True)
    artstore.init().log_artifact(first)

    second.add_file(one_file(tmp_path / "2", "b.txt", "second's bravo"), "b.txt", overwrite=True)
    second.add_file(one_file(tmp_path / "2", "z.txt", "z"), "z.txt")
    with pytest.raises(artstore.ConflictError) as info:
        artstore.init().log_artifact(second)
    assert info.value.paths == ["b.txt"]
    assert "b.txt" in str(info.value)
    assert not isinstance(info.value, artstore.SealedError)
    # Nothing was committed by the refused patch.
    assert [a.version for a in store.versions("ds")] == ["v0", "v1"]
    assert store.artifact("ds:latest").manifest["b.txt"] == entry_for("b.txt", "first's bravo")

    # Removing a path another version changed is a conflict too.
    third.remove("b.txt")
    with pytest.raises(artstore.ConflictError) as info:
        third.save()
    assert info.value.paths == ["b.txt"]


def test_two_drafts_making_the_same_change_agree(tmp_path: Path, store: artstore.Store,
                                                 v0: Artifact) -> None:
    first, second = v0.new_draft(), v0.new_draft()
    for draft, where in ((first, "1"), (second, "2")):
        draft.add_file(one_file(tmp_path / where, "a.txt", "same new alpha"), "a.txt",
                       overwrite=True)
    v1 = first.save()
    again = second.save()  # no conflict: the result equals the latest version
    assert again.version == v1.version == "v1"
    assert len(store.versions("ds")) == 2


def test_incremental_artifact_keeps_earlier_entries(tmp_path: Path, store: artstore.Store,
                                                    v0: Artifact) -> None:
    inc = Artifact("ds", "dataset", incremental=True)
    inc.add_file(one_file(tmp_path / "i", "a.txt", "alpha v2"), "a.txt")
    inc.add_file(one_file(tmp_path / "i", "new/n.txt", "new"), "new/n.txt")
    v1 = artstore.init().log_artifact(inc)
    assert v1.version == "v1"
    expected = dict(v0.manifest)
    expected["a.txt"] = entry_for("a.txt", "alpha v2")
    expected["new/n.txt"] = entry_for("new/n.txt", "new")
    assert store.artifact("ds:v1").manifest == expected
    assert store.read_commit(v1.id)["base"] is None
    assert store.read_commit(v1.id)["parent"] == v0.id

    # A second incremental version builds on the first.
    inc2 = Artifact("ds", "dataset", incremental=True)
    inc2.add_file(one_file(tmp_path / "j", "q.txt", "q"), "q.txt")
    v2 = inc2.save()
    assert store.artifact("ds:v2").manifest == {**expected, "q.txt": entry_for("q.txt", "q")}

    # A plain (non-incremental) artifact replaces everything.
    plain = Artifact("ds", "dataset")
    plain.add_file(one_file(tmp_path / "k", "only.txt", "only"), "only.txt")
    v3 = plain.save()
    assert store.artifact(f"ds:{v3.version}").manifest == {
        "only.txt": entry_for("only.txt", "only")}
    assert v2.version == "v2" and v3.version == "v3"


def test_incremental_artifact_first_version(tmp_path: Path, store: artstore.Store) -> None:
    inc = Artifact("fresh", "dataset", incremental=True)
    inc.add_file(one_file(tmp_path, "a.txt", "a"))
    art = inc.save()
    assert art.qualified_name == "fresh:v0"
    assert art.manifest == {"a.txt": entry_for("a.txt", "a")}


def test_incremental_file_over_directory_is_refused(tmp_path: Path, store: artstore.Store,
                                                    v0: Artifact) -> None:
    inc = Artifact("ds", "dataset", incremental=True)
    inc.add_file(one_file(tmp_path, "d", "a file where a directory is"), "d")
    with pytest.raises(artstore.ConflictError):
        inc.save()
    assert len(store.versions("ds")) == 1


# -- CLI -----------------------------------------------------------------------------

def test_cli_patch_and_diff(tmp_path: Path, cli: CliRun, store: artstore.Store) -> None:
    src = write_tree(tmp_path / "data", {"a.txt": "alpha", "b.txt": "bravo!", "d/c.txt": "c"})
    rc, out, err = cli("put", src, "-n", "ds")
    assert rc == 0, err
    assert out.strip() == "ds:v0"
    v0 = store.artifact("ds:v0")
    shutil.rmtree(src)  # the patch must not need the original files

    new = one_file(tmp_path / "adds", "new.bin", b"0123456789")
    repl = one_file(tmp_path / "adds", "a2.txt", "alpha, longer now")
    rc, out, err = cli("patch", "ds", "--add", f"{new}:sub/new.bin", "--add", f"{repl}:a.txt",
                       "--remove", "b.txt", "-a", "patched")
    assert rc == 0, err
    assert out.strip() == "ds:v1"
    v1 = store.artifact("ds:patched")
    assert v1.version == "v1"
    expected = dict(v0.manifest)
    del expected["b.txt"]
    expected["sub/new.bin"] = entry_for("sub/new.bin", b"0123456789")
    expected["a.txt"] = entry_for("a.txt", "alpha, longer now")
    assert v1.manifest == expected
    assert store.read_commit(v1.id)["base"] == v0.id

    rc, out, err = cli("diff", "ds:v0", "ds:v1")
    assert rc == 0, err
    assert out.splitlines() == [
        "M a.txt\t5 -> 17 bytes",
        "- b.txt\t6 bytes",
        "+ sub/new.bin\t10 bytes",
        "ds:v0 -> ds:v1: 1 added, 1 removed, 1 modified",
    ]
    rc, out, err = cli("diff", "ds:v0", "ds:v1", "--json")
    assert rc == 0, err
    data = json.loads(out)
    assert data["from"] == "ds:v0" and data["to"] == "ds:v1"
    assert data["changes"] == [
        {"change": "modified", "path": "a.txt", "old_size": 5, "size": 17},
        {"change": "removed", "path": "b.txt", "size": 6},
        {"change": "added", "path": "sub/new.bin", "size": 10},
    ]
    # The reverse diff swaps added and removed.
    rc, out, err = cli("diff", "ds:v1", "ds:v0")
    assert rc == 0, err
    assert out.splitlines()[-1] == "ds:v1 -> ds:v0: 1 added, 1 removed, 1 modified"
    assert "+ b.txt\t6 bytes" in out.splitlines() and "- sub/new.bin\t10 bytes" in out.splitlines()
    # A version against itself: no changes.
    rc, out, err = cli("diff", "ds:v1", "ds:latest")
    assert rc == 0 and out.splitlines() == ["ds:v1 -> ds:v1: 0 added, 0 removed, 0 modified"]


def test_cli_patch_from_older_version_and_plain_add(tmp_path: Path, cli: CliRun,
                                                    store: artstore.Store) -> None:
    src = write_tree(tmp_path / "data", {"a.txt": "a", "b.txt": "b"})
    assert cli("put", src, "-n", "ds")[0] == 0
    one = one_file(tmp_path / "one", "one.txt", "1")
    rc, out, err = cli("patch", "ds", "--add", one)  # no :NAME - the file's own name
    assert rc == 0, err
    assert out.strip() == "ds:v1"
    assert sorted(store.artifact("ds:v1").manifest) == ["a.txt", "b.txt", "one.txt"]

    # Drafted from v0 while v1 exists: applies on top of v1 (different path).
    two = one_file(tmp_path / "two", "two.txt", "2")
    rc, out, err = cli("patch", "ds:v0", "--add", f"{two}:dir/two.txt", "--remove", "a.txt",
                       "--json")
    assert rc == 0, err
    described = json.loads(out)
    assert described["qualified_name"] == "ds:v2"
    assert described["files"] == 3
    v2 = store.artifact("ds:v2")
    assert sorted(v2.manifest) == ["b.txt", "dir/two.txt", "one.txt"]
    assert store.read_commit(v2.id)["base"] == store.artifact("ds:v0").id
    assert store.read_commit(v2.id)["parent"] == store.artifact("ds:v1").id

    # A directory added under a name.
    extra = write_tree(tmp_path / "extra", {"x.txt": "x", "y/z.txt": "z"})
    rc, out, err = cli("patch", "ds", "--add", f"{extra}:more")
    assert rc == 0, err
    assert sorted(store.artifact("ds:v3").manifest) == [
        "b.txt", "dir/two.txt", "more/x.txt", "more/y/z.txt", "one.txt"]
    rc, out, err = cli("diff", "ds:v2", "ds:v3")
    assert rc == 0, err
    assert out.splitlines() == ["+ more/x.txt\t1 bytes", "+ more/y/z.txt\t1 bytes",
                                "ds:v2 -> ds:v3: 2 added, 0 removed, 0 modified"]


def test_cli_patch_errors(tmp_path: Path, cli: CliRun, store: artstore.Store) -> None:
    src = write_tree(tmp_path / "data", {"a.txt": "a", "b.txt": "b"})
    assert cli("put", src, "-n", "ds")[0] == 0
    rc, out, err = cli("patch", "ds")
    assert rc == 2 and "--add" in err
    rc, out, err = cli("patch", "ds", "--remove", "nope.txt")
    assert rc == 1 and err.startswith("artstore: error: ") and "nope.txt" in err
    assert "Traceback" not in err
    rc, out, err = cli("patch", "ds", "--add", tmp_path / "missing.txt")
    assert rc == 1 and "missing.txt" in err and "Traceback" not in err
    rc, out, err = cli("patch", "nosuch", "--remove", "a.txt")
    assert rc == 1 and "nosuch" in err
    assert [a.version for a in store.versions("ds")] == ["v0"]

    # Conflict between a patch drafted from v0 and a version logged since, via the CLI.
    b1 = one_file(tmp_path / "b1", "b.txt", "b one")
    b2 = one_file(tmp_path / "b2", "b.txt", "b two")
    assert cli("patch", "ds", "--add", b1)[0] == 0
    rc, out, err = cli("patch", "ds:v0", "--add", b2)
    assert rc == 1
    assert err.startswith("artstore: error: ") and "b.txt" in err
    assert len(err.strip().splitlines()) == 1
    assert [a.version for a in store.versions("ds")] == ["v0", "v1"]


def test_cli_diff_reference_without_size(tmp_path: Path, cli: CliRun,
                                         store: artstore.Store) -> None:
    """A reference recorded without a checksum has no size: diff must not print 'None'."""
    src = write_tree(tmp_path / "data", {"a.txt": "a"})
    assert cli("put", src, "-n", "ds")[0] == 0
    draft = store.artifact("ds").new_draft()
    draft.add_reference("s3://bucket/key.bin", checksum=False)
    draft.save()
    rc, out, err = cli("diff", "ds:v0", "ds:v1")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("+ key.bin\t")
    assert "None" not in out, out
    rc, out, err = cli("diff", "ds:v0", "ds:v1", "--json")
    assert json.loads(out)["changes"] == [{"change": "added", "path": "key.bin", "size": None}]


def test_cli_patch_add_file_with_colon_in_its_name(tmp_path: Path, cli: CliRun,
                                                   store: artstore.Store) -> None:
    """':' is allowed in entry paths (FORMAT.md 5) and common in file names (timestamps).
    An existing file given as --add PATH is added under its own name."""
    src = write_tree(tmp_path / "data", {"a.txt": "a"})
    assert cli("put", src, "-n", "ds")[0] == 0
    stamped = one_file(tmp_path / "logs", "run-10:30.csv", "t,loss\n")
    rc, out, err = cli("patch", "ds", "--add", stamped)
    assert rc == 0, err
    assert sorted(store.artifact("ds:v1").manifest) == ["a.txt", "run-10:30.csv"]
    # With an explicit NAME the last ':' separates it.
    rc, out, err = cli("patch", "ds", "--add", f"{stamped}:logs/run.csv")
    assert rc == 0, err
    assert "logs/run.csv" in store.artifact("ds:v2").manifest
