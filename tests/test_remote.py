"""Remotes: offline work pushed later, pulls into empty stores, partial downloads.

The remotes are a real S3-compatible server (SeaweedFS on loopback) and a second store
directory; every command runs through the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import h, ok, one_error_line, read_tree, run_cli_process, write_tree

from artstore import Store
from artstore._ingest import blob_key


@pytest.fixture(params=["s3", "fs"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "fs":
        return str(tmp_path / "remote-store")
    return str(request.getfixturevalue("s3_url"))


def _blobs(store: Store) -> set[str]:
    return {a + b for a in store.backend.list("blobs") for b in store.backend.list(f"blobs/{a}")}


def test_offline_versions_pushed_then_pulled_into_an_empty_store(
    cli, tmp_path: Path, remote_url: str
) -> None:
    v0 = {"train.csv": "a,b\n1,2\n", "img/0.png": os.urandom(200_000), "same.txt": "same"}
    src = write_tree(tmp_path / "data", v0)
    assert ok(cli("put", src, "-n", "ds")).strip() == "ds:v0"
    (src / "train.csv").write_text("a,b\n1,2\n3,4\n")
    (src / "copy.txt").write_text("same")  # the same bytes as same.txt: one blob
    assert ok(cli("put", src, "-n", "ds", "-a", "best")).strip() == "ds:v1"
    v1 = read_tree(src)

    ok(cli("remote", "add", "origin", remote_url))
    out = ok(cli("push", "--json"))
    rows = json.loads(out)
    assert [(r["version"], r["remote_version"], r["new"]) for r in rows] == [
        ("v0", "v0", True), ("v1", "v1", True)]
    assert rows[0]["blobs_sent"] == 3 and rows[1]["blobs_sent"] == 1  # only what it lacked

    remote = Store(remote_url)
    assert remote.fsck().ok
    assert len(_blobs(remote)) == 4  # same.txt and copy.txt share one blob
    assert remote.artifact("ds:best").version == "v1"
    # The remote's content is each local version's, file for file.
    local = Store(os.environ["ARTSTORE_DIR"])
    for v in ("v0", "v1"):
        assert [(e.path, e.digest) for e in remote.artifact(f"ds:{v}").files()] == \
               [(e.path, e.digest) for e in local.artifact(f"ds:{v}").files()]

    # A second push sends nothing and makes no version.
    again = json.loads(ok(cli("push", "--json")))
    assert [(r["new"], r["blobs_sent"]) for r in again] == [(False, 0), (False, 0)]
    assert len(remote.versions("ds")) == 2

    # Pull into an empty store on another "machine".
    other = tmp_path / "other-store"
    env = {**os.environ, "ARTSTORE_DIR": str(other)}
    ok(run_cli_process("remote", "add", "origin", remote_url, env=env))
    ok(run_cli_process("pull", env=env))
    for v, files in (("v0", v0), ("v1", v1)):
        out_dir = tmp_path / f"out-{v}"
        ok(run_cli_process("get", f"ds:{v}", "--root", out_dir, env=env))
        assert read_tree(out_dir) == {k: v.encode() if isinstance(v, str) else v
                                      for k, v in files.items()}
    assert Store(other).artifact("ds:best").version == "v1"
    assert Store(other).fsck().ok
    # Pulling again fetches nothing.
    rows = json.loads(ok(run_cli_process("pull", "--json", env=env)))
    assert all(not r["new"] and r["blobs_sent"] == 0 for r in rows)


def test_push_never_renumbers_versions_made_on_the_remote(cli, tmp_path: Path, remote_url: str) -> None:
    for i in range(2):
        f = tmp_path / f"theirs{i}.txt"
        f.write_text(f"made on the remote {i}")
        ok(cli("put", f, "-n", "shared", "--store", remote_url))
    mine = tmp_path / "mine.txt"
    mine.write_text("made offline")
    assert ok(cli("put", mine, "-n", "shared")).strip() == "shared:v0"
    ok(cli("remote", "add", "team", remote_url))
    assert "shared:v0 -> team shared:v2" in ok(cli("push", "shared:v0"))
    remote = Store(remote_url)
    assert [v.files()[0].digest for v in remote.versions("shared")] == [
        h(b"made on the remote 0"), h(b"made on the remote 1"), h(b"made offline")]
    local = Store(os.environ["ARTSTORE_DIR"])
    from artstore._remote import version_map

    assert version_map(local, remote, "shared") == {0: 2}


#: argv: READY GO STORE FILE.  Waits for GO, then pushes a fresh version of "both".
PUSHER = r"""
import os, sys, time
from artstore.cli import main
ready, go, store, path = sys.argv[1:5]
open(ready, "x").close()
while not os.path.exists(go):
    time.sleep(0.001)
sys.exit(main(["--store", store, "push", "both", "--json"]))
"""


def test_two_machines_pushing_at_once_both_land(tmp_path: Path, remote_url: str) -> None:
    from test_concurrency import run_together

    commands = []
    for m in range(2):
        store = tmp_path / f"machine{m}"
        f = tmp_path / f"m{m}.bin"
        f.write_bytes(os.urandom(100_000) + f"machine {m}".encode())
        env = {**os.environ, "ARTSTORE_DIR": str(store)}
        ok(run_cli_process("put", f, "-n", "both", env=env))
        ok(run_cli_process("remote", "add", "origin", remote_url, env=env))
        commands.append([str(store), str(f)])
    results = run_together(commands, tmp_path / "barrier", tmp_path, script=PUSHER)
    numbers = []
    for rc, out, err in results:
        assert rc == 0, err
        (row,) = json.loads(out)
        numbers.append(row["remote_version"])
    assert sorted(numbers) == ["v0", "v1"]
    remote = Store(remote_url)
    digests = {v.files()[0].digest for v in remote.versions("both")}
    assert digests == {h((tmp_path / f"m{m}.bin").read_bytes()) for m in range(2)}
    assert remote.fsck().ok


def test_push_of_a_damaged_blob_commits_nothing(cli, tmp_path: Path, remote_url: str) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(os.urandom(300_000))
    ok(cli("put", f, "-n", "model"))
    local = Store(os.environ["ARTSTORE_DIR"])
    path = local.backend.local_path(blob_key(h(f.read_bytes())))
    os.chmod(path, 0o644)
    with open(path, "r+b") as g:
        g.write(b"X")
    ok(cli("remote", "add", "origin", remote_url))
    rc, _out, err = cli("push")
    assert rc == 1
    assert "not to the blob's name" in one_error_line(err)
    remote = Store(remote_url)
    assert remote.read_refs("model") is None
    assert _blobs(remote) == set()


def test_partial_download_fetches_only_the_matching_blobs(cli, tmp_path: Path, s3_url: str) -> None:
    files = {f"shard{i}/part-{j}.bin": os.urandom(300_000) for i in range(3) for j in range(4)}
    src = write_tree(tmp_path / "src", files)
    ok(cli("put", src, "-n", "big", "--store", s3_url))
    cache = Path(os.environ["ARTSTORE_CACHE_DIR"]) / "blobs"
    ok(cli("remote", "add", "origin", s3_url))
    out = tmp_path / "out"
    ok(cli("get", "big", "--remote", "origin", "--include", "shard1/*", "--root", out))
    assert read_tree(out) == {k: v for k, v in files.items() if k.startswith("shard1/")}
    cached = {p.parent.name + p.name for p in cache.glob("*/*")}
    assert cached == {h(v) for k, v in files.items() if k.startswith("shard1/")}
    assert "ok:" in ok(cli("verify", "big", out, "--remote", "origin", "--include", "shard1/*"))
    (out / "shard1" / "part-0.bin").write_bytes(b"changed")
    rc, stdout, _err = cli("verify", "big", out, "--remote", "origin", "--include", "shard1/*")
    assert rc == 1 and stdout.strip() == "shard1/part-0.bin: size 7, expected 300000"
    rc, stdout, _err = cli("verify", "big", out, "--remote", "origin")
    assert rc == 1 and "shard0/part-0.bin: missing" in stdout


def test_download_larger_than_the_cache_keeps_the_cache_bounded(
    cli, tmp_path: Path, s3_url: str
) -> None:
    files = {f"f{i}.bin": os.urandom(400_000) for i in range(10)}  # 4 MB
    src = write_tree(tmp_path / "src", files)
    ok(cli("put", src, "-n", "big", "--store", s3_url))
    out = tmp_path / "out"
    ok(cli("get", "big", "--store", s3_url, "--root", out, "--cache-size", "1M"))
    assert read_tree(out) == files
    cache = Path(os.environ["ARTSTORE_CACHE_DIR"]) / "blobs"
    total = sum(p.stat().st_size for p in cache.glob("*/*"))
    assert 0 < total <= 1024 * 1024


def test_damaged_remote_blob_is_refused_on_download(cli, tmp_path: Path, s3_url: str) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(os.urandom(50_000))
    ok(cli("put", f, "-n", "x", "--store", s3_url))
    remote = Store(s3_url)
    remote.backend.publish(blob_key(h(f.read_bytes())), b"not the bytes")
    rc, _out, err = cli("get", "x", "--store", s3_url, "--root", tmp_path / "out")
    assert rc == 1
    assert "hash to" in one_error_line(err)
    cache = Path(os.environ["ARTSTORE_CACHE_DIR"]) / "blobs"
    assert list(cache.glob("*/*")) == []  # nothing damaged was cached


def test_remote_commands_refuse_bad_input(cli, tmp_path: Path) -> None:
    target = str(tmp_path / "r1")
    assert ok(cli("remote", "add", "r1", target)).strip() == f"r1\t{target}"
    rc, _out, err = cli("remote", "add", "r1", str(tmp_path / "elsewhere"))
    assert rc == 1 and "already exists" in one_error_line(err)
    rc, _out, err = cli("push", "--remote", "nope")
    assert rc == 1 and "no remote named 'nope'" in one_error_line(err)
    ok(cli("remote", "add", "r2", str(tmp_path / "r2")))
    f = tmp_path / "a.txt"
    f.write_text("a")
    ok(cli("put", f, "-n", "a"))
    rc, _out, err = cli("push")
    assert rc == 1 and "choose one with --remote" in one_error_line(err)
    rc, _out, err = cli("remote", "add", "r3", "ftp://host/x")
    assert rc == 1 and "unknown scheme 'ftp'" in one_error_line(err)
    rc, _out, err = cli("get", "a", "--cache-size", "lots")
    assert rc == 2 and "cannot read 'lots' as a size" in err
    assert json.loads(ok(cli("remote", "ls", "--json"))) == [
        {"name": "r1", "url": target}, {"name": "r2", "url": str(tmp_path / "r2")}]
    ok(cli("remote", "rm", "r2"))
    assert "r2" not in ok(cli("remote", "ls"))


def test_work_offline_then_push_fails_cleanly_without_the_network(cli, tmp_path: Path,
                                                                   monkeypatch) -> None:
    # A remote on a port nothing listens on: local work does not notice it.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    ok(cli("remote", "add", "origin", "s3://bucket/offline"))
    f = tmp_path / "a.txt"
    f.write_text("offline work")
    assert ok(cli("put", f, "-n", "a")).strip() == "a:v0"
    ok(cli("get", "a", "--root", tmp_path / "out"))
    proc = subprocess.run([sys.executable, "-m", "artstore", "push"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert line.startswith("artstore: error: cannot reach http://127.0.0.1:9 for s3://bucket/offline")
    assert Store(os.environ["ARTSTORE_DIR"]).artifact("a").version == "v0"


def test_push_of_many_blobs_sends_only_the_missing_ones(cli, tmp_path: Path, s3_url: str) -> None:
    files = {f"d{i % 7}/f{i}.txt": f"file {i}\n" for i in range(450)}
    src = write_tree(tmp_path / "src", files)
    ok(cli("put", src, "-n", "many"))
    ok(cli("remote", "add", "origin", s3_url))
    # Half of the blobs are there already (another push of an overlapping version).
    half = write_tree(tmp_path / "half", {k: v for k, v in list(files.items())[:225]})
    ok(cli("put", half, "-n", "half"))
    (row,) = json.loads(ok(cli("push", "half", "--json")))
    assert row["blobs_sent"] == 225
    (row,) = json.loads(ok(cli("push", "many", "--json")))
    assert row["blobs_sent"] == 225  # found by listing the remote's blobs, not asking each
    out = tmp_path / "out"
    ok(cli("get", "many", "--store", s3_url, "--root", out))
    assert read_tree(out) == {k: v.encode() for k, v in files.items()}


def test_object_storage_errors_are_one_line_with_the_fix(cli, tmp_path: Path, s3_url: str,
                                                         monkeypatch) -> None:
    bucketless = "s3://no-such-bucket/x"
    f = tmp_path / "a.txt"
    f.write_text("a")
    rc, _out, err = cli("put", f, "-n", "a", "--store", bucketless)
    assert rc == 1 and "NoSuchBucket" in one_error_line(err) and "create the bucket" in err
    rc, _out, err = cli("init", "--shared", s3_url)
    assert rc == 1 and "--shared is for stores on a filesystem" in one_error_line(err)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    rc, _out, err = cli("ls", "--store", s3_url)
    assert rc == 1 and "403" in one_error_line(err) and "AWS_SECRET_ACCESS_KEY" in err
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws files either
    rc, _out, err = cli("ls", "--store", s3_url)
    assert rc == 1 and "no S3 credentials" in one_error_line(err)
    rc, _out, err = cli("ls", "--store", "s3://")
    assert rc == 1 and "no bucket" in one_error_line(err)


def test_cached_blob_damaged_through_a_hard_link_is_fetched_again(cli, tmp_path: Path,
                                                                  s3_url: str) -> None:
    f = tmp_path / "src" / "w.bin"
    f.parent.mkdir()
    f.write_bytes(os.urandom(100_000))
    ok(cli("put", f.parent, "-n", "w", "--store", s3_url))
    first = tmp_path / "first"
    ok(cli("get", "w", "--store", s3_url, "--root", first, "--mode", "hardlink"))
    linked = first / "w.bin"
    linked.chmod(0o644)
    linked.write_bytes(b"edited through the link")  # edits the cached copy too
    second = tmp_path / "second"
    ok(cli("get", "w", "--store", s3_url, "--root", second))
    assert (second / "w.bin").read_bytes() == f.read_bytes()
    rc, _out, err = cli("get", "w", "--store", s3_url, "--root", tmp_path / "third",
                        "--mode", "symlink")
    assert rc == 1 and "symlinks" in one_error_line(err)
    rc, _out, err = cli("get", "w", "--store", s3_url, "--root", tmp_path / "fourth",
                        "--include", "nothing/*")
    assert rc == 1 and "no entry of w:v0 matches 'nothing/*'" in one_error_line(err)


def test_versions_deleted_on_the_other_side_stay_deleted(cli, tmp_path: Path, remote_url: str) -> None:
    for text in ("one", "two"):
        f = tmp_path / f"{text}.txt"
        f.write_text(text)
        ok(cli("put", f, "-n", "r"))
    ok(cli("remote", "add", "o", remote_url))
    ok(cli("push"))
    ok(cli("rm", "r:v0", "--store", remote_url))
    rows = json.loads(ok(cli("push", "--json")))
    assert [r["new"] for r in rows] == [False, False]
    remote = Store(remote_url)
    assert [v.version for v in remote.versions("r")] == ["v1"]
    assert remote.artifact("r").files()[0].digest == h(b"two")
    # And a pulled version deleted here is not pulled again.
    other = tmp_path / "other"
    env = {**os.environ, "ARTSTORE_DIR": str(other)}
    ok(run_cli_process("remote", "add", "o", remote_url, env=env))
    ok(run_cli_process("pull", env=env))
    ok(run_cli_process("rm", "r:v0", "--delete-aliases", env=env))
    ok(run_cli_process("pull", env=env))
    assert Store(other).versions("r") == []  # nothing came back


def test_aliases_moved_here_are_pushed_and_moves_there_are_kept(cli, tmp_path: Path,
                                                              remote_url: str) -> None:
    for i in range(3):
        f = tmp_path / f"{i}.txt"
        f.write_text(f"content {i}")
        ok(cli("put", f, "-n", "m"))
    ok(cli("remote", "add", "o", remote_url))
    ok(cli("alias", "m:v0", "prod"))
    ok(cli("push"))
    remote = Store(remote_url)
    assert remote.artifact("m:prod").version == "v0"
    ok(cli("alias", "m:v1", "prod"))  # moved here after the push
    ok(cli("push"))
    assert remote.artifact("m:prod").version == "v1"
    ok(cli("alias", "m:v2", "prod", "--store", remote_url))  # a teammate moves it there
    ok(cli("push"))
    assert remote.artifact("m:prod").version == "v2"  # not moved back


#: argv: READY GO.  Pushes everything of the default store.
SAME_STORE_PUSHER = r"""
import os, sys, time
from artstore.cli import main
ready, go = sys.argv[1:3]
open(ready, "x").close()
while not os.path.exists(go):
    time.sleep(0.001)
sys.exit(main(["push", "--json"]))
"""


def test_concurrent_pushes_of_one_store_send_each_version_once(cli, tmp_path: Path,
                                                               s3_url: str) -> None:
    from test_concurrency import run_together

    for i in range(6):
        f = tmp_path / f"v{i}.txt"
        f.write_text(f"version {i}")
        ok(cli("put", f, "-n", "m"))
    ok(cli("remote", "add", "o", s3_url))
    results = run_together([[] for _ in range(4)], tmp_path / "barrier", tmp_path,
                           script=SAME_STORE_PUSHER)
    assert all(rc == 0 for rc, _o, _e in results), [e for _r, _o, e in results]
    remote = Store(s3_url)
    assert [v.files()[0].digest for v in remote.versions("m")] == [
        h(f"version {i}".encode()) for i in range(6)]


def test_a_store_cannot_be_its_own_remote(cli, tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("a")
    ok(cli("put", f, "-n", "a"))
    os.symlink(os.environ["ARTSTORE_DIR"], tmp_path / "link")
    rc, _out, err = cli("remote", "add", "me", tmp_path / "link")
    assert rc == 1 and "this store itself" in one_error_line(err)
    rc, _out, err = cli("remote", "add", "bad name", tmp_path / "x")
    assert rc == 2 and "invalid remote name" in one_error_line(err)


def test_damaged_blob_on_object_storage_is_moved_aside_then_repaired(cli, tmp_path: Path,
                                                                    s3_url: str) -> None:
    f = tmp_path / "src" / "d.bin"
    f.parent.mkdir()
    f.write_bytes(os.urandom(5000))
    ok(cli("put", f.parent, "-n", "d", "--store", s3_url))
    remote = Store(s3_url)
    key = blob_key(h(f.read_bytes()))
    remote.backend.publish(key, b"\0" * 5000)  # same size, other bytes
    rc, _out, err = cli("get", "d", "--store", s3_url, "--root", tmp_path / "out")
    assert rc == 1 and "moved to corrupt/" in one_error_line(err)
    assert not remote.backend.exists(key)
    assert remote.backend.list("corrupt")
    ok(cli("put", f.parent, "-n", "d", "--store", s3_url))  # the same file again repairs it
    ok(cli("get", "d", "--store", s3_url, "--root", tmp_path / "out2"))
    assert (tmp_path / "out2" / "d.bin").read_bytes() == f.read_bytes()


#: argv: STORE ROOT.  Downloads NAME into ROOT with a small cache, then prints "done".
GETTER = r"""
import sys
import artstore
store = artstore.Store(sys.argv[1])
store.cache.limit = 3 * 1024 * 1024
store.artifact(sys.argv[3]).download(sys.argv[2])
print("done")
"""


def test_concurrent_downloads_sharing_a_small_cache_both_succeed(cli, tmp_path: Path,
                                                                s3_url: str) -> None:
    trees = {}
    for name in ("a", "b"):
        files = {f"{name}{i}.bin": os.urandom(512 * 1024) for i in range(16)}
        trees[name] = files
        ok(cli("put", write_tree(tmp_path / f"src-{name}", files), "-n", name,
               "--store", s3_url))
    procs = [subprocess.Popen([sys.executable, "-c", GETTER, s3_url, str(tmp_path / f"out-{n}"), n],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n in ("a", "b") for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "done", err
    for name, files in trees.items():
        assert read_tree(tmp_path / f"out-{name}") == files
    cache = Path(os.environ["ARTSTORE_CACHE_DIR"]) / "blobs"
    assert sum(p.stat().st_size for p in cache.glob("*/*")) <= 3 * 1024 * 1024


def test_malformed_endpoints_are_one_line_errors(cli, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    for endpoint in ("127.0.0.1:9000", "http://127.0.0.1:notaport", "http://127.0.0.1:99999",
                     "http://[::1", "http://a b"):
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        rc, _out, err = cli("ls", "--store", "s3://artstore/x")
        assert rc == 1, endpoint
        assert "is not an http:// or https:// URL" in one_error_line(err), endpoint
