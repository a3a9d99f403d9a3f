"""Many separate processes writing one store at once.

Each writer is a real process (``python -c``) that imports artstore, then waits for a
"go" file before it calls the CLI's ``main``: all of them start their write at the same
moment, with interpreter start-up out of the way.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import xxhash

from artstore import Store

WRITERS = 16

#: argv: READY_FILE GO_FILE CLI-ARGS...  Imports artstore, says it is ready, waits for go.
WRITER = r"""
import os, sys, time
from artstore.cli import main
ready, go = sys.argv[1], sys.argv[2]
open(ready, "x").close()
deadline = time.monotonic() + 120
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("timed out waiting for the go file")
    time.sleep(0.001)
sys.exit(main(sys.argv[3:]))
"""

#: argv: READY_FILE GO_FILE BASE COUNT.  Creates stores BASE/d0 .. BASE/d{COUNT-1} in order
#: with the API and prints how many attempts raised, and the first error.
CREATOR = r"""
import os, sys, time
from artstore import ArtstoreError, Store
ready, go, base, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
open(ready, "x").close()
deadline = time.monotonic() + 120
while not os.path.exists(go):
    if time.monotonic() > deadline:
        sys.exit("timed out waiting for the go file")
    time.sleep(0.001)
failed, first = 0, ""
for k in range(count):
    try:
        Store.init(os.path.join(base, f"d{k}"))
    except ArtstoreError as exc:
        failed += 1
        first = first or f"{type(exc).__name__}: {exc}"
print(failed)
print(first)
"""


def run_together(
    commands: list[list[str]], barrier: Path, cwd: Path, script: str = WRITER
) -> list[tuple[int, str, str]]:
    """Start one process per argument list, release them together, collect the results.

    Each process creates its own ready file once it has imported artstore; the go file
    is written only when all of them are ready.
    """
    barrier.mkdir()
    go = barrier / "go"
    ready = [barrier / f"ready-{i}" for i in range(len(commands))]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(r), str(go), *args],
            cwd=cwd,
            env=dict(os.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r, args in zip(ready, commands)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready):
            assert all(p.poll() is None for p in procs), "a writer died before the barrier"
            assert time.monotonic() < deadline, "writers did not get ready in time"
            time.sleep(0.01)
        go.write_text("go")
        results = []
        for p in procs:
            out, err = p.communicate(timeout=240)
            results.append((p.returncode, out, err))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_sixteen_concurrent_puts_to_one_name(tmp_path: Path) -> None:
    store_path = tmp_path / "shared-store"
    Store.init(store_path)
    for round_ in range(2):
        files = []
        for i in range(WRITERS):
            f = tmp_path / f"round{round_}" / f"writer{i}.txt"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(f"round {round_} writer {i}\n" * (i + 1))
            files.append(f)
        commands = [
            ["--store", str(store_path), "put", str(f), "-n", "contended", "-a", f"w{round_}-{i}"]
            for i, f in enumerate(files)
        ]
        results = run_together(commands, tmp_path / f"barrier{round_}", tmp_path)
        for rc, out, err in results:
            assert rc == 0, err
            assert "Traceback" not in err and "error" not in err
        first = WRITERS * round_
        expected = {f"contended:v{n}" for n in range(first, first + WRITERS)}
        printed = [out.strip() for _rc, out, _err in results]
        assert sorted(printed) == sorted(expected)  # every process got its own version

        store = Store(store_path)
        versions = store.versions("contended")
        assert [v.version for v in versions] == [f"v{n}" for n in range(first + WRITERS)]
        contents = {}
        for v in versions[first:]:
            (entry,) = v.files()
            contents[entry.digest] = v
        # Each writer's content is present exactly once, in the version it printed.
        for i, f in enumerate(files):
            digest = xxhash.xxh3_128_hexdigest(f.read_bytes())
            assert digest in contents, f"writer {i}'s content is missing"
            v = contents[digest]
            assert f"w{round_}-{i}" in v.aliases
            assert printed[i] == v.qualified_name
        assert len(contents) == WRITERS
        assert store.artifact("contended:latest").version == f"v{first + WRITERS - 1}"
        # Parents chain: each version's parent is the version before it.
        for prev, cur in itertools.pairwise(versions):
            assert store.read_commit(cur.id)["parent"] == prev.id  # type: ignore[arg-type]


def test_sixteen_concurrent_first_puts_create_one_store(tmp_path: Path) -> None:
    """Writers that all find no store create it together; none of them may fail."""
    store_path = tmp_path / "new-store"
    commands = []
    for i in range(WRITERS):
        f = tmp_path / "files" / f"f{i}.txt"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"file {i}")
        commands.append(["--store", str(store_path), "put", str(f), "-n", f"art{i}"])
    results = run_together(commands, tmp_path / "barrier", tmp_path)
    failures = [err for rc, _out, err in results if rc != 0]
    assert failures == [], f"{len(failures)} writers failed, first: {failures[0]}"
    store = Store(store_path)
    assert store.artifact_names() == sorted(f"art{i}" for i in range(WRITERS))


def test_concurrent_creation_of_the_same_stores_never_fails(tmp_path: Path) -> None:
    """16 processes each create the same 150 new stores, in the same order.

    FORMAT.md and Store._ensure_created promise that processes creating one store at once
    agree on one marker: every Store.init must succeed, whichever process wins.
    """
    base = tmp_path / "stores"
    base.mkdir()
    count = 150
    commands = [[str(base), str(count)] for _ in range(WRITERS)]
    results = run_together(commands, tmp_path / "barrier", tmp_path, script=CREATOR)
    failed = 0
    first = ""
    for rc, out, err in results:
        assert rc == 0, err
        n, message = (out.split("\n", 1) + [""])[:2]
        failed += int(n)
        first = first or message.strip()
    assert failed == 0, f"{failed} of {WRITERS * count} Store.init calls failed; first: {first}"
    ids = set()
    for k in range(count):
        store = Store(base / f"d{k}")
        assert store.exists()
        assert store.artifact_names() == []
        ids.add((base / f"d{k}" / "artstore.json").read_text())
    assert len(ids) == count  # one marker per store, each with its own id
