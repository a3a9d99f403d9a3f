"""One contract for every place a store can live: a filesystem directory and S3.

Each test runs twice: on a directory of the local filesystem and on a prefix of a real
S3-compatible server (SeaweedFS on loopback). The first half checks the storage
interface that everything else is built on; the second half checks the store itself
(simple, collaborative and patch versions, many processes at once) through that
interface, with the same assertions on both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import h, read_tree, write_tree
from test_concurrency import run_together

import artstore
from artstore import Store
from artstore._backend import Backend
from artstore._store import store_location
from artstore.errors import ConflictError


@pytest.fixture(params=["fs", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where this test's store lives: a fresh directory, or a fresh S3 prefix."""
    if request.param == "fs":
        where = str(tmp_path / "contract-store")
    else:
        where = request.getfixturevalue("s3_url")
    monkeypatch.setenv("ARTSTORE_DIR", where)
    return where


@pytest.fixture
def backend(location: str) -> Backend:
    return Store(location).backend


# -- the storage interface --------------------------------------------------------------


def test_absent_keys_read_as_absent(backend: Backend) -> None:
    with pytest.raises(FileNotFoundError):
        backend.read("refs/none/000000000001")
    with pytest.raises(FileNotFoundError):
        b"".join(backend.read_chunks("blobs/00/none"))
    assert not backend.exists("a/b")
    assert backend.size("a/b") is None
    assert backend.stat("a/b") is None
    assert backend.list("nothing/here") == []
    backend.delete("a/b")  # deleting what is absent is not an error


def test_create_only_if_absent(backend: Backend) -> None:
    assert backend.create("refs/x/000000000001", b"first")
    assert not backend.create("refs/x/000000000001", b"second")
    assert backend.read("refs/x/000000000001") == b"first"


def test_publish_replaces_and_stat_reports_size_and_store_time(backend: Backend) -> None:
    backend.publish("runs/r1", b"one", readonly=False)
    backend.publish("runs/r1", b"three", readonly=False)
    assert backend.read("runs/r1") == b"three"
    assert backend.size("runs/r1") == 5
    st = backend.stat("runs/r1")
    assert st is not None and st[0] == 5
    assert abs(st[1] - time.time()) < 300  # the store's clock, close to ours here


def test_list_names_direct_children_only(backend: Backend) -> None:
    for key in ("staging/a/d1/c.1", "staging/a/d1/c.2", "staging/a/d2/c.1", "staging/b/x"):
        backend.publish(key, b"x")
    assert sorted(backend.list("staging")) == ["a", "b"]
    assert sorted(backend.list("staging/a")) == ["d1", "d2"]
    assert sorted(backend.list("staging/a/d1")) == ["c.1", "c.2"]
    backend.delete("staging/a/d1/c.1")
    assert backend.list("staging/a/d1") == ["c.2"]


def test_streamed_temp_files_publish_whole(backend: Backend) -> None:
    data = os.urandom(9 * 1024 * 1024 + 17)
    temp = backend.temp()
    for i in range(0, len(data), 1 << 20):
        temp.write(data[i : i + (1 << 20)])
    temp.close()
    assert not backend.exists("blobs/ab/big")  # nothing is visible before publishing
    backend.sync()
    backend.publish_temp(temp, "blobs/ab/big")
    assert backend.read("blobs/ab/big") == data
    assert b"".join(backend.read_chunks("blobs/ab/big")) == data
    small = backend.temp_with(b"small")
    backend.publish_many([(small, "blobs/cd/small")])
    assert backend.read("blobs/cd/small") == b"small"


def test_discarded_temp_file_publishes_nothing(backend: Backend) -> None:
    temp = backend.temp()
    temp.write(b"never")
    temp.discard()
    assert backend.list("blobs") == []


def test_rename_moves(backend: Backend) -> None:
    backend.publish("blobs/ef/one", b"payload")
    backend.rename("blobs/ef/one", "corrupt/one.1")
    assert not backend.exists("blobs/ef/one")
    assert backend.read("corrupt/one.1") == b"payload"


#: argv: LOCATION KEY VALUE READY GO.  Waits for GO, then tries to create KEY; prints 1/0.
CREATE_RACE = r"""
import os, sys, time
from artstore import Store
backend = Store(sys.argv[1]).backend
open(sys.argv[4], "x").close()
while not os.path.exists(sys.argv[5]):
    time.sleep(0.001)
print(int(backend.create(sys.argv[2], sys.argv[3].encode())))
"""


def _race(script: str, arg_lists: list[list[str]], tmp_path: Path) -> list[str]:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    go = barrier / "go"
    procs = []
    for i, args in enumerate(arg_lists):
        ready = barrier / f"ready-{i}"
        procs.append((ready, subprocess.Popen(
            [sys.executable, "-c", script, *args, str(ready), str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    deadline = time.monotonic() + 120
    while not all(r.exists() for r, _p in procs):
        assert time.monotonic() < deadline and all(p.poll() is None for _r, p in procs)
        time.sleep(0.01)
    go.write_text("go")
    outs = []
    for _r, p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(out.strip())
    return outs


def test_racing_creates_have_one_winner(location: str, tmp_path: Path) -> None:
    outs = _race(CREATE_RACE, [[location, "refs/race/000000000001", f"writer {i}"]
                               for i in range(8)], tmp_path)
    assert sorted(outs) == ["0"] * 7 + ["1"]
    winner = outs.index("1")
    assert Store(location).backend.read("refs/race/000000000001") == f"writer {winner}".encode()


#: argv: LOCATION COUNTER ROUNDS.  Read-modify-write of a counter under the store's lock.
COUNTER = r"""
import sys
from artstore import Store
backend = Store(sys.argv[1]).backend
for _ in range(int(sys.argv[3])):
    with backend.lock("counter", timeout=120):
        try:
            n = int(backend.read(sys.argv[2]))
        except FileNotFoundError:
            n = 0
        backend.publish(sys.argv[2], str(n + 1).encode(), readonly=False)
"""


def test_lock_excludes_other_processes(location: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", COUNTER, location, "runs/counter", "15"],
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        _out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    assert int(Store(location).backend.read("runs/counter")) == 60


#: argv: LOCATION.  Takes the lock, says so, and sleeps until killed.
HOLDER = r"""
import sys, time
from artstore import Store
with Store(sys.argv[1]).backend.lock("held", timeout=30):
    print("held", flush=True)
    time.sleep(600)
"""


def test_lock_of_a_killed_holder_is_taken_over(location: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, location],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        backend = Store(location).backend
        with pytest.raises(artstore.errors.LockTimeoutError):
            with backend.lock("held", timeout=0.5):
                pass
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        started = time.monotonic()
        with backend.lock("held", timeout=30):
            pass
        assert time.monotonic() - started < 10  # a dead holder of this host: at once
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


# -- the store on top of it ---------------------------------------------------------------


def test_put_get_verify_round_trip(location: str, tmp_path: Path) -> None:
    files = {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(3 * 1024 * 1024), "sub/c/d": b""}
    src = write_tree(tmp_path / "src", files)
    art = artstore.Artifact("data", "dataset")
    art.add_dir(src)
    art.save()
    assert art.version == "v0"
    again = artstore.Artifact("data", "dataset")
    again.add_dir(src)
    again.save()
    assert again.version == "v0"  # unchanged content makes no new version
    got = Store(location).artifact("data:latest")
    root = got.download(tmp_path / "out")
    assert read_tree(Path(root)) == files
    got.verify(root)
    report = Store(location).fsck()
    assert report.ok and report.blobs_hashed == 3


def test_patch_version_changes_one_file(location: str, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"keep.txt": "keep", "old.txt": "old"})
    art = artstore.Artifact("p", "dataset")
    art.add_dir(src)
    art.save()
    draft = Store(location).artifact("p").new_draft()
    draft.remove("old.txt")
    (tmp_path / "new.txt").write_text("new")
    draft.add_file(tmp_path / "new.txt")
    draft.save()
    v1 = Store(location).artifact("p:v1")
    assert sorted(e.path for e in v1.files()) == ["keep.txt", "new.txt"]


#: argv: LOCATION SHARD FILES.  Upserts FILES files of its own into one distributed id.
UPSERT = r"""
import os, sys, tempfile
import artstore
location, shard, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
src = tempfile.mkdtemp()
for i in range(count):
    with open(os.path.join(src, f"s{shard}-{i}.txt"), "w") as f:
        f.write(f"shard {shard} file {i}\n")
run = artstore.init(project="p", group="job-1", store=location)
art = artstore.Artifact("preds", "predictions")
art.add_dir(src, name=f"shard{shard}")
run.upsert_artifact(art)
run.finish()
"""


def test_eight_processes_upsert_into_one_version(location: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", UPSERT, location, str(s), "25"],
                              stderr=subprocess.PIPE, text=True) for s in range(8)]
    for p in procs:
        _out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    store = Store(location)
    assert store.read_refs("preds") is None  # nothing is visible before finish
    run = artstore.init(group="job-1", store=location)
    art = run.finish_artifact(artstore.Artifact("preds", "predictions"))
    entries = {e.path: e for e in art.files()}
    assert len(entries) == 8 * 25
    for s in range(8):
        for i in range(25):
            assert entries[f"shard{s}/s{s}-{i}.txt"].digest == h(f"shard {s} file {i}\n".encode())
    assert store.staging.pending() == []


def test_eight_processes_log_one_name_at_once(location: str, tmp_path: Path) -> None:
    files = []
    for i in range(8):
        f = tmp_path / f"w{i}.txt"
        f.write_text(f"writer {i}\n")
        files.append(f)
    results = run_together([["put", str(f), "-n", "raced"] for f in files],
                           tmp_path / "barrier", tmp_path)
    for rc, _out, err in results:
        assert rc == 0, err
    printed = sorted(out.strip() for _rc, out, _err in results)
    assert printed == sorted(f"raced:v{n}" for n in range(8))
    versions = Store(location).versions("raced")
    assert len({v.files()[0].digest for v in versions}) == 8


def test_conflicting_contributions_are_kept(location: str, tmp_path: Path) -> None:
    for text in ("one", "two"):
        f = tmp_path / text / "same.txt"
        f.parent.mkdir()
        f.write_text(text)
        code = (f"import artstore; a = artstore.Artifact('c', 'd'); a.add_file({str(f)!r}); "
                f"artstore.Store({location!r}).staging.upsert(a, 'job', None)")
        subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(ConflictError, match="same.txt"):
        artstore.init(store=location).finish_artifact(artstore.Artifact("c", "d"),
                                                      distributed_id="job")
    assert len(Store(location).staging.pending()[0].contributions) == 2


def test_location_parsing_keeps_urls_and_expands_paths() -> None:
    assert str(store_location("s3://bucket/a/b/")) == "s3://bucket/a/b"
    assert store_location("~/x") == Path.home() / "x"


#: argv: LOCATION.  Finishes "waited" once two contributions are staged; prints the count.
WAITER = r"""
import sys
import artstore
run = artstore.init(group="w", store=sys.argv[1])
art = run.finish_artifact(artstore.Artifact("waited", "dataset"), wait_for=2, timeout=120)
print(len(art.files()))
"""


def test_finish_waits_for_contributions_made_after_it_started(location: str) -> None:
    waiter = subprocess.Popen([sys.executable, "-c", WAITER, location],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert waiter.poll() is None  # still waiting: nothing is staged yet
        for shard in range(2):
            subprocess.run([sys.executable, "-c", UPSERT.replace('"preds", "predictions"',
                                                                 '"waited", "dataset"')
                            .replace('group="job-1"', 'group="w"'), location, str(shard), "3"],
                           check=True)
        out, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, err
        assert out.strip() == "6"
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
