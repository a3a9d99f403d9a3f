"""Integrity: fsck finds damage, downloads refuse damaged blobs, gc/rm/retention keep what is live.

Every test works on its own store (``tests/conftest.py`` points ``ARTSTORE_DIR`` and
``ARTSTORE_CACHE_DIR`` at the test's ``tmp_path``). Damage is done to the real files of the
store; the CLI runs as a real subprocess; concurrency uses real separate processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import xxhash
from conftest import CliResult, h, ok, one_error_line, read_tree, write_tree

import artstore
from artstore import Artifact, CorruptDataError, InvalidInputError, Store
from artstore._store import Refs

Cli = Callable[..., CliResult]


# -- helpers -------------------------------------------------------------------------------


def obj(store_path: Path, kind: str, digest: str) -> Path:
    """The file of a blob, manifest or commit."""
    return store_path / kind / digest[:2] / digest[2:]


def all_objects(store_path: Path, kind: str) -> set[str]:
    base = store_path / kind
    if not base.is_dir():
        return set()
    return {fan.name + f.name for fan in base.iterdir() for f in fan.iterdir()}


def snapshot(store_path: Path) -> dict[str, bytes]:
    """Every file of the store except lock markers and the tmp area, with its bytes."""
    out = {}
    for p in sorted(store_path.rglob("*")):
        rel = p.relative_to(store_path).as_posix()
        if p.is_file() and not rel.startswith(("locks/", "tmp/")):
            out[rel] = p.read_bytes()
    return out






def make_writable(path: Path) -> None:
    os.chmod(path, 0o644)


def flip_bytes(path: Path) -> None:
    """Change the bytes of a file, keeping its size."""
    make_writable(path)
    data = bytearray(path.read_bytes())
    assert data, path
    data[len(data) // 2] ^= 0xFF
    data[0] ^= 0x55
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    make_writable(path)
    data = path.read_bytes()
    assert len(data) > 1
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def log(store: Store, tmp_path: Path) -> Callable[..., Artifact]:
    """``log(name, files, aliases=())``: write the files to a fresh directory, log it."""
    counter = [0]

    def do(name: str, files: dict[str, bytes | str], aliases: tuple[str, ...] = ()) -> Artifact:
        counter[0] += 1
        src = write_tree(tmp_path / f"src{counter[0]}", files)
        art = Artifact(name, "dataset")
        art.add_dir(src)
        with artstore.init(project="integrity", store=store) as run:
            return run.log_artifact(art, aliases=list(aliases))

    return do


def digests(art: Artifact) -> dict[str, str]:
    return {e.path: e.digest for e in art.files()}


def refs_files(store_path: Path, name: str) -> list[Path]:
    return sorted((store_path / "refs" / name).iterdir())


# -- fsck ----------------------------------------------------------------------------------


FILES_V0 = {"a.txt": b"alpha " * 100, "sub/b.bin": bytes(range(256)) * 8, "c.txt": b"cee\n" * 50}
FILES_V1 = {**FILES_V0, "a.txt": b"alpha two " * 90, "d.txt": b"dee " * 30}


def test_fsck_of_a_clean_store_is_ok(cli: Cli, log, store: Store, store_path: Path) -> None:
    log("ds", FILES_V0, aliases=("best",))
    log("ds", FILES_V1)
    log("other", {"x.txt": "x"})
    report = store.fsck()
    assert report.ok, report.problems
    assert report.problems == []
    assert report.versions == 3
    assert report.blobs_checked == len(all_objects(store_path, "blobs")) == 6
    assert report.blobs_hashed == report.blobs_checked

    out = ok(cli("fsck"))
    assert out.strip().splitlines()[-1].startswith("ok: 3 version(s), 6 blob(s), 6 re-hashed")
    data = json.loads(ok(cli("fsck", "--json")))
    assert data["ok"] is True and data["problems"] == [] and data["versions"] == 3


def _damage_blob_truncated(store_path: Path, v0: Artifact, v1: Artifact) -> Path:
    path = obj(store_path, "blobs", digests(v0)["c.txt"])
    truncate(path)
    return path


def _damage_blob_flipped(store_path: Path, v0: Artifact, v1: Artifact) -> Path:
    path = obj(store_path, "blobs", digests(v0)["sub/b.bin"])
    size = path.stat().st_size
    flip_bytes(path)
    assert path.stat().st_size == size
    return path


def _damage_blob_deleted(store_path: Path, v0: Artifact, v1: Artifact) -> Path:
    path = obj(store_path, "blobs", digests(v1)["d.txt"])
    path.unlink()
    return path


def _damage_manifest(store_path: Path, v0: Artifact, v1: Artifact) -> Path:
    path = obj(store_path, "manifests", v0.digest)
    flip_bytes(path)
    return path


def _damage_commit_format(store_path: Path, v0: Artifact, v1: Artifact) -> Path:
    path = obj(store_path, "commits", v1.id)
    record = msgpack.unpackb(path.read_bytes(), raw=False)
    assert record["format"] == 1
    record["format"] = 99
    make_writable(path)
    path.write_bytes(msgpack.packb(record, use_bin_type=True))
    return path


def _damage_refs_truncated(store_path: Path, v0: Artifact, v1: Artifact) -> Path:
    path = refs_files(store_path, "ds")[-1]
    truncate(path)
    return path


def _damage_alias_to_missing_version(store_path: Path, v0: Artifact, v1: Artifact) -> Path:
    store = Store(store_path)
    current = store.read_refs("ds")
    assert current is not None
    crafted = Refs(
        name=current.name,
        type=current.type,
        generation=current.generation + 1,
        versions=list(current.versions),
        aliases={**current.aliases, "best": len(current.versions) + 5},
    )
    path = store_path / "refs" / "ds" / f"{crafted.generation:012d}"
    with open(path, "xb") as f:  # published as the next generation, like a writer would
        f.write(crafted.encode())
    assert Store(store_path).read_refs("ds").aliases["best"] == len(current.versions) + 5
    return path


DAMAGES = {
    "blob-truncated": (_damage_blob_truncated, "truncated"),
    "blob-bytes-flipped": (_damage_blob_flipped, "hash"),
    "blob-deleted": (_damage_blob_deleted, "missing"),
    "manifest-corrupted": (_damage_manifest, "manifest"),
    "commit-format-99": (_damage_commit_format, "format 99"),
    "refs-generation-truncated": (_damage_refs_truncated, "refs"),
    "alias-to-missing-version": (_damage_alias_to_missing_version, "best"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_fsck_reports_each_kind_of_damage_naming_the_file(
    damage: str, cli: Cli, log, store_path: Path
) -> None:
    v0 = log("ds", FILES_V0)
    v1 = log("ds", FILES_V1)
    log("other", {"x.txt": "unrelated"})
    assert Store(store_path).fsck().ok
    do, word = DAMAGES[damage]
    damaged = do(store_path, v0, v1)

    report = Store(store_path).fsck()
    assert not report.ok
    errors = [str(p) for p in report.errors]
    naming = [e for e in errors if str(damaged) in e]
    assert naming, f"no error names {damaged}: {errors}"
    assert any(word in e for e in naming), errors

    rc, out, err = cli("fsck")
    assert rc == 1, (out, err)
    assert "Traceback" not in err
    assert str(damaged) in out
    assert "DAMAGED" in out.strip().splitlines()[-1]
    assert any(line.startswith("error: ") and str(damaged) in line for line in out.splitlines())

    rc, out, err = cli("fsck", "--json")
    assert rc == 1, err
    data = json.loads(out)
    assert data["ok"] is False
    assert any(
        p["severity"] == "error" and str(damaged) in p["path"] + " " + p["message"]
        for p in data["problems"]
    ), data


def test_fsck_reports_an_alias_naming_a_deleted_version(cli: Cli, log, store_path: Path) -> None:
    log("ds", FILES_V0)
    log("ds", FILES_V1)
    store = Store(store_path)
    current = store.read_refs("ds")
    assert current is not None
    versions = list(current.versions)
    versions[0] = None  # deleted, but an alias still points at it
    crafted = Refs(current.name, current.type, current.generation + 1, versions,
                   {**current.aliases, "old": 0})
    path = store_path / "refs" / "ds" / f"{crafted.generation:012d}"
    path.write_bytes(crafted.encode())
    report = Store(store_path).fsck()
    assert not report.ok
    assert any("'old'" in str(p) and "v0" in str(p) for p in report.errors), report.problems
    rc, out, _err = cli("fsck")
    assert rc == 1 and "'old'" in out


def test_fsck_leftover_temp_file_is_a_warning_and_gc_grace_0_removes_it(
    cli: Cli, log, store_path: Path
) -> None:
    log("ds", FILES_V0)
    leftover = store_path / "tmp" / "deadhost.4242.0123456789abcdef.tmp"
    leftover.parent.mkdir(exist_ok=True)
    leftover.write_bytes(b"half a blob" * 100)

    report = Store(store_path).fsck()
    assert report.ok
    assert [p.path for p in report.warnings] == [str(leftover)]
    assert report.errors == []
    out = ok(cli("fsck"))
    assert f"warning: {leftover}" in out
    assert "1 warning(s)" in out

    # The default grace period (24 h) keeps a young leftover...
    ok(cli("gc"))
    assert leftover.exists()
    # ...grace 0 removes it.
    data = json.loads(ok(cli("gc", "--grace", "0", "--json")))
    assert data["removed"].get("tmp") == 1
    assert data["freed_bytes"] >= 1100
    assert not leftover.exists()
    report = Store(store_path).fsck()
    assert report.ok and report.problems == []


def test_fsck_sample_0_hashes_no_blob(cli: Cli, log, store: Store, store_path: Path) -> None:
    log("ds", FILES_V0)
    report = store.fsck(sample=0)
    assert report.ok
    assert report.blobs_checked == 3
    assert report.blobs_hashed == 0
    data = json.loads(ok(cli("fsck", "--sample", "0", "--json")))
    assert data["blobs_hashed"] == 0 and data["blobs"] == 3 and data["ok"] is True
    out = ok(cli("fsck", "--sample", "0"))
    assert "0 re-hashed" in out
    # A sampled-out blob is still checked for size: a truncated one is found without hashing.
    v = Store(store_path).artifact("ds")
    truncate(obj(store_path, "blobs", digests(v)["a.txt"]))
    report = Store(store_path).fsck(sample=0)
    assert report.blobs_hashed == 0
    assert not report.ok
    rc, out, _ = cli("fsck", "--sample", "0")
    assert rc == 1 and "truncated" in out


def test_fsck_json_parses_and_lists_problems(cli: Cli, log, store_path: Path) -> None:
    v0 = log("ds", FILES_V0)
    blob = obj(store_path, "blobs", digests(v0)["a.txt"])
    blob.unlink()
    (store_path / "tmp").mkdir(exist_ok=True)
    (store_path / "tmp" / "leftover.tmp").write_bytes(b"x")
    rc, out, err = cli("--json", "fsck")
    assert rc == 1, err
    data = json.loads(out)
    assert set(data) >= {"ok", "versions", "blobs", "blobs_hashed", "problems"}
    assert data["ok"] is False and data["versions"] == 1
    severities = sorted(p["severity"] for p in data["problems"])
    assert severities == ["error", "warning"]
    assert any(p["path"] == str(blob) for p in data["problems"])


# -- damaged blobs on download ---------------------------------------------------------------


def _age(root: Path, seconds: float = 3600) -> None:
    """Make files old enough for the stat cache to trust them (its racy-clean margin)."""
    then = time.time() - seconds
    for p in root.rglob("*"):
        os.utime(p, (then, then))


def test_download_of_damaged_blob_raises_quarantines_and_readd_repairs(
    store: Store, store_path: Path, tmp_path: Path
) -> None:
    files = {"a.bin": os.urandom(5000), "b.txt": b"bee\n" * 100, "z.txt": b"zed\n" * 10}
    src = write_tree(tmp_path / "src", files)
    _age(src)
    art = Artifact("ds", "dataset")
    art.add_dir(src)
    art.save(store)
    digest = digests(art)["a.bin"]
    blob = obj(store_path, "blobs", digest)
    flip_bytes(blob)
    damaged = blob.read_bytes()

    out = tmp_path / "out"
    with pytest.raises(CorruptDataError) as info:
        Store(store_path).artifact("ds:v0").download(out)
    assert "a.bin" in str(info.value)
    assert not (out / "a.bin").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".a.bin")], list(out.iterdir())
    # The damaged blob is moved aside, bytes kept for inspection.
    assert not blob.exists()
    moved = list((store_path / "corrupt").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith(digest)
    assert moved[0].read_bytes() == damaged
    report = Store(store_path).fsck()
    assert not report.ok
    assert any(str(blob) in str(p) and "missing" in str(p) for p in report.errors)

    # Logging the same content again (the stat cache knows the file) restores the blob.
    again = Artifact("ds", "dataset")
    again.add_dir(src)
    again.save(Store(store_path))
    assert again.version == "v0"  # same content: no new version
    assert blob.read_bytes() == files["a.bin"]
    report = Store(store_path).fsck()
    assert report.ok, report.problems
    out2 = tmp_path / "out2"
    Store(store_path).artifact("ds:v0").download(out2)
    assert read_tree(out2) == files


def test_cli_get_of_damaged_blob_fails_and_a_new_version_repairs(
    cli: Cli, store_path: Path, tmp_path: Path
) -> None:
    files = {"model.bin": os.urandom(3 * 1024 * 1024), "cfg.json": b'{"lr": 0.1}'}
    src = write_tree(tmp_path / "src", files)
    ok(cli("put", src, "-n", "model", "-t", "model"))
    v0 = Store(store_path).artifact("model:v0")
    digest = digests(v0)["model.bin"]
    blob = obj(store_path, "blobs", digest)
    flip_bytes(blob)

    rc, out, err = cli("get", "model:v0", "--root", tmp_path / "out")
    assert rc == 1, (out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    # One error line, after a warning that says where the damaged blob went.
    assert lines[-1].startswith("artstore: error:") and len(lines) <= 2, err
    assert "model.bin" in lines[-1] and "does not match its digest" in lines[-1]
    assert all(line.startswith("artstore: WARNING:") for line in lines[:-1]), err
    assert "corrupt/" in err
    assert not (tmp_path / "out" / "model.bin").exists()
    assert [p.name for p in (tmp_path / "out").iterdir()] in ([], ["cfg.json"])
    assert not blob.exists()
    assert [p.name.split(".")[0] for p in (store_path / "corrupt").iterdir()] == [digest]
    rc, out, _ = cli("fsck")
    assert rc == 1 and str(blob) in out

    # A new version holding the same file puts a good copy back, for both versions.
    (src / "extra.txt").write_text("new file\n")
    assert ok(cli("put", src, "-n", "model", "-t", "model")).strip() == "model:v1"
    assert blob.read_bytes() == files["model.bin"]
    assert "ok:" in ok(cli("fsck"))
    ok(cli("get", "model:v0", "--root", tmp_path / "again"))
    assert read_tree(tmp_path / "again") == files


# -- gc --------------------------------------------------------------------------------------


SHARED = b"shared by every version\n" * 200


def _three_versions(log) -> list[Artifact]:
    return [
        log("ds", {"shared.txt": SHARED, f"only{i}.bin": os.urandom(4000 + i)}) for i in range(3)
    ]


def test_gc_removes_a_deleted_versions_objects_and_keeps_shared_blobs(
    cli: Cli, log, store_path: Path, tmp_path: Path
) -> None:
    v0, v1, v2 = _three_versions(log)
    only1 = obj(store_path, "blobs", digests(v1)["only1.bin"])
    shared = obj(store_path, "blobs", digests(v1)["shared.txt"])
    ok(cli("rm", "ds:v1"))
    before = snapshot(store_path)

    # A dry run says what would go and removes nothing.
    data = json.loads(ok(cli("gc", "--grace", "0", "--dry-run", "--json")))
    assert data["dry_run"] is True
    assert data["removed"] == {"blobs": 1, "manifests": 1, "commits": 1}
    assert data["freed_bytes"] > 4000
    out = ok(cli("gc", "--grace", "0", "--dry-run"))
    assert out.startswith("would free ") and "1 blobs" in out and "1 commits" in out
    assert snapshot(store_path) == before

    out = ok(cli("gc", "--grace", "0"))
    assert out.startswith("freed ") and "KiB" in out
    assert "1 blobs, 1 commits, 1 manifests" in out
    assert not only1.exists()
    assert not obj(store_path, "manifests", v1.digest).exists()
    assert not obj(store_path, "commits", v1.id).exists()
    assert shared.exists()
    for v in (v0, v2):
        assert obj(store_path, "commits", v.id).exists()
        assert obj(store_path, "manifests", v.digest).exists()
        for d in digests(v).values():
            assert obj(store_path, "blobs", d).exists()
    assert "ok:" in ok(cli("fsck"))
    for v in ("v0", "v2"):
        root = tmp_path / f"out-{v}"
        ok(cli("get", f"ds:{v}", "--root", root))
        assert read_tree(root)["shared.txt"] == SHARED
    # A second gc has nothing left to do.
    assert json.loads(ok(cli("gc", "--grace", "0", "--json")))["removed"] == {}


def test_gc_keeps_young_unreferenced_objects_by_default(
    cli: Cli, log, store_path: Path
) -> None:
    _v0, v1, _v2 = _three_versions(log)
    ok(cli("rm", "ds:v1"))
    before = snapshot(store_path)
    data = json.loads(ok(cli("gc", "--json")))
    assert data["removed"] == {} and data["freed_bytes"] == 0
    assert data["kept_young"] == 3
    assert snapshot(store_path) == before
    assert obj(store_path, "blobs", digests(v1)["only1.bin"]).exists()
    out = ok(cli("gc"))
    assert "freed 0 B: nothing; kept 3 young" in out
    # With a grace period the objects have outlived, they go.
    time.sleep(1.2)
    data = json.loads(ok(cli("gc", "--grace", "1", "--json")))
    assert data["removed"] == {"blobs": 1, "manifests": 1, "commits": 1}


def test_gc_keeps_blobs_of_pending_contributions(
    cli: Cli, store: Store, store_path: Path, tmp_path: Path
) -> None:
    files = {f"part/{i}.bin": os.urandom(2000 + i) for i in range(5)}
    src = write_tree(tmp_path / "contrib", files)
    run = artstore.init(group="g1", store=store)
    art = Artifact("collab", "dataset")
    art.add_dir(src)
    run.upsert_artifact(art, distributed_id="pending1")
    blobs = [obj(store_path, "blobs", h(data)) for data in files.values()]
    assert all(b.exists() for b in blobs)
    # Age them far past any grace period: only the contribution keeps them alive.
    then = time.time() - 7 * 86400
    for b in blobs:
        os.utime(b, (then, then))
    # Control: an aborted contribution's blobs are garbage and do go.
    junk = write_tree(tmp_path / "junk", {"junk.bin": os.urandom(3000)})
    art2 = Artifact("collab", "dataset")
    art2.add_dir(junk)
    run.upsert_artifact(art2, distributed_id="aborted1")
    junk_blob = obj(store_path, "blobs", h((junk / "junk.bin").read_bytes()))
    assert store.staging.abort("collab", "aborted1") == 1

    data = json.loads(ok(cli("gc", "--grace", "0", "--json")))
    assert data["removed"].get("blobs") == 1
    assert not junk_blob.exists()
    assert all(b.exists() for b in blobs)
    assert "ok:" in ok(cli("fsck"))

    done = run.finish_artifact(Artifact("collab", "dataset"), distributed_id="pending1")
    assert done.version == "v0"
    run.finish()
    ok(cli("gc", "--grace", "0"))
    root = tmp_path / "out"
    Store(store_path).artifact("collab:v0").download(root)
    assert read_tree(root) == files


def test_reusing_an_unreferenced_blob_refreshes_its_age(
    log, store_path: Path, tmp_path: Path
) -> None:
    """FORMAT.md section 6: a blob that already exists has its modification time refreshed.

    That is what keeps gc (whatever its grace period) from deleting a blob that a put in
    progress reuses: here the blobs of a deleted version, last written ten minutes ago.
    """
    small = os.urandom(5000)
    big = os.urandom(2 * 1024 * 1024)  # above the streaming threshold
    src = write_tree(tmp_path / "src", {"small.bin": small, "big.bin": big})
    _age(src)  # the stat cache trusts these files: the cached path is taken on reuse
    art = Artifact("ds", "dataset")
    art.add_dir(src)
    art.save(Store(store_path))
    log("ds", {"other.txt": "other"})
    Store(store_path).delete_version("ds:v0")
    blobs = [obj(store_path, "blobs", h(small)), obj(store_path, "blobs", h(big))]
    then = time.time() - 600
    for b in blobs:
        os.utime(b, (then, then))

    # Reuse through the stat cache (same files), then through fresh copies of the bytes.
    again = Artifact("ds", "dataset")
    again.add_dir(src)
    again.save(Store(store_path))
    assert again.version == "v2"
    ages = {b.name: time.time() - b.stat().st_mtime for b in blobs}
    assert all(age < 60 for age in ages.values()), f"reused blobs not refreshed: {ages}"

    for b in blobs:
        os.utime(b, (then, then))
    log("ds", {"copy/small.bin": small, "copy/big.bin": big})
    ages = {b.name: time.time() - b.stat().st_mtime for b in blobs}
    assert all(age < 60 for age in ages.values()), f"reused blobs not refreshed: {ages}"


# -- rm ----------------------------------------------------------------------------------------


def test_rm_refuses_a_version_with_aliases_unless_told(
    cli: Cli, log, store_path: Path
) -> None:
    log("ds", {"f.txt": "zero"}, aliases=("best",))
    log("ds", {"f.txt": "one"})
    for spec, alias in (("ds:v0", "best"), ("ds:best", "best"), ("ds:v1", "latest"),
                        ("ds:latest", "latest")):
        rc, out, err = cli("rm", spec)
        assert rc == 1, (spec, out, err)
        line = one_error_line(err)
        assert alias in line and "--delete-aliases" in line
    assert [a.version for a in Store(store_path).versions("ds")] == ["v0", "v1"]
    with pytest.raises(InvalidInputError):
        Store(store_path).delete_version("ds:v0")

    assert ok(cli("rm", "ds:v0", "--delete-aliases")).strip() == "deleted ds:v0"
    store = Store(store_path)
    assert [a.version for a in store.versions("ds")] == ["v1"]
    assert "best" not in store.read_refs("ds").aliases
    rc, _out, err = cli("get", "ds:best")
    assert rc == 1 and "no alias 'best'" in one_error_line(err)
    rc, _out, err = cli("get", "ds:v0")
    assert rc == 1 and "v0" in one_error_line(err) and "deleted" in one_error_line(err)


def test_rm_of_latest_moves_latest_back_and_numbers_are_never_reused(
    cli: Cli, log, store_path: Path, tmp_path: Path
) -> None:
    for i in range(3):
        log("ds", {"f.txt": f"content {i}"})
    ok(cli("rm", "ds:v2", "--delete-aliases"))
    store = Store(store_path)
    assert store.artifact("ds:latest").version == "v1"
    assert store.artifact("ds").aliases == ["latest"]
    assert [a.version for a in store.versions("ds")] == ["v0", "v1"]
    # The content of the deleted v2, put again, is a new version v3: numbers never come back.
    src = write_tree(tmp_path / "again", {"f.txt": "content 2"})
    assert ok(cli("put", src, "-n", "ds")).strip() == "ds:v3"
    write_tree(src, {"f.txt": "content 4"})
    assert ok(cli("put", src, "-n", "ds")).strip() == "ds:v4"
    ok(cli("rm", "ds:v4", "--delete-aliases"))
    ok(cli("rm", "ds:v3", "--delete-aliases"))
    assert Store(store_path).artifact("ds").version == "v1"
    write_tree(src, {"f.txt": "content 5"})
    assert ok(cli("put", src, "-n", "ds")).strip() == "ds:v5"
    listing = ok(cli("ls", "ds"))
    assert [line.split("\t")[0] for line in listing.strip().splitlines()] == ["v0", "v1", "v5"]


def test_rm_without_a_version_is_refused(cli: Cli, log, store_path: Path) -> None:
    """``rm NAME`` must not quietly delete the latest version: the API demands NAME:vN."""
    log("ds", {"f.txt": "zero"})
    log("ds", {"f.txt": "one"})
    with pytest.raises(InvalidInputError):
        Store(store_path).delete_version("ds", delete_aliases=True)
    rc, out, err = cli("rm", "ds", "--delete-aliases")
    assert rc in (1, 2), (rc, out, err)
    assert "Traceback" not in err
    assert [a.version for a in Store(store_path).versions("ds")] == ["v0", "v1"]


# -- retention ---------------------------------------------------------------------------------


def test_retention_keep_last_2_keeps_aliased_and_newest(
    cli: Cli, log, store_path: Path, tmp_path: Path
) -> None:
    versions = []
    for i in range(5):
        versions.append(log("ds", {"shared.txt": SHARED, f"only{i}.bin": os.urandom(3000 + i)},
                            aliases=("best",) if i == 1 else ()))
    only = [obj(store_path, "blobs", digests(v)[f"only{i}.bin"]) for i, v in enumerate(versions)]
    shared = obj(store_path, "blobs", h(SHARED))

    assert "keep all" in ok(cli("retention", "ds"))
    out = ok(cli("retention", "ds", "--keep-last", "2"))
    assert "keep the last 2 version(s)" in out
    assert json.loads(ok(cli("retention", "ds", "--json"))) == {"name": "ds", "keep_last": 2}

    before = snapshot(store_path)
    out = ok(cli("gc", "--grace", "0", "--dry-run"))
    assert "would delete ds:v0 (retention)" in out and "would delete ds:v2 (retention)" in out
    assert "ds:v1" not in out and "ds:v3" not in out
    assert snapshot(store_path) == before

    data = json.loads(ok(cli("gc", "--grace", "0", "--json")))
    assert sorted(data["versions_deleted"]) == ["ds:v0", "ds:v2"]
    assert data["removed"]["blobs"] == 2
    store = Store(store_path)
    assert [a.version for a in store.versions("ds")] == ["v1", "v3", "v4"]
    assert store.artifact("ds:best").version == "v1"
    assert store.artifact("ds:latest").version == "v4"
    assert not only[0].exists() and not only[2].exists()
    assert only[1].exists() and only[3].exists() and only[4].exists()
    assert shared.exists()
    assert "ok:" in ok(cli("fsck"))
    for i in (1, 3, 4):
        root = tmp_path / f"out{i}"
        ok(cli("get", f"ds:v{i}", "--root", root))
        assert read_tree(root) == {"shared.txt": SHARED, f"only{i}.bin": only[i].read_bytes()}

    # The rule keeps applying: one more version pushes v3 out; clearing it stops that.
    log("ds", {"shared.txt": SHARED, "only5.bin": b"five"})
    ok(cli("gc", "--grace", "0"))
    assert [a.version for a in Store(store_path).versions("ds")] == ["v1", "v4", "v5"]
    assert "keep all" in ok(cli("retention", "ds", "--clear"))
    log("ds", {"shared.txt": SHARED, "only6.bin": b"six"})
    ok(cli("gc", "--grace", "0"))
    assert [a.version for a in Store(store_path).versions("ds")] == ["v1", "v4", "v5", "v6"]


# -- gc while others write ---------------------------------------------------------------------

GC_LOOP = r"""
import json, sys, time
import artstore
store_path, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
store = artstore.Store(store_path)
deadline = time.monotonic() + seconds
runs, removed = 0, {}
while time.monotonic() < deadline:
    report = store.gc(grace=2)
    runs += 1
    for k, n in report.removed.items():
        removed[k] = removed.get(k, 0) + n
    time.sleep(0.01)
with open(out, "w") as f:
    json.dump({"runs": runs, "removed": removed}, f)
"""

WRITER = r"""
import json, os, random, sys, time
from pathlib import Path
import xxhash
import artstore

store_path, me, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
logdir, work = Path(sys.argv[4]), Path(sys.argv[5])
rng = random.Random(me)
store = artstore.Store(store_path)
run = artstore.init(project="gc-race", store=store)
# Content reused across writers and versions (never deleted with the version that had it).
POOL = [random.Random(1000 + k).randbytes(8000 + 500 * k) for k in range(6)]
BIG = random.Random(99).randbytes(1536 * 1024)  # above the 1 MiB streaming threshold
deadline = time.monotonic() + seconds
counter = 0
retired = []   # content of versions this writer deleted: reused later on purpose
pending = []   # (distributed id, files, upserted at)
done = {"puts": 0, "finishes": 0, "deletes": 0}

def fresh_dir(files):
    global counter
    counter += 1
    d = work / f"w{me}-{counter}"
    for rel, data in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return d

def record(name, version, files, kind, took=None):
    entry = {"name": name, "version": version, "kind": kind, "writer": me, "took": took,
             "files": {p: xxhash.xxh3_128_hexdigest(b) for p, b in files.items()}}
    (logdir / f"{name}-{version}.json").write_text(json.dumps(entry))

def content():
    files = {f"u/{me}-{counter}-{i}.bin": rng.randbytes(rng.randint(1, 30000))
             for i in range(rng.randint(1, 4))}
    for k in rng.sample(range(len(POOL)), 2):
        files[f"pool/{k}.bin"] = POOL[k]
    if rng.random() < 0.3:
        files["big.bin"] = BIG if rng.random() < 0.5 else rng.randbytes(1200 * 1024)
    if retired and rng.random() < 0.5:
        old = retired.pop(rng.randrange(len(retired)))
        files.update({"again/" + p: b for p, b in old.items()})
    return files

while time.monotonic() < deadline:
    roll = rng.random()
    if roll < 0.2 and len(pending) < 3:
        did = f"w{me}-d{counter}"
        for part in range(2):  # two contributions from this writer
            files = {f"part{part}/" + p: b for p, b in content().items()}
            art = artstore.Artifact("collab", "dataset")
            art.add_dir(fresh_dir(files))
            run.upsert_artifact(art, distributed_id=did)
            pending.append((did, files, time.monotonic()))
    elif pending and time.monotonic() - pending[0][2] > 2.5:
        # Finish only once the staged blobs are older than gc's grace period.
        did = pending[0][0]
        files = {}
        for d, f, _t in [p for p in pending if p[0] == did]:
            files.update(f)
        pending = [p for p in pending if p[0] != did]
        art = run.finish_artifact(artstore.Artifact("collab", "dataset"), distributed_id=did)
        record("collab", art.version, files, "finish")
        done["finishes"] += 1
    elif roll < 0.3 and done["puts"] > 2:
        # Delete one of my own earlier versions; its unique content is reused later.
        mine = sorted(logdir.glob(f"mine{me}-*.json"))
        if mine:
            entry = json.loads(mine[0].read_text())
            mine[0].unlink()
            store.delete_version(f"{entry['name']}:{entry['version']}", delete_aliases=True)
            (logdir / f"{entry['name']}-{entry['version']}.json").unlink()
            retired.append({p: bytes.fromhex(h) for p, h in entry["raw"].items()})
            done["deletes"] += 1
    else:
        name = rng.choice(["common", f"solo{me}"])
        files = content()
        art = artstore.Artifact(name, "dataset")
        art.add_dir(fresh_dir(files))
        t0 = time.monotonic()
        art = run.log_artifact(art)
        took = time.monotonic() - t0
        record(name, art.version, files, "put", took)
        small = {p: b.hex() for p, b in files.items() if len(b) < 40000}
        (logdir / f"mine{me}-{time.time_ns():020d}.json").write_text(
            json.dumps({"name": name, "version": art.version, "raw": small}))
        done["puts"] += 1
for did in sorted({p[0] for p in pending}):
    files = {}
    for d, f, _t in [p for p in pending if p[0] == did]:
        files.update(f)
    art = run.finish_artifact(artstore.Artifact("collab", "dataset"), distributed_id=did)
    record("collab", art.version, files, "finish")
    done["finishes"] += 1
run.finish()
print(json.dumps(done))
"""


def test_gc_loop_racing_writers_loses_nothing(store_path: Path, tmp_path: Path) -> None:
    Store.init(store_path)
    logdir = tmp_path / "logs"
    work = tmp_path / "work"
    logdir.mkdir()
    work.mkdir()
    seconds = 40.0
    env = dict(os.environ)
    gc_out = tmp_path / "gc.json"
    gc_proc = subprocess.Popen(
        [sys.executable, "-c", GC_LOOP, str(store_path), str(seconds + 6), str(gc_out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store_path), str(i), str(seconds), str(logdir),
             str(work)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(3)
    ]
    procs = [gc_proc, *writers]
    try:
        results = [p.communicate(timeout=seconds + 60) for p in writers]
        gc_result = gc_proc.communicate(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (out, err) in zip(writers, results):
        assert p.returncode == 0, f"writer failed:\n{out}\n{err}"
    assert gc_proc.returncode == 0, f"gc loop failed:\n{gc_result[0]}\n{gc_result[1]}"
    stats = [json.loads(out.strip().splitlines()[-1]) for out, _err in results]
    gc_stats = json.loads(gc_out.read_text())
    assert gc_stats["runs"] >= 20, gc_stats
    assert sum(s["puts"] for s in stats) >= 30, stats
    assert sum(s["finishes"] for s in stats) >= 3, stats
    # gc did real work during the run (objects of deleted versions), not just nothing.
    assert sum(s["deletes"] for s in stats) >= 1, stats

    store = Store(store_path)
    report = store.fsck()

    expected = {}
    for f in logdir.glob("*.json"):
        if f.name.startswith("mine"):
            continue
        entry = json.loads(f.read_text())
        expected[(entry["name"], entry["version"])] = entry
    in_store = {(n, a.version) for n in store.artifact_names() for a in store.versions(n)}
    assert in_store == set(expected), (in_store ^ set(expected))

    # The grace period bounds how long a put may take; a put slower than it (the machine
    # was overloaded, e.g. a slow filesystem flush) is outside the guarantee.
    slow = {k for k, e in expected.items() if e["took"] is not None and e["took"] >= 1.9}
    fast_puts = [e for e in expected.values() if e["kind"] == "put" and e["took"] < 1.0]
    assert len(fast_puts) >= 30, f"too few fast puts ({len(fast_puts)}): machine overloaded?"
    lost, excused = [], []
    for (name, version), entry in sorted(expected.items()):
        art = store.artifact(f"{name}:{version}")
        problem = None
        if digests(art) != entry["files"]:
            problem = "manifest differs from what its writer logged"
        else:
            root = tmp_path / "check" / f"{name}-{version}"
            try:
                art.download(root)
            except artstore.ArtstoreError as exc:
                problem = str(exc)
            else:
                if {p: h(b) for p, b in read_tree(root).items()} != entry["files"]:
                    problem = "downloaded files differ"
        if problem:
            label = f"{name}:{version} ({entry['kind']}, took {entry['took']}): {problem}"
            (excused if (name, version) in slow else lost).append(label)
    assert lost == [], "\n".join(lost)
    assert report.errors == [] or excused, report.errors


FINISH_RACE = r"""
import json, sys, time
import artstore
store_path, dids = sys.argv[1], sys.argv[2].split(",")
store = artstore.Store(store_path)
run = artstore.init(project="finish-race", store=store)
for did in dids:
    art = run.finish_artifact(artstore.Artifact("collab", "dataset"), distributed_id=did)
    print(json.dumps({"did": did, "version": art.version}), flush=True)
    time.sleep(0.37)
run.finish()
"""


def test_finish_while_gc_marks_keeps_the_finished_files(
    store: Store, store_path: Path, tmp_path: Path
) -> None:
    """A finish that moves staged files into a version while gc is marking loses none.

    A big pending version (many staged entries, read by gc before the one being finished)
    makes gc's marking take a while; the finished contributions were staged longer ago than
    the grace period, so only gc's marking keeps their blobs.
    """
    run = artstore.init(project="finish-race", store=store)
    big = Artifact("aaa-big", "dataset")
    for i in range(40000):
        big.add_reference(f"s3://bucket/shard-{i:06d}.tar", name=f"shards/{i:06d}.tar",
                          checksum=False)
    run.upsert_artifact(big, distributed_id="big")
    expected = {}
    dids = [f"d{i:02d}" for i in range(12)]
    for did in dids:
        files = {f"{did}/{k}.bin": os.urandom(1000 + k) for k in range(3)}
        art = Artifact("collab", "dataset")
        art.add_dir(write_tree(tmp_path / "src" / did, files))
        run.upsert_artifact(art, distributed_id=did)
        expected[did] = files
    time.sleep(2.5)  # every staged blob is now older than the 2 s grace period

    gc_out = tmp_path / "gc.json"
    gc_proc = subprocess.Popen(
        [sys.executable, "-c", GC_LOOP, str(store_path), "12", str(gc_out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.0)
        fin = subprocess.run([sys.executable, "-c", FINISH_RACE, str(store_path), ",".join(dids)],
                             capture_output=True, text=True, timeout=120, check=False)
        gc_result = gc_proc.communicate(timeout=60)
    finally:
        if gc_proc.poll() is None:
            gc_proc.kill()
            gc_proc.communicate()
    assert fin.returncode == 0, fin.stderr
    assert gc_proc.returncode == 0, gc_result[1]
    assert json.loads(gc_out.read_text())["runs"] >= 3
    versions = {json.loads(line)["did"]: json.loads(line)["version"]
                for line in fin.stdout.splitlines()}
    assert sorted(versions) == dids

    fresh = Store(store_path)
    lost = []
    for did, version in versions.items():
        art = fresh.artifact(f"collab:{version}")
        for path in expected[did]:
            d = art.manifest[path].digest
            if not obj(store_path, "blobs", d).exists():
                lost.append(f"collab:{version} ({did}): blob of {path} was deleted by gc")
    assert lost == [], "\n".join(lost)
    report = fresh.fsck()
    assert report.errors == [], report.errors
