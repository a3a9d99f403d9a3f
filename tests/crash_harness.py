"""Crash harness: kill -9 artstore processes at random moments and check nothing is lost.

Each round starts a real child process that performs one operation on a store (put,
collaborative upsert, finish, patch or gc), waits a random time after the child reports
that it is about to start, and kills it with SIGKILL. Then it checks:

- ``fsck`` finds no error (temporary files left behind are warnings, and gc removes them);
- every version committed so far still downloads byte-identical to what was logged;
- a collaborative contribution is wholly staged or absent, never in part;
- the interrupted operation, run again to completion, succeeds.

Run it at a few hundred kills with::

    python tests/crash_harness.py --kills 300 --seed 1

The test suite runs it at a small size (tests/test_crash.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

OPS = ("put", "put", "upsert", "upsert", "finish", "patch", "gc")
NAMES = ("alpha", "beta")
WRITERS = 3


def content(seed: str, files: int = 60, big: int = 3 * 1024 * 1024) -> dict[str, bytes]:
    """Deterministic file contents for one logical version."""
    rng = random.Random(seed)
    out = {f"d{i % 5}/f{i}.bin": rng.randbytes(rng.randint(1, 6000)) for i in range(files)}
    out["shared/common.txt"] = b"shared by every version\n" * 100
    out["big.bin"] = rng.randbytes(big)
    return out


def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for path, data in files.items():
        full = root / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)


# -- the child side ------------------------------------------------------------------------


def child(argv: list[str]) -> None:
    """Perform one operation; print 'go' just before it starts."""
    import artstore

    op, store_dir, *args = argv
    store = artstore.Store(store_dir)
    print("go", flush=True)
    if op == "put":
        name, src = args
        art = artstore.Artifact(name, "dataset")
        art.add_dir(src)
        art.save(store)
        print(art.version, flush=True)
    elif op == "upsert":
        did, src, writer = args
        run = artstore.init(store=store, group=did, id=writer)
        art = artstore.Artifact("collab", "results")
        art.add_dir(src, name=writer)
        run.upsert_artifact(art)
    elif op == "finish":
        (did,) = args
        run = artstore.init(store=store, group=did)
        try:
            run.finish_artifact(artstore.Artifact("collab", "results"))
        except artstore.SealedError:
            print("sealed", flush=True)
    elif op == "patch":
        name, src, remove = args
        draft = store.artifact(f"{name}:latest").new_draft()
        if remove in draft.manifest:
            draft.remove(remove)
        draft.add_file(src, name="patched/file.bin", overwrite=True)
        draft.save(store)
    elif op == "gc":
        store.gc(grace=0)
    else:
        raise SystemExit(f"unknown op {op}")


# -- the parent side -----------------------------------------------------------------------


@dataclass
class Tally:
    kills: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    versions_checked: int = 0
    problems: list[str] = field(default_factory=list)


class Harness:
    def __init__(self, work: Path, seed: int) -> None:
        self.work = work
        self.store_dir = work / "store"
        self.rng = random.Random(seed)
        self.seed = seed
        self.counter = 0
        #: (name, version) -> expected files
        self.expected: dict[tuple[str, str], dict[str, bytes]] = {}
        self.did = 0
        self.staged: dict[str, dict[str, bytes]] = {}  # writer -> files of current did
        self.tally = Tally()
        self.env = dict(os.environ)
        self.env["ARTSTORE_CACHE_DIR"] = str(work / "cache")

    def _cmd(self, op: str, *args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), "--child", op,
                str(self.store_dir), *args]

    def _run(self, op: str, *args: str, kill_after: float | None = None) -> subprocess.CompletedProcess[str] | None:
        proc = subprocess.Popen(self._cmd(op, *args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env)
        if kill_after is None:
            out, err = proc.communicate(timeout=300)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert proc.stdout is not None
        proc.stdout.readline()  # "go": imports done, the operation starts now
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        return None

    def _source(self, files: dict[str, bytes]) -> Path:
        self.counter += 1
        root = self.work / "src" / str(self.counter)
        write_tree(root, files)
        return root

    def _plan(self) -> tuple[str, tuple[str, ...], callable]:  # type: ignore[valid-type]
        op = self.rng.choice(OPS)
        if op == "finish" and not self.staged:
            op = "upsert"
        if op == "patch" and not any(n == "alpha" for n, _ in self.expected):
            op = "put"
        if op == "put":
            name = self.rng.choice(NAMES)
            files = content(f"{self.seed}-{self.counter}")
            src = self._source(files)
            return op, (name, str(src)), lambda: self._after_put(name, files)
        if op == "upsert":
            writer = f"w{self.rng.randrange(WRITERS)}"
            files = {f"{writer}/{p}": b for p, b in
                     content(f"{self.seed}-u{self.did}-{writer}", files=30, big=1024 * 1024).items()}
            src = self._source({p.split("/", 1)[1]: b for p, b in files.items()})
            return op, (f"job{self.did}", str(src), writer), lambda: self._after_upsert(writer, files)
        if op == "finish":
            return op, (f"job{self.did}",), self._after_finish
        if op == "patch":
            data = random.Random(self.counter).randbytes(2 * 1024 * 1024)
            self.counter += 1
            src = self.work / "src" / f"patch{self.counter}.bin"
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_bytes(data)
            return op, ("alpha", str(src), "d1/f1.bin"), lambda: self._after_patch(data)
        return op, (), lambda: None

    # What each completed operation must have produced:

    def _latest(self, name: str):  # type: ignore[no-untyped-def]
        import artstore

        return artstore.Store(self.store_dir).artifact(f"{name}:latest")

    def _after_put(self, name: str, files: dict[str, bytes]) -> None:
        art = self._latest(name)
        self.expected[(name, art.version)] = files
        self._check_version(name, art.version, files, download=True)

    def _after_patch(self, data: bytes) -> None:
        art = self._latest("alpha")
        base_version = f"v{max(int(v[1:]) for n, v in self.expected if n == 'alpha' and v != art.version)}"
        base = dict(self.expected[("alpha", base_version)])
        base.pop("d1/f1.bin", None)
        base["patched/file.bin"] = data
        self.expected[("alpha", art.version)] = base
        self._check_version("alpha", art.version, base, download=True)

    def _after_upsert(self, writer: str, files: dict[str, bytes]) -> None:
        self.staged[writer] = files
        self._check_staging()

    def _after_finish(self) -> None:
        art = self._latest("collab")
        want: dict[str, bytes] = {}
        for files in self.staged.values():
            want.update(files)
        self.expected[("collab", art.version)] = want
        self._check_version("collab", art.version, want, download=True)
        self.staged = {}
        self.did += 1

    # Checks:

    def _fail(self, message: str) -> None:
        self.tally.problems.append(message)

    def _check_staging(self) -> None:
        import artstore

        for pending in artstore.Store(self.store_dir).staging.pending():
            for contrib in pending.contributions:
                writer = contrib.writer.get("run")
                paths = {e.path for e in contrib.entries}
                expected = set(self.staged.get(writer, {})) if writer in self.staged else None
                if expected is not None and paths != expected:
                    self._fail(f"contribution {contrib.key} of {writer} is partial: "
                               f"{len(paths)} of {len(expected)} paths")

    def _check_version(self, name: str, version: str, files: dict[str, bytes],
                       download: bool) -> None:
        import artstore
        import xxhash

        self.tally.versions_checked += 1
        art = artstore.Store(self.store_dir).artifact(f"{name}:{version}")
        manifest = {p: e.digest for p, e in art.manifest.items()}
        want = {p: xxhash.xxh3_128_hexdigest(b) for p, b in files.items()}
        if manifest != want:
            self._fail(f"{name}:{version} holds other files than were logged")
            return
        if download:
            root = Path(tempfile.mkdtemp(dir=self.work / "downloads"))
            art.download(root)
            for path, data in files.items():
                if (root / path).read_bytes() != data:
                    self._fail(f"{name}:{version}: {path} differs after download")

    def check_store(self, download_all: bool = False) -> None:
        import artstore

        store = artstore.Store(self.store_dir)
        if not store.exists():
            # Killed before it created the store: right, if nothing was committed yet.
            if self.expected:
                self._fail(f"the store at {self.store_dir} is gone")
            return
        report = store.fsck()
        for problem in report.errors:
            self._fail(f"fsck: {problem}")
        for (name, version), files in self.expected.items():
            self._check_version(name, version, files, download=download_all)
        self._check_staging()

    def round(self) -> None:
        op, args, after = self._plan()
        self.tally.by_op[op] = self.tally.by_op.get(op, 0) + 1
        delay = self.rng.uniform(0.0, 0.25)
        self._run(op, *args, kill_after=delay)
        self.tally.kills += 1
        self.check_store()
        done = self._run(op, *args)
        assert done is not None
        if done.returncode != 0:
            self._fail(f"{op} {args} failed when run again after a kill: {done.stderr.strip()[-500:]}")
            return
        after()

    def finish(self) -> None:
        self._run("gc")
        self.check_store(download_all=True)
        import artstore

        leftovers = artstore.Store(self.store_dir).fsck().warnings
        if leftovers:
            self._fail(f"gc left {len(leftovers)} warning(s): {leftovers[0]}")


def run(kills: int, seed: int, work: Path) -> Tally:
    (work / "downloads").mkdir(parents=True, exist_ok=True)
    harness = Harness(work, seed)
    for _ in range(kills):
        harness.round()
        if harness.tally.problems:
            break
    if not harness.tally.problems:
        harness.finish()
    return harness.tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, help="Directory to work in (default: a temp dir).")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        child(opts.child)
        return
    work = opts.work or Path(tempfile.mkdtemp(prefix="artstore-crash-"))
    started = time.time()
    tally = run(opts.kills, opts.seed, work)
    print(json.dumps({"kills": tally.kills, "by_op": tally.by_op,
                      "versions_checked": tally.versions_checked,
                      "problems": tally.problems, "seconds": round(time.time() - started, 1)},
                     indent=2))
    if not opts.work and not tally.problems:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if tally.problems else 0)


if __name__ == "__main__":
    main()
