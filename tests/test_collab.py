"""Collaborative mode: many writers upsert into one pending version, one finish seals it.

These tests use real processes (``sys.executable -c CODE`` and ``python -m artstore``),
real ``SIGKILL`` for crashes, and the real CLI. Each test has its own store and stat cache
(``tests/conftest.py`` sets ``ARTSTORE_DIR`` and ``ARTSTORE_CACHE_DIR`` in ``os.environ``,
which every subprocess started here inherits).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import xxhash

import artstore
from artstore import Artifact, Entry
from artstore._collab import CLOSING, make_observer

from conftest import read_tree, write_tree

HOST = socket.gethostname()

CliRun = Callable[..., tuple[int, str, str]]

# -- helpers -------------------------------------------------------------------------

#: A writer process: builds an artifact from a directory (under a prefix), waits for a
#: "go" file if one is given so that many writers start together, then upserts it.
WRITER = r"""
import os, sys, time
import artstore
name, did, src, prefix, go = sys.argv[1:6]
art = artstore.Artifact(name, "dataset")
art.add_dir(src, name=prefix or None)
run = artstore.init(group=did, job_type="writer")
if go:
    print("ready", flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("go file never appeared")
        time.sleep(0.02)
print("upserting", os.getpid(), flush=True)
run.upsert_artifact(art)
print("upserted", flush=True)
"""

#: A finisher process with wait-for; prints one JSON line with the outcome.
FINISHER = r"""
import json, sys, time
import artstore
name, did, wait_for, timeout = sys.argv[1:5]
run = artstore.init(group=did, job_type="finisher")
start = time.monotonic()
try:
    art = run.finish_artifact(artstore.Artifact(name, "dataset"),
                              wait_for=int(wait_for), timeout=float(timeout))
except artstore.LockTimeoutError as exc:
    print(json.dumps({"ok": False, "error": str(exc), "elapsed": time.monotonic() - start}))
else:
    print(json.dumps({"ok": True, "version": art.qualified_name, "paths": sorted(art.manifest),
                      "elapsed": time.monotonic() - start}))
"""


#: Every process a test started, so that a failing test leaves none running.
_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap_processes():  # type: ignore[no-untyped-def]
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()  # only ever a process this test started, by its own handle
        proc.communicate(timeout=60)


def _popen(argv: list[str], env: Mapping[str, str] | None,
           cwd: Path | None) -> subprocess.Popen[str]:
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.Popen(argv, env=full_env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _STARTED.append(proc)
    return proc


def spawn(code: str, *args: object, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start ``python -c code args...`` with this test's environment."""
    return _popen([sys.executable, "-c", code, *map(str, args)], env, cwd)


def spawn_cli(*args: object, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[str]:
    """Start ``python -m artstore args...`` with this test's environment."""
    return _popen([sys.executable, "-m", "artstore", *map(str, args)], env, cwd)


def release_together(procs: list[subprocess.Popen[str]], go: Path) -> None:
    """Wait until every writer has imported artstore and built its artifact, then let
    them all upsert at the same moment."""
    for proc in procs:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if line != "ready\n":
            out, err = proc.communicate(timeout=60)
            raise AssertionError(f"writer {proc.pid} did not get ready (rc {proc.returncode}):"
                                 f" {line}{out}\n{err}")
    go.write_bytes(b"")


def finish_ok(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """Wait for a process, require exit code 0, return its stdout."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"process {proc.args[:4]} failed ({proc.returncode}):\n{err}"
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def digest_of(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def entry_for(path: str, data: bytes) -> Entry:
    return Entry(path, digest_of(data), len(data), None)


def stage(run: artstore.Run, name: str, did: str | None, files: Mapping[str, bytes | str],
          tmp: Path) -> Artifact:
    """Upsert ``files`` (path -> content) from ``run`` into (name, did) in this process."""
    src = write_tree(tmp / f"stage-{time.monotonic_ns()}", files)
    art = Artifact(name, "dataset")
    art.add_dir(src)
    if did is None:
        return run.upsert_artifact(art)
    return run.upsert_artifact(art, distributed_id=did)


def downloaded(art: Artifact, root: Path) -> dict[str, bytes]:
    return read_tree(Path(art.download(root)))


def pending_of(store: artstore.Store, name: str, did: str):  # type: ignore[no-untyped-def]
    found = [p for p in store.staging.pending() if p.name == name and p.distributed_id == did]
    assert len(found) <= 1
    return found[0] if found else None


# -- many writers ----------------------------------------------------------------------

N_WRITERS = 32
N_FILES = 200

#: The files of writer ``w`` in round ``rep``: deterministic, so the test knows every byte
#: without writing them itself. Shared by the test (exec) and the writer processes.
FILES_CODE = r"""
import hashlib

def writer_files(rep, w, n_files):
    files = {}
    for i in range(n_files):
        if i == 0:
            data = b""  # the empty blob, staged by every writer at once
        elif i % 50 == 0:
            data = f"content shared by every writer #{i}\n".encode() * 3  # one blob, many paths
        else:
            seed = f"rep {rep} writer {w} file {i}".encode()
            noise = hashlib.blake2b(seed, digest_size=64).digest() * (1 + (w + i) % 9)
            data = seed + b"\n" * (1 + (w * 7 + i) % 23) + noise[: (w * 13 + i) % 500]
        files[f"f{i:03d}.bin"] = data
    return files
"""
_files_ns: dict[str, object] = {}
exec(FILES_CODE, _files_ns)
writer_files: Callable[[int, int, int], dict[str, bytes]] = _files_ns["writer_files"]  # type: ignore[assignment]

#: A writer that writes its own files (in parallel with the others), then waits for "go".
GENERATING_WRITER = FILES_CODE + r"""
import os, sys, time
import artstore
name, did, src, prefix, go, rep, w, n_files = sys.argv[1:9]
for rel, data in writer_files(int(rep), int(w), int(n_files)).items():
    path = os.path.join(src, *rel.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
art = artstore.Artifact(name, "dataset")
art.add_dir(src, name=prefix)
run = artstore.init(group=did, job_type="writer")
print("ready", flush=True)
deadline = time.monotonic() + 120
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("go file never appeared")
    time.sleep(0.02)
run.upsert_artifact(art)
print("upserted", flush=True)
"""


@pytest.mark.timeout(240)
def test_32_writers_200_files_each_three_rounds_lose_nothing(tmp_path: Path,
                                                             store: artstore.Store) -> None:
    # The store exists before the writers start; concurrent creation of a fresh store
    # is tested on its own (test_concurrent_first_upserts_into_a_fresh_store).
    artstore.Store.init(store.path)

    def start_round(rep: int) -> tuple[str, str, Path, list[subprocess.Popen[str]]]:
        name, did, go = f"shards{rep}", f"round-{rep}", tmp_path / f"go-{rep}"
        procs = [spawn(GENERATING_WRITER, name, did, tmp_path / f"src-{rep}-{w}", f"w{w:02d}",
                       go, rep, w, N_FILES, cwd=tmp_path) for w in range(N_WRITERS)]
        return name, did, go, procs

    for rep in range(3):
        name, did, go, procs = start_round(rep)
        release_together(procs, go)  # 32 upserts at the same moment
        for proc in procs:
            assert "upserted" in finish_ok(proc, timeout=180)

        expected = {f"w{w:02d}/{p}": data for w in range(N_WRITERS)
                    for p, data in writer_files(rep, w, N_FILES).items()}
        assert len(expected) == 6400

        # Staged, not visible as a version yet.
        pending = pending_of(store, name, did)
        assert pending is not None
        assert len(pending.contributions) == N_WRITERS
        assert pending.entry_count == N_WRITERS * N_FILES
        assert name not in store.artifact_names()

        run = artstore.init(group=did)
        art = run.finish_artifact(Artifact(name, "dataset"))
        assert art.qualified_name == f"{name}:v0"
        assert len(art.manifest) == N_WRITERS * N_FILES == 6400
        assert art.manifest == {p: entry_for(p, d) for p, d in expected.items()}

        seal = store.staging.read_seal(name, did)
        assert seal is not None and seal["version"] == 0
        assert len(seal["contributions"]) == N_WRITERS
        assert pending_of(store, name, did) is None
        assert os.listdir(store.path / "staging" / name / did) == []

        # The stored bytes, read back through a fresh Store, are the writers' bytes.
        fresh = artstore.Store(store.path).artifact(f"{name}:latest")
        assert downloaded(fresh, tmp_path / f"out-{rep}") == expected
        # Keep the disk footprint of the test small: sources and download are checked.
        for path in [tmp_path / f"out-{rep}",
                     *(tmp_path / f"src-{rep}-{w}" for w in range(N_WRITERS))]:
            shutil.rmtree(path)
    assert store.artifact_names() == ["shards0", "shards1", "shards2"]


@pytest.mark.timeout(120)
def test_concurrent_first_upserts_into_a_fresh_store(tmp_path: Path) -> None:
    """Writers that all start on a store that does not exist yet: every one of them
    creates it or finds it created (the marker is create-if-absent), none fails."""
    for rep in range(2):
        store_path = tmp_path / f"fresh-store-{rep}"
        env = {"ARTSTORE_DIR": str(store_path)}
        srcs = [write_tree(tmp_path / f"fresh-{rep}-{w}", {f"{w}.txt": f"writer {w}"})
                for w in range(16)]
        go = tmp_path / f"fresh-go-{rep}"
        procs = [spawn(WRITER, "ds", "fresh", src, "", go, env=env, cwd=tmp_path)
                 for src in srcs]
        release_together(procs, go)
        failures = []
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            if proc.returncode != 0:
                failures.append(err.strip().splitlines()[-1])
        assert failures == [], f"round {rep}: {len(failures)} of 16 writers failed: {failures[:3]}"
        store = artstore.Store(store_path)
        art = artstore.init(group="fresh", store=store).finish_artifact(Artifact("ds", "dataset"))
        assert sorted(art.manifest) == sorted(f"{w}.txt" for w in range(16))


#: A writer that pauses right after it found no store marker on its way to creating the
#: store (the moment a busy scheduler may preempt it), until told to go on.
PAUSED_CREATOR = r"""
import os, sys, time
import artstore
from artstore import _store
name, did, src, paused, resume = sys.argv[1:6]
art = artstore.Artifact(name, "dataset")
art.add_dir(src)
run = artstore.init(group=did)
check, ensure = _store.Store._check_marker.__code__, _store.Store._ensure_created.__code__
def hook(frame, event, arg):
    if (event == "return" and frame.f_code is check and arg is False
            and frame.f_back is not None and frame.f_back.f_code is ensure):
        sys.setprofile(None)
        open(paused, "w").close()
        while not os.path.exists(resume):
            time.sleep(0.01)
sys.setprofile(hook)
run.upsert_artifact(art)
sys.setprofile(None)
print("upserted", flush=True)
"""


@pytest.mark.timeout(120)
def test_store_created_by_another_process_mid_creation(tmp_path: Path, cli: CliRun) -> None:
    """Two processes create one fresh store at once: the one that looked first and found
    no marker must accept the marker the other one published, not call the store 'not
    empty and not an artstore store'. The pause makes the interleaving certain; under
    load (32 writers starting on a new store) the scheduler produces it by itself."""
    store_path = tmp_path / "new-store"
    src = write_tree(tmp_path / "src", {"a.txt": "a"})
    paused, resume = tmp_path / "paused", tmp_path / "resume"
    writer = spawn(PAUSED_CREATOR, "ds", "g", src, paused, resume,
                   env={"ARTSTORE_DIR": str(store_path)}, cwd=tmp_path)
    wait_until(lambda: paused.exists() or writer.poll() is not None, 60, "the writer to pause")
    assert writer.poll() is None, writer.communicate()
    rc, out, err = cli("init", store_path)  # another process creates the store meanwhile
    assert rc == 0, err
    resume.write_bytes(b"")
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err.strip().splitlines()[-1]
    assert "upserted" in out
    store = artstore.Store(store_path)
    assert len(pending_of(store, "ds", "g").contributions) == 1


# -- crashes -------------------------------------------------------------------------

VICTIM_SMALL_FILES = 1000
VICTIM_BIG_BYTES = 8 * 1024 * 1024


def _victim_tree(tmp_path: Path, tag: str) -> tuple[Path, dict[str, bytes]]:
    files = {f"small/{i:04d}.bin": os.urandom(512) for i in range(VICTIM_SMALL_FILES)}
    files["big.bin"] = os.urandom(VICTIM_BIG_BYTES)
    return write_tree(tmp_path / f"victim-{tag}", files), files


def _tmp_files_of(store_path: Path, pid: int) -> list[str]:
    try:
        return [n for n in os.listdir(store_path / "tmp") if n.startswith(f"{HOST}.{pid}.")]
    except FileNotFoundError:
        return []


def _records_of(store_path: Path, name: str, did: str, pid: int) -> list[str]:
    try:
        names = os.listdir(store_path / "staging" / name / did)
    except FileNotFoundError:
        return []
    return [n for n in names if n.startswith("c.") and f".{HOST}.{pid}." in n]


@pytest.mark.timeout(180)
def test_kill_9_writer_mid_upsert_is_all_or_nothing(tmp_path: Path, store_path: Path) -> None:
    """SIGKILL a writer while it upserts: others and the finish are unaffected; the
    victim's contribution is in the version wholly or not at all."""
    store = artstore.Store.init(store_path)
    # "record" kills as soon as the victim's contribution record is published: it must
    # then be wholly present. The numbers are delays after its first temp file appears.
    schedule: list[float | str] = [0.0, 0.01, 0.05, 0.15, 0.3, "record"]
    outcomes = []
    for k, when in enumerate(schedule):
        name, did = "crashy", f"crash-{k}"
        others: dict[str, bytes] = {}
        procs = []
        for w in range(3):
            files = {f"{i:02d}.txt": f"iteration {k} writer {w} file {i}\n".encode() * (i + 1)
                     for i in range(40)}
            src = write_tree(tmp_path / f"other-{k}-{w}", files)
            others.update({f"o{w}/{p}": d for p, d in files.items()})
            procs.append(spawn(WRITER, name, did, src, f"o{w}", "", cwd=tmp_path))
        vsrc, vfiles = _victim_tree(tmp_path, str(k))
        victim = spawn(WRITER, name, did, vsrc, "victim", "", cwd=tmp_path)

        if when == "record":
            wait_until(lambda: bool(_records_of(store_path, name, did, victim.pid)) or
                       victim.poll() is not None, 60, "the victim's contribution record",
                       interval=0.0005)
        else:
            wait_until(lambda: bool(_tmp_files_of(store_path, victim.pid)) or
                       victim.poll() is not None, 60, "the victim's first temp file")
            time.sleep(float(when))
        os.kill(victim.pid, signal.SIGKILL)
        victim.communicate(timeout=30)
        for proc in procs:
            finish_ok(proc)

        run = artstore.init(group=did)
        art = run.finish_artifact(Artifact(name, "dataset"))
        manifest = art.manifest
        victim_paths = {p for p in manifest if p.startswith("victim/")}
        expected_victim = {f"victim/{p}" for p in vfiles}
        assert victim_paths in (set(), expected_victim), (
            f"schedule {when!r}: partial contribution of the killed writer: "
            f"{len(victim_paths)} of {len(expected_victim)} paths"
        )
        # Every other writer's contribution is whole and byte-identical.
        got = downloaded(art, tmp_path / f"out-{k}")
        assert {p: d for p, d in got.items() if not p.startswith("victim/")} == others
        if victim_paths:
            assert {p: got[p] for p in victim_paths} == {
                f"victim/{p}": d for p, d in vfiles.items()}
        assert pending_of(store, name, did) is None
        outcomes.append((when, victim.returncode, bool(victim_paths)))
        shutil.rmtree(vsrc)
        shutil.rmtree(tmp_path / f"out-{k}")

    # The kills really happened while the victim was running (the early ones surely; a
    # victim that already exited is reaped with rc 0 and must then be wholly present) ...
    assert outcomes[0][1] == outcomes[1][1] == -signal.SIGKILL, outcomes
    assert sum(rc == -signal.SIGKILL for _w, rc, _p in outcomes) >= 4, outcomes
    assert all(present for _w, rc, present in outcomes if rc == 0), outcomes
    # ... and covered both sides: killed before publishing (absent) and after (present).
    assert any(not present for _w, _rc, present in outcomes), outcomes
    assert outcomes[-1][2] is True, outcomes


@pytest.mark.timeout(120)
def test_kill_9_finisher_while_waiting_lock_is_reclaimed(tmp_path: Path,
                                                        store_path: Path) -> None:
    """A finisher killed while it holds the id's lock (waiting for writers) does not
    block the next finish for the lease duration: its owner is a dead local process."""
    run = artstore.init(group="g")
    stage(run, "ds", "g", {"a.txt": "a"}, tmp_path)
    finisher = spawn(FINISHER, "ds", "g", 5, 100, cwd=tmp_path)
    wait_until(lambda: (store_path / "locks" / "staging" / "ds" / "g").exists(), 60,
               "the finisher's lock")
    time.sleep(0.5)
    assert finisher.poll() is None
    os.kill(finisher.pid, signal.SIGKILL)
    finisher.communicate(timeout=30)
    assert finisher.returncode == -signal.SIGKILL

    start = time.monotonic()
    art = run.finish_artifact(Artifact("ds", "dataset"))
    assert time.monotonic() - start < 20
    assert art.qualified_name == "ds:v0"
    assert sorted(art.manifest) == ["a.txt"]
    assert not (store_path / "staging" / "ds" / "g" / CLOSING).exists()


def _stage_references(run: artstore.Run, name: str, did: str, w: int, count: int) -> set[str]:
    """Stage ``count`` checksum-less references (no files to write): a big, cheap record."""
    art = Artifact(name, "dataset")
    for i in range(count):
        art.add_reference(f"s3://bucket/w{w}/{i:05d}.bin", name=f"w{w}/{i:05d}.bin",
                          checksum=False)
    run.upsert_artifact(art, distributed_id=did)
    return {f"w{w}/{i:05d}.bin" for i in range(count)}


@pytest.mark.timeout(150)
def test_kill_9_finisher_while_closing_then_recover(tmp_path: Path, store_path: Path) -> None:
    """SIGKILL a finisher while it merges (CLOSING published, lock held). FORMAT.md 7: the
    lock is reclaimed, a writer that meets the stale CLOSING stays staged (or learns the
    version was sealed), and the next finish seals exactly once with nothing lost; if the
    finisher had committed but not sealed, the next finish seals that same version."""
    store = artstore.Store.init(store_path)
    phases = []
    # Kill as soon as this appears: CLOSING (merging), the refs (committed), the seal.
    for k, trigger in enumerate(["staging", "staging", "refs", "refs", "sealed", "sealed"]):
        name, did = f"closing{k}", "job"
        run = artstore.init()
        staged: set[str] = set()
        for w in range(8):
            staged |= _stage_references(run, name, did, w, 3000)
        finisher = spawn(FINISHER, name, did, 0, 0, cwd=tmp_path)
        closing = store_path / "staging" / name / did / CLOSING
        marks = {"staging": closing, "refs": store_path / "refs" / name / f"{1:012d}",
                 "sealed": store_path / "sealed" / name / did}
        mark = marks[trigger]
        wait_until(lambda: mark.exists() or finisher.poll() is not None, 60,
                   f"the finisher to write {mark}", interval=0.0002)
        os.kill(finisher.pid, signal.SIGKILL)
        finisher.communicate(timeout=30)
        if finisher.returncode != -signal.SIGKILL:
            phases.append("finished before the kill")
            continue
        seal = store.staging.read_seal(name, did)
        refs = store.read_refs(name)
        committed = refs is not None
        phases.append("sealed" if seal else "committed" if committed else "merging")

        # A writer arriving now meets the stale CLOSING (or the seal).
        late_ok = None
        if k % 2 == 0:
            try:
                stage(artstore.init(), name, did, {"late/late.txt": f"late {k}"}, tmp_path)
                late_ok = True
            except artstore.SealedError as exc:
                assert seal is not None and f"{name}:v{seal['version']}" in str(exc)
                late_ok = False

        if seal is not None:
            with pytest.raises(artstore.SealedError):
                run.finish_artifact(Artifact(name, "dataset"), distributed_id=did)
            version = store.artifact(f"{name}:v{seal['version']}")
            assert set(version.manifest) == staged
            continue
        start = time.monotonic()
        art = run.finish_artifact(Artifact(name, "dataset"), distributed_id=did)
        assert time.monotonic() - start < 30  # the dead finisher's lock did not hold us up
        expected = staged | ({"late/late.txt"} if late_ok else set())
        assert set(art.manifest) == expected
        if committed and not late_ok:
            assert art.version == "v0" and len(store.versions(name)) == 1
        seal = store.staging.read_seal(name, did)
        assert seal is not None and seal["version"] == int(art.version[1:])
        assert not closing.exists()
        assert not _any_record(store_path, name, did)
        assert pending_of(store, name, did) is None
    print("finisher killed while:", phases)
    assert "merging" in phases and "sealed" in phases, phases


@pytest.mark.timeout(60)
def test_finisher_killed_after_sealing_leaves_nothing_pending(tmp_path: Path,
                                                             store_path: Path) -> None:
    """A finisher killed between publishing the seal and deleting CLOSING and the merged
    records: the version is finished, so it must not be listed as pending (and 'staging
    ls' must not show it as being finished) ever after."""
    store = artstore.Store.init(store_path)
    run = artstore.init()
    staged: set[str] = set()
    for w in range(8):
        staged |= _stage_references(run, "ds", "job", w, 3000)
    finisher = spawn(FINISHER, "ds", "job", 0, 0, cwd=tmp_path)
    seal_file = store_path / "sealed" / "ds" / "job"
    wait_until(lambda: seal_file.exists() or finisher.poll() is not None, 60, "the seal",
               interval=0.0002)
    os.kill(finisher.pid, signal.SIGKILL)
    finisher.communicate(timeout=30)
    assert finisher.returncode == -signal.SIGKILL
    seal = store.staging.read_seal("ds", "job")
    assert seal is not None
    assert set(store.artifact(f"ds:v{seal['version']}").manifest) == staged
    with pytest.raises(artstore.SealedError):
        run.finish_artifact(Artifact("ds", "dataset"), distributed_id="job")
    listed = [(p.name, p.distributed_id, len(p.contributions), p.closing)
              for p in store.staging.pending()]
    assert listed == [], f"finished version still listed as pending: {listed}"


# -- conflicts -----------------------------------------------------------------------

def test_conflict_names_path_and_writers_keeps_contributions(tmp_path: Path,
                                                            store: artstore.Store) -> None:
    r1 = artstore.init(group="grp")
    r2 = artstore.init(group="grp")
    stage(r1, "ds", None, {"same.txt": "first writer", "only1.txt": "1"}, tmp_path)
    time.sleep(0.01)
    stage(r2, "ds", None, {"same.txt": "second writer", "only2.txt": "2"}, tmp_path)

    finisher = artstore.init(group="grp")
    with pytest.raises(artstore.ConflictError) as info:
        finisher.finish_artifact(Artifact("ds", "dataset"))
    err = info.value
    assert not isinstance(err, artstore.SealedError)
    assert err.paths == ["same.txt"]
    message = str(err)
    assert "same.txt" in message
    assert f"run {r1.id}" in message and f"run {r2.id}" in message
    assert f"{HOST}:{os.getpid()}" in message
    assert "only1.txt" not in message and "only2.txt" not in message

    # Nothing was finished; both contributions are still staged.
    assert store.artifact_names() == []
    assert store.staging.read_seal("ds", "grp") is None
    pending = pending_of(store, "ds", "grp")
    assert pending is not None
    assert len(pending.contributions) == 2
    assert not pending.closing
    assert {c.writer["run"] for c in pending.contributions} == {r1.id, r2.id}

    # A second plain finish still refuses; 'newest' lets the later record win.
    with pytest.raises(artstore.ConflictError):
        finisher.finish_artifact(Artifact("ds", "dataset"))
    art = finisher.finish_artifact(Artifact("ds", "dataset"), on_conflict="newest")
    assert art.qualified_name == "ds:v0"
    assert downloaded(art, tmp_path / "out") == {
        "same.txt": b"second writer", "only1.txt": b"1", "only2.txt": b"2"}
    assert pending_of(store, "ds", "grp") is None


def test_conflict_policy_oldest(tmp_path: Path, store: artstore.Store) -> None:
    r1, r2 = artstore.init(), artstore.init()
    stage(r1, "ds", "d1", {"p.txt": "old"}, tmp_path)
    time.sleep(0.01)
    stage(r2, "ds", "d1", {"p.txt": "new"}, tmp_path)
    art = r1.finish_artifact(Artifact("ds", "dataset"), distributed_id="d1", on_conflict="oldest")
    assert downloaded(art, tmp_path / "out") == {"p.txt": b"old"}


def test_conflict_between_processes(tmp_path: Path, store: artstore.Store) -> None:
    """Two writer processes, one path, different bytes: the message names both pids."""
    artstore.Store.init(store.path)
    a = write_tree(tmp_path / "a", {"x.bin": b"A" * 10})
    b = write_tree(tmp_path / "b", {"x.bin": b"B" * 10})
    pa = spawn(WRITER, "ds", "g", a, "", "", cwd=tmp_path)
    pb = spawn(WRITER, "ds", "g", b, "", "", cwd=tmp_path)
    finish_ok(pa)
    finish_ok(pb)
    with pytest.raises(artstore.ConflictError) as info:
        artstore.init(group="g").finish_artifact(Artifact("ds", "dataset"))
    assert info.value.paths == ["x.bin"]
    assert f"{HOST}:{pa.pid} " in str(info.value) and f"{HOST}:{pb.pid} " in str(info.value)
    assert len(pending_of(store, "ds", "g").contributions) == 2


def test_same_path_same_content_is_no_conflict(tmp_path: Path, store: artstore.Store) -> None:
    r1, r2 = artstore.init(group="g"), artstore.init(group="g")
    stage(r1, "ds", None, {"shared.txt": "identical", "a.txt": "a"}, tmp_path)
    stage(r2, "ds", None, {"shared.txt": "identical", "b.txt": "b"}, tmp_path)
    art = r1.finish_artifact(Artifact("ds", "dataset"))
    assert downloaded(art, tmp_path / "out") == {
        "shared.txt": b"identical", "a.txt": b"a", "b.txt": b"b"}


def test_one_writer_restaging_a_path_later_wins(tmp_path: Path, store: artstore.Store) -> None:
    run = artstore.init(group="g")
    stage(run, "ds", None, {"p.txt": "draft one", "keep.txt": "k"}, tmp_path)
    time.sleep(0.01)
    stage(run, "ds", None, {"p.txt": "draft two"}, tmp_path)
    assert len(pending_of(store, "ds", "g").contributions) == 2
    art = run.finish_artifact(Artifact("ds", "dataset"))  # default policy: error
    assert downloaded(art, tmp_path / "out") == {"p.txt": b"draft two", "keep.txt": b"k"}


def test_writer_changing_its_own_entry_to_agree_is_no_conflict(tmp_path: Path,
                                                               store: artstore.Store) -> None:
    """FORMAT.md 7: a writer's later record replaces its own earlier entry for a path.
    A stages x, B stages y, then A stages y: A's word is now y, as is B's - they agree."""
    a, b = artstore.init(group="g"), artstore.init(group="g")
    stage(a, "ds", None, {"p.txt": "x"}, tmp_path)
    time.sleep(0.01)
    stage(b, "ds", None, {"p.txt": "y"}, tmp_path)
    time.sleep(0.01)
    stage(a, "ds", None, {"p.txt": "y"}, tmp_path)
    art = a.finish_artifact(Artifact("ds", "dataset"))
    assert downloaded(art, tmp_path / "out") == {"p.txt": b"y"}


def test_writer_later_record_disagreeing_again_still_conflicts(tmp_path: Path,
                                                              store: artstore.Store) -> None:
    a, b = artstore.init(group="g"), artstore.init(group="g")
    stage(a, "ds", None, {"p.txt": "x"}, tmp_path)
    time.sleep(0.01)
    stage(b, "ds", None, {"p.txt": "x"}, tmp_path)
    time.sleep(0.01)
    stage(a, "ds", None, {"p.txt": "z"}, tmp_path)  # A changes its mind; B still says x
    with pytest.raises(artstore.ConflictError) as info:
        a.finish_artifact(Artifact("ds", "dataset"))
    assert info.value.paths == ["p.txt"]


#: A writer released by "go" that waits ``delay`` more seconds, then upserts and reports.
RACING_WRITER = r"""
import json, os, sys, time
import artstore
name, did, src, prefix, go, delay = sys.argv[1:7]
art = artstore.Artifact(name, "dataset")
art.add_dir(src, name=prefix)
run = artstore.init(group=did)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.005)
time.sleep(float(delay))
try:
    run.upsert_artifact(art)
except artstore.SealedError as exc:
    print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
else:
    print(json.dumps({"ok": True}), flush=True)
"""


@pytest.mark.timeout(150)
def test_upserts_racing_a_finish_are_in_the_version_or_refused(tmp_path: Path,
                                                               store_path: Path) -> None:
    """Writers that upsert while a finish runs: each one either returns normally and is
    in the version, or gets SealedError naming the version and left nothing staged.
    None succeeds without being in the version (a silent loss)."""
    store = artstore.Store.init(store_path)
    outcomes = []
    for rep in range(2):
        name, did, go = "race", f"race-{rep}", tmp_path / f"race-go-{rep}"
        n = 12
        srcs = [write_tree(tmp_path / f"race-{rep}-{w}", {f"{i}.txt": f"{rep}/{w}/{i}"
                                                          for i in range(20)})
                for w in range(n)]
        procs = [spawn(RACING_WRITER, name, did, src, f"w{w:02d}", go, 0.08 * w, cwd=tmp_path)
                 for w, src in enumerate(srcs)]
        release_together(procs, go)
        time.sleep(0.3)
        art = artstore.init(group=did).finish_artifact(Artifact(name, "dataset"),
                                                       on_conflict="error")
        results = [json.loads(finish_ok(p).strip().splitlines()[-1]) for p in procs]
        manifest = art.manifest
        for w, result in enumerate(results):
            mine = {p for p in manifest if p.startswith(f"w{w:02d}/")}
            if result["ok"]:
                assert len(mine) == 20, f"round {rep}: writer {w} succeeded but is not in {art}"
            else:
                assert mine == set()
                assert art.qualified_name in result["error"]
            outcomes.append(result["ok"])
        assert not _any_record(store_path, name, did)
        assert len(store.staging.read_seal(name, did)["contributions"]) == sum(
            r["ok"] for r in results)
    assert any(outcomes) and not all(outcomes), outcomes


# -- sealing -------------------------------------------------------------------------

def test_pending_version_invisible_until_finish_then_sealed(tmp_path: Path,
                                                           store: artstore.Store,
                                                           cli: CliRun) -> None:
    run = artstore.init(group="g1")
    stage(run, "ds", None, {"a.txt": "a"}, tmp_path)

    # Staged only: no artifact, no latest, nothing in ls.
    assert store.artifact_names() == []
    with pytest.raises(artstore.NotFoundError):
        store.artifact("ds:latest")
    rc, out, err = cli("ls")
    assert rc == 0 and "ds" not in out
    assert pending_of(store, "ds", "g1") is not None

    art = run.finish_artifact(Artifact("ds", "dataset"))
    assert art.qualified_name == "ds:v0"
    assert store.artifact_names() == ["ds"]
    assert pending_of(store, "ds", "g1") is None
    seal = store.staging.read_seal("ds", "g1")
    assert seal is not None and seal["version"] == 0
    assert seal["commit"] == bytes.fromhex(art.id)

    late = Artifact("ds", "dataset")
    late.add_file(write_tree(tmp_path / "late", {"late.txt": "late"}) / "late.txt")
    with pytest.raises(artstore.SealedError) as info:
        artstore.init(group="g1").upsert_artifact(late)
    assert "ds:v0" in str(info.value)
    assert pending_of(store, "ds", "g1") is None  # the refused record was not left behind
    assert not _any_record(store.path, "ds", "g1")

    with pytest.raises(artstore.SealedError) as info:
        run.finish_artifact(Artifact("ds", "dataset"))
    assert "ds:v0" in str(info.value)
    assert len(store.versions("ds")) == 1

    # A new pending version on the same name: latest stays v0 while it is staged.
    run2 = artstore.init(group="g2")
    stage(run2, "ds", None, {"b.txt": "b"}, tmp_path)
    assert store.artifact("ds:latest").version == "v0"
    with pytest.raises(artstore.VersionNotFoundError):
        store.artifact("ds:v1")
    rc, out, _ = cli("ls", "ds", "--json")
    assert rc == 0 and [r["version"] for r in json.loads(out)] == ["v0"]
    art2 = run2.finish_artifact(Artifact("ds", "dataset"))
    assert art2.qualified_name == "ds:v1"
    assert sorted(art2.manifest) == ["b.txt"]
    assert store.artifact("ds:latest").version == "v1"


def _any_record(store_path: Path, name: str, did: str) -> bool:
    try:
        return any(n.startswith("c.") for n in os.listdir(store_path / "staging" / name / did))
    except FileNotFoundError:
        return False


def test_no_group_and_no_distributed_id_is_an_error(tmp_path: Path,
                                                    store: artstore.Store) -> None:
    run = artstore.init()
    art = Artifact("ds", "dataset")
    art.add_file(write_tree(tmp_path / "s", {"a.txt": "a"}) / "a.txt")
    with pytest.raises(artstore.InvalidInputError) as info:
        run.upsert_artifact(art)
    assert "group" in str(info.value) and "distributed_id" in str(info.value)
    assert store.staging.pending() == []
    with pytest.raises(artstore.InvalidInputError) as info:
        run.finish_artifact(Artifact("ds", "dataset"))
    assert "group" in str(info.value) and "distributed_id" in str(info.value)
    assert store.artifact_names() == []


def test_distributed_id_defaults_to_group(tmp_path: Path, store: artstore.Store) -> None:
    run = artstore.init(group="my-group")
    stage(run, "ds", None, {"a.txt": "a"}, tmp_path)
    assert [(p.name, p.distributed_id) for p in store.staging.pending()] == [("ds", "my-group")]
    # An explicit id overrides the group.
    stage(run, "ds", "other-id", {"b.txt": "b"}, tmp_path)
    art = artstore.init().finish_artifact(Artifact("ds", "dataset"), distributed_id="my-group")
    assert sorted(art.manifest) == ["a.txt"]
    assert art.logged_by()["group"] is None
    assert [(p.name, p.distributed_id) for p in store.staging.pending()] == [("ds", "other-id")]


def test_invalid_distributed_id_is_refused(tmp_path: Path, store: artstore.Store) -> None:
    run = artstore.init()
    with pytest.raises(artstore.InvalidNameError):
        stage(run, "ds", "../escape", {"a.txt": "a"}, tmp_path)
    assert not (store.path / "escape").exists()


# -- the finishing artifact -------------------------------------------------------------

def test_finishing_artifact_may_carry_its_own_files(tmp_path: Path, store: artstore.Store) -> None:
    w = artstore.init(group="g")
    stage(w, "ds", None, {"data/a.txt": "a"}, tmp_path)
    own = write_tree(tmp_path / "own", {"README.md": "readme", "meta/info.json": "{}"})
    final = Artifact("ds", "dataset", description="final", metadata={"k": 1})
    final.add_dir(own)
    art = artstore.init(group="g").finish_artifact(final, aliases=["best"])
    assert downloaded(art, tmp_path / "out") == {
        "data/a.txt": b"a", "README.md": b"readme", "meta/info.json": b"{}"}
    assert art.description == "final" and art.metadata == {"k": 1}
    assert set(art.aliases) == {"latest", "best"}


def test_finish_with_only_its_own_files(tmp_path: Path, store: artstore.Store) -> None:
    final = Artifact("ds", "dataset")
    final.add_file(write_tree(tmp_path / "own", {"x.txt": "x"}) / "x.txt")
    art = artstore.init(group="g").finish_artifact(final)
    assert art.manifest == {"x.txt": entry_for("x.txt", b"x")}
    assert store.staging.read_seal("ds", "g")["contributions"] == []


def test_finishing_artifact_without_files(tmp_path: Path, store: artstore.Store) -> None:
    stage(artstore.init(group="g"), "ds", None, {"a.txt": "a", "b.txt": "b"}, tmp_path)
    art = artstore.init(group="g").finish_artifact(Artifact("ds", "dataset"))
    assert art.manifest == {"a.txt": entry_for("a.txt", b"a"), "b.txt": entry_for("b.txt", b"b")}


def test_one_group_two_artifacts_at_once(tmp_path: Path, store: artstore.Store) -> None:
    run = artstore.init(group="shared-id")
    stage(run, "images", None, {"img/1.png": "png1"}, tmp_path)
    stage(run, "labels", None, {"lab/1.txt": "label1"}, tmp_path)
    stage(artstore.init(group="shared-id"), "images", None, {"img/2.png": "png2"}, tmp_path)

    images = run.finish_artifact(Artifact("images", "dataset"))
    assert sorted(images.manifest) == ["img/1.png", "img/2.png"]
    # Finishing one name does not seal or consume the other.
    assert len(pending_of(store, "labels", "shared-id").contributions) == 1
    stage(run, "labels", None, {"lab/2.txt": "label2"}, tmp_path)
    labels = run.finish_artifact(Artifact("labels", "dataset"))
    assert sorted(labels.manifest) == ["lab/1.txt", "lab/2.txt"]
    assert (images.qualified_name, labels.qualified_name) == ("images:v0", "labels:v0")
    assert store.artifact_names() == ["images", "labels"]
    assert store.staging.read_seal("images", "shared-id")["version"] == 0
    assert store.staging.read_seal("labels", "shared-id")["version"] == 0
    with pytest.raises(artstore.SealedError, match="images:v0"):
        stage(run, "images", None, {"img/3.png": "png3"}, tmp_path)


def test_upsert_with_wrong_type_is_refused(tmp_path: Path, store: artstore.Store) -> None:
    a = Artifact("ds", "dataset")
    a.add_file(write_tree(tmp_path / "s", {"a.txt": "a"}) / "a.txt")
    a.save()
    m = Artifact("ds", "model")
    m.add_file(tmp_path / "s" / "a.txt")
    with pytest.raises(artstore.TypeMismatchError):
        artstore.init(group="g").upsert_artifact(m)
    assert store.staging.pending() == []


# -- wait-for ------------------------------------------------------------------------

def _wait_for_finisher_waiting(store_path: Path, name: str, did: str,
                               proc: subprocess.Popen[str]) -> None:
    """The finisher holds the lock and is inside its wait once both exist."""
    wait_until(lambda: (store_path / "locks" / "staging" / name / did).exists()
               and (store_path / "staging" / name / did).is_dir() or proc.poll() is not None,
               60, "the finisher to start waiting")
    assert proc.poll() is None, proc.communicate()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("watch", ["auto", "poll"])
def test_wait_for_three_writers_started_after_the_finisher(tmp_path: Path, store_path: Path,
                                                           watch: str) -> None:
    store = artstore.Store(store_path)
    env = {"ARTSTORE_WATCH": watch}
    finisher = spawn(FINISHER, "ds", "wf", 3, 60, env=env, cwd=tmp_path)
    _wait_for_finisher_waiting(store_path, "ds", "wf", finisher)
    time.sleep(1.0)
    assert finisher.poll() is None
    assert store.artifact_names() == []

    srcs = [write_tree(tmp_path / f"w{i}", {f"{i}.txt": f"writer {i}"}) for i in range(3)]
    # Two writers: still not enough, the finisher keeps waiting.
    for i in range(2):
        finish_ok(spawn(WRITER, "ds", "wf", srcs[i], f"w{i}", "", env=env, cwd=tmp_path))
    time.sleep(1.5)
    assert finisher.poll() is None
    assert store.artifact_names() == []
    assert len(pending_of(store, "ds", "wf").contributions) == 2

    finish_ok(spawn(WRITER, "ds", "wf", srcs[2], "w2", "", env=env, cwd=tmp_path))
    result = json.loads(finish_ok(finisher, timeout=60))
    assert result["ok"] is True, result
    assert result["version"] == "ds:v0"
    assert result["paths"] == ["w0/0.txt", "w1/1.txt", "w2/2.txt"]
    assert len(store.staging.read_seal("ds", "wf")["contributions"]) == 3
    assert pending_of(store, "ds", "wf") is None


def test_poll_watch_setting_selects_the_polling_observer(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from watchdog.observers.polling import PollingObserver

    monkeypatch.setenv("ARTSTORE_WATCH", "poll")
    assert isinstance(make_observer(tmp_path), PollingObserver)
    monkeypatch.setenv("ARTSTORE_WATCH", "inotify")
    assert not isinstance(make_observer(tmp_path), PollingObserver)


def test_wait_for_too_few_times_out_and_finishes_nothing(tmp_path: Path,
                                                         store: artstore.Store) -> None:
    run = artstore.init(group="few")
    stage(run, "ds", None, {"only.txt": "one"}, tmp_path)
    start = time.monotonic()
    with pytest.raises(artstore.LockTimeoutError) as info:
        run.finish_artifact(Artifact("ds", "dataset"), wait_for=3, timeout=2)
    elapsed = time.monotonic() - start
    assert 1.9 <= elapsed < 8, elapsed
    assert "3 contributions" in str(info.value) and "1 arrived" in str(info.value)
    assert isinstance(info.value, TimeoutError)

    # Nothing finished: no version, no seal, no CLOSING, the contribution still staged.
    assert store.artifact_names() == []
    assert store.staging.read_seal("ds", "few") is None
    pending = pending_of(store, "ds", "few")
    assert pending is not None and len(pending.contributions) == 1 and not pending.closing
    assert not (store.path / "staging" / "ds" / "few" / CLOSING).exists()

    # The lock was released: a finish that does not wait succeeds at once.
    start = time.monotonic()
    art = run.finish_artifact(Artifact("ds", "dataset"))
    assert time.monotonic() - start < 10
    assert downloaded(art, tmp_path / "out") == {"only.txt": b"one"}


@pytest.mark.timeout(60)
def test_wait_for_too_few_in_subprocess_with_polling(tmp_path: Path, store_path: Path) -> None:
    store = artstore.Store(store_path)
    stage(artstore.init(group="few"), "ds", None, {"a.txt": "a"}, tmp_path)
    proc = spawn(FINISHER, "ds", "few", 2, 1.5, env={"ARTSTORE_WATCH": "poll"}, cwd=tmp_path)
    result = json.loads(finish_ok(proc, timeout=60))
    assert result["ok"] is False
    assert 1.4 <= result["elapsed"] < 8
    assert "2 contributions" in result["error"]
    assert store.artifact_names() == []
    assert len(pending_of(store, "ds", "few").contributions) == 1


def test_wait_for_already_satisfied_returns_at_once(tmp_path: Path, store: artstore.Store) -> None:
    run = artstore.init(group="sat")
    stage(run, "ds", None, {"a.txt": "a"}, tmp_path)
    stage(artstore.init(group="sat"), "ds", None, {"b.txt": "b"}, tmp_path)
    start = time.monotonic()
    art = run.finish_artifact(Artifact("ds", "dataset"), wait_for=2, timeout=30)
    assert time.monotonic() - start < 5
    assert sorted(art.manifest) == ["a.txt", "b.txt"]


# -- abort ---------------------------------------------------------------------------

def test_abort_drops_contributions_and_finish_then_fails(tmp_path: Path,
                                                        store: artstore.Store) -> None:
    stage(artstore.init(group="ab"), "ds", None, {"a.txt": "a"}, tmp_path)
    stage(artstore.init(group="ab"), "ds", None, {"b.txt": "b"}, tmp_path)
    stage(artstore.init(group="keep"), "ds", None, {"c.txt": "c"}, tmp_path)
    assert store.staging.abort("ds", "ab") == 2
    assert [(p.name, p.distributed_id) for p in store.staging.pending()] == [("ds", "keep")]
    assert not _any_record(store.path, "ds", "ab")
    with pytest.raises(artstore.InvalidInputError) as info:
        artstore.init(group="ab").finish_artifact(Artifact("ds", "dataset"))
    assert "nothing to finish" in str(info.value)
    assert store.artifact_names() == []
    assert store.staging.read_seal("ds", "ab") is None
    assert not (store.path / "staging" / "ds" / "ab" / CLOSING).exists()
    # The other pending version is untouched and still finishes.
    art = artstore.init(group="keep").finish_artifact(Artifact("ds", "dataset"))
    assert sorted(art.manifest) == ["c.txt"]


def test_finish_of_unknown_id_fails_clearly(store: artstore.Store) -> None:
    with pytest.raises(artstore.InvalidInputError, match="nothing to finish"):
        artstore.init(group="never").finish_artifact(Artifact("ds", "dataset"))
    assert store.artifact_names() == []


def test_cli_staging_abort(tmp_path: Path, cli: CliRun,
                           store: artstore.Store) -> None:
    src = write_tree(tmp_path / "s", {"a.txt": "a", "b.txt": "bb"})
    rc, out, err = cli("put", src, "-n", "ds", "--distributed-id", "job7")
    assert rc == 0, err
    rc, out, err = cli("staging", "abort", "job7")
    assert rc == 0, err
    assert "aborted ds (distributed id job7): 1 contribution(s) dropped" in out
    assert store.staging.pending() == []
    rc, out, err = cli("staging", "ls", "--json")
    assert rc == 0 and json.loads(out) == []
    rc, out, err = cli("finish", "-n", "ds", "--distributed-id", "job7")
    assert rc == 1
    assert err.startswith("artstore: error: ") and "nothing to finish" in err
    assert "Traceback" not in err
    rc, out, err = cli("staging", "abort", "job7")
    assert rc == 1 and "nothing is staged under distributed id 'job7'" in err


# -- CLI -----------------------------------------------------------------------------

def test_cli_put_staging_ls_show_finish(tmp_path: Path, cli: CliRun,
                                        store: artstore.Store) -> None:
    a = write_tree(tmp_path / "a", {"one.txt": "1", "sub/two.txt": "22"})
    b = write_tree(tmp_path / "b", {"three.txt": "333"})
    rc, out, err = cli("put", a, "-n", "ds", "--distributed-id", "job1", "-a", "best")
    assert rc == 2 and "--alias goes with 'artstore finish'" in err
    assert store.staging.pending() == []
    rc, out, err = cli("put", a, "-n", "ds", "--distributed-id", "job1")
    assert rc == 0, err
    assert out.strip() == "staged 2 file(s) into ds (distributed id job1)"
    rc, out, err = cli("put", b, "-n", "ds", "--distributed-id", "job1", "--json")
    assert rc == 0, err
    assert json.loads(out) == {"name": "ds", "distributed_id": "job1", "entries": 1}

    rc, out, err = cli("staging", "ls")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    fields = lines[0].split("\t")
    assert fields[:4] == ["ds", "job1", "2 contribution(s)", "3 file(s)"]
    assert fields[4] == "6 B"

    rc, out, err = cli("staging", "ls", "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert len(rows) == 1
    row = rows[0]
    assert (row["name"], row["distributed_id"], row["contributions"], row["entries"],
            row["size"], row["closing"]) == ("ds", "job1", 2, 3, 6, False)
    assert len(row["writers"]) == 2

    rc, out, err = cli("staging", "show", "job1", "--json")
    assert rc == 0, err
    shown = json.loads(out)
    assert len(shown) == 1
    contribs = shown[0]["contributions"]
    assert sorted((c["entries"], c["size"]) for c in contribs) == [(1, 3), (2, 3)]
    assert all(c["record"].startswith("c.") for c in contribs)
    assert sorted(c["writer"] for c in contribs) == sorted(row["writers"])

    rc, out, err = cli("staging", "show", "job1")
    assert rc == 0, err
    text = out.strip().splitlines()
    assert text[0] == "ds (distributed id job1): 3 file(s), 6 B"
    assert len(text) == 3
    for c in contribs:
        assert any(line.strip().startswith(c["writer"]) for line in text[1:])

    rc, out, err = cli("staging", "show", "nope")
    assert rc == 1 and "nothing is staged under distributed id 'nope'" in err

    own = write_tree(tmp_path / "own", {"README": "r"})
    rc, out, err = cli("finish", own, "-n", "ds", "--distributed-id", "job1", "-a", "gold")
    assert rc == 0, err
    assert out.strip() == "ds:v0"
    art = store.artifact("ds:gold")
    assert art.version == "v0"
    assert downloaded(art, tmp_path / "out") == {
        "one.txt": b"1", "sub/two.txt": b"22", "three.txt": b"333", "README": b"r"}
    rc, out, err = cli("staging", "ls", "--json")
    assert rc == 0 and json.loads(out) == []

    # A late put after the finish: rc 1, one line naming the version.
    rc, out, err = cli("put", b, "-n", "ds", "--distributed-id", "job1")
    assert rc == 1
    assert err.startswith("artstore: error: ") and "ds:v0" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc, out, err = cli("finish", "-n", "ds", "--distributed-id", "job1")
    assert rc == 1 and "ds:v0" in err and "Traceback" not in err
    assert len(store.versions("ds")) == 1


def test_cli_finish_conflict_is_one_line_error(tmp_path: Path,
                                               cli: CliRun,
                                               store: artstore.Store) -> None:
    a = write_tree(tmp_path / "a", {"clash.txt": "from a", "a.txt": "a"})
    b = write_tree(tmp_path / "b", {"clash.txt": "from b, longer", "b.txt": "b"})
    assert cli("put", a, "-n", "ds", "--distributed-id", "c1")[0] == 0
    time.sleep(0.01)
    assert cli("put", b, "-n", "ds", "--distributed-id", "c1")[0] == 0
    rc, out, _ = cli("staging", "show", "c1", "--json")
    writers = [c["writer"] for c in json.loads(out)[0]["contributions"]]
    assert len(set(writers)) == 2

    rc, out, err = cli("finish", "-n", "ds", "--distributed-id", "c1")
    assert rc == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("artstore: error: ")
    assert "clash.txt" in lines[0] and "Traceback" not in err
    for w in writers:
        assert w in lines[0]
    assert store.artifact_names() == []
    assert len(pending_of(store, "ds", "c1").contributions) == 2

    rc, out, err = cli("finish", "-n", "ds", "--distributed-id", "c1", "--on-conflict", "newest")
    assert rc == 0, err
    assert out.strip() == "ds:v0"
    got = downloaded(store.artifact("ds:v0"), tmp_path / "out")
    assert got == {"clash.txt": b"from b, longer", "a.txt": b"a", "b.txt": b"b"}

    rc, out, err = cli("finish", "-n", "ds", "--distributed-id", "c1", "--on-conflict", "bogus")
    assert rc == 2


@pytest.mark.timeout(120)
def test_cli_finish_wait_for_with_polling_observer(tmp_path: Path, store_path: Path) -> None:
    store = artstore.Store(store_path)
    env = {"ARTSTORE_WATCH": "poll"}
    finisher = spawn_cli("finish", "-n", "ds", "--distributed-id", "cw", "--wait-for", "2",
                         "--timeout", "60", "--json", env=env, cwd=tmp_path)
    _wait_for_finisher_waiting(store_path, "ds", "cw", finisher)
    time.sleep(1.0)
    assert finisher.poll() is None
    srcs = [write_tree(tmp_path / f"p{i}", {f"part{i}.txt": f"part {i}"}) for i in range(2)]
    puts = [spawn_cli("put", s, "-n", "ds", "--distributed-id", "cw", env=env, cwd=tmp_path)
            for s in srcs]
    for p in puts:
        assert "staged 1 file(s)" in finish_ok(p)
    described = json.loads(finish_ok(finisher, timeout=60))
    assert described["qualified_name"] == "ds:v0"
    assert described["files"] == 2
    assert sorted(store.artifact("ds:v0").manifest) == ["part0.txt", "part1.txt"]


def test_cli_finish_wait_for_timeout(tmp_path: Path, cli: CliRun,
                                     store: artstore.Store) -> None:
    src = write_tree(tmp_path / "s", {"a.txt": "a"})
    assert cli("put", src, "-n", "ds", "--distributed-id", "t1")[0] == 0
    start = time.monotonic()
    rc, out, err = cli("finish", "-n", "ds", "--distributed-id", "t1", "--wait-for", "2",
                       "--timeout", "1")
    elapsed = time.monotonic() - start
    assert rc == 1
    assert 1.0 <= elapsed < 15
    assert err.startswith("artstore: error: waited 1 s for 2 contributions")
    assert "Traceback" not in err
    assert store.artifact_names() == []
    assert len(pending_of(store, "ds", "t1").contributions) == 1
