#!/usr/bin/env python3
"""The artstore benchmark suite.

    python benchmarks/run.py --size tiny|small|full --out DIR [--cases a,b,...] [--trials N]

Builds seeded data sets in a temporary directory on disk, then times, side by side and
each as its own child process: artstore's operations (API in-process and CLI as a whole
process), physical references on the same data (cp, cp + sync, cp -al, a Python walk and
stat, a Python read-and-hash), and the tools people would use instead (DVC, restic,
git-annex, W&B offline, Oxen), each skipped with a note when it is not installed. Takes the
median of several trials, the ratio to each reference and the peak RSS of each case, and
writes results.md and results.json into --out. The page cache is warm for every figure.

``--cases`` takes data sets (a: one large file, b: many small files, c: medium files,
d: a source tree) and/or case filters (a group such as ``artstore``, ``ref``, ``dvc``, or a
case id such as ``artstore.put_first_api``); see ``--list``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _tools  # noqa: E402
from _report import render_markdown, render_table, evaluate_targets  # noqa: E402

CHILD = str(HERE / "_child.py")
KiB, MiB, GiB = 1024, 1024**2, 1024**3

SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(big=4 * MiB, many=200, many_dirs=10, small_size=4 * KiB,
                 medium_n=3, medium_size=1 * MiB, src=300, trials=1, timeout=300),
    "small": dict(big=128 * MiB, many=4000, many_dirs=40, small_size=4 * KiB,
                  medium_n=5, medium_size=16 * MiB, src=1000, trials=3, timeout=1200),
    "full": dict(big=1 * GiB, many=20000, many_dirs=100, small_size=4 * KiB,
                 medium_n=20, medium_size=50 * MiB, src=None, trials=5, timeout=3600),
}
#: Tools slow enough that they get at most this many trials.
SLOW_TRIALS = 3

DATASETS = {
    "a": "one large file",
    "b": "many small files",
    "c": "medium files",
    "d": "source tree (Python stdlib .py files)",
}
#: Data sets of fewer files than this have each trial's outputs deleted when the trial
#: ends (deleting a few large files is cheap); trees of many files are kept to the end,
#: because creating files right after deleting many is 8-15x slower on this machine.
FEW_FILES = 1000


def log(msg: str) -> None:
    print(msg, flush=True)


# -- data ---------------------------------------------------------------------------


def _backdate(root: Path, seconds: float = 3600.0) -> None:
    """Set mtimes an hour back: data sets are rarely seconds old when they are added,
    and artstore's stat cache does not trust a file hashed within 2 s of its mtime."""
    when = time.time() - seconds
    paths = [root] if root.is_file() else [Path(d, f) for d, _, fs in os.walk(root) for f in fs]
    for p in paths:
        os.utime(p, (when, when))


def _random_file(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def build_data(root: Path, size: dict[str, Any], which: list[str]) -> dict[str, dict[str, Any]]:
    """Build the data sets in ``which`` under ``root``; return their descriptions."""
    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Any]] = {}
    if "a" in which:
        path = root / "a" / "big.bin"
        path.parent.mkdir()
        _random_file(path, size["big"], seed=1)
        out["a"] = dict(path=str(path), files=1, bytes=size["big"])
    if "b" in which:
        base = root / "b" / "many"
        rng = random.Random(2)
        n, dirs = size["many"], size["many_dirs"]
        for d in range(dirs):
            (base / f"d{d:03d}").mkdir(parents=True)
        for i in range(n):
            (base / f"d{i % dirs:03d}" / f"f{i:05d}.bin").write_bytes(rng.randbytes(size["small_size"]))
        out["b"] = dict(path=str(base), files=n, bytes=n * size["small_size"], folders=dirs)
    if "c" in which:
        base = root / "c" / "medium"
        base.mkdir(parents=True)
        for i in range(size["medium_n"]):
            _random_file(base / f"part{i:02d}.bin", size["medium_size"], seed=100 + i)
        out["c"] = dict(path=str(base), files=size["medium_n"],
                        bytes=size["medium_n"] * size["medium_size"])
    if "d" in which:
        base = root / "d" / "src"
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        found = sorted(
            Path(d, f).relative_to(stdlib)
            for d, dirs, fs in os.walk(stdlib)
            if "site-packages" not in Path(d).relative_to(stdlib).parts
            for f in fs if f.endswith(".py")
        )
        if size["src"] is not None:
            found = found[: size["src"]]
        total = 0
        for rel in found:
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stdlib / rel, base / rel)
            total += (base / rel).stat().st_size
        out["d"] = dict(path=str(base), files=len(found), bytes=total,
                        source=f"{stdlib} (*.py, Python {platform.python_version()})")
    for info in out.values():
        _backdate(Path(info["path"]))
    return out


def change_one_file(data: Path, trial: int) -> str:
    """Overwrite 16 bytes of one file in place (the first file), keeping its size."""
    target = data if data.is_file() else min(
        Path(d, f) for d, _, fs in os.walk(data) for f in fs)
    with open(target, "r+b") as f:
        f.write(random.Random(f"change-{trial}-{time.time_ns()}").randbytes(16))
    return str(target)


def copy_tree(src: Path, dest: Path) -> None:
    """Untimed setup copy (cp -r keeps this as fast as the reference)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-r", str(src), str(dest)], check=True)


# -- running one timed process ---------------------------------------------------------


@dataclass
class Measured:
    ok: bool
    proc: float | None = None          # whole-process wall time, s
    op: float | None = None            # in-process time of the operation alone, s
    maxrss_kib: int | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def run_timed(argv: list[str], env: dict[str, str], cwd: Path, logdir: Path, tag: str,
              timeout: float, result_file: Path | None = None,
              wrap: list[str] | None = None) -> Measured:
    """Run one child process, timed; its peak RSS comes from wait4 (the child and the
    descendants it waited for). The filesystem is synced first so that no earlier
    case's dirty pages are flushed on this case's time."""
    subprocess.run(["sync"], check=False)
    logdir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logdir / f"{tag}.out", logdir / f"{tag}.err"
    full_env = {**os.environ, **env}
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        rss_file = logdir / f"{tag}.rss"
        timer_argv = [TIME, "-f", "%M", "-o", str(rss_file)] if TIME else []
        p = subprocess.Popen(timer_argv + (wrap or []) + argv, cwd=cwd, env=full_env, stdout=out,
                             stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        timer = threading.Timer(timeout, _kill_group, (p.pid,))
        timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        elapsed = time.perf_counter() - t0
        timer.cancel()
    if elapsed >= timeout:
        p.returncode = -9
        return Measured(False, error=f"timed out after {timeout:.0f} s")
    p.returncode = os.waitstatus_to_exitcode(status)
    leftovers = _kill_group(p.pid)
    m = Measured(p.returncode == 0, proc=elapsed, maxrss_kib=_time_rss(rss_file) or ru.ru_maxrss)
    if leftovers:
        m.extra["note"] = "left processes running after it exited; they were ended"
    if p.returncode != 0:
        tail = err_path.read_text(errors="replace").strip().splitlines()[-4:]
        m.error = f"exit {p.returncode}: " + " | ".join(tail)[-600:]
    elif result_file is not None:
        try:
            res = json.loads(result_file.read_text())
            m.op = res.pop("op", None)
            m.extra.update({k: v for k, v in res.items() if v is not None})
        except (OSError, ValueError) as exc:
            m.ok, m.error = False, f"no result from child: {exc}"
    return m


#: GNU time reports the peak RSS of the command alone. A child forked from this suite's own
#: interpreter would report at least the interpreter's RSS (Linux carries the high-water
#: mark across fork and exec), so wait4's figure is only the fallback.
TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def _time_rss(path: Path) -> int | None:
    try:
        return int(path.read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _kill_group(pgid: int) -> bool:
    """End what is left of the process group this suite started for one case."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


# -- cases ---------------------------------------------------------------------------


@dataclass
class Step:
    """What one trial of a case runs: a command, or a _child.py operation."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    result_file: Path | None = None
    after: Callable[[Measured], None] | None = None


class Skip(Exception):
    pass


@dataclass
class Case:
    id: str
    group: str           # ref | artstore | alternative | startup
    label: str
    timing: str          # "in-process" or "whole process"
    prepare: Callable[["Trial"], Step]
    tool: str | None = None
    slow: bool = False
    heavy: bool = False  # in a tiny run, only on one data set
    note: str | None = None


class Trial:
    """The state one trial of one data set shares between its cases."""

    def __init__(self, bench: "Bench", dataset: str, index: int, info: dict[str, Any]):
        self.bench = bench
        self.dataset = dataset
        self.index = index
        self.data = Path(info["path"])
        self.dir = bench.work / "trials" / dataset / f"t{index}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state: dict[str, Any] = {}
        self.counter = 0

    def fresh(self, name: str) -> Path:
        """A new path in this trial's directory (never reused: nothing is deleted)."""
        self.counter += 1
        return self.dir / f"{self.counter:02d}-{name}"

    def child(self, op: str, args: dict[str, Any], env: dict[str, str] | None = None,
              cwd: Path | None = None) -> Step:
        result = self.fresh(f"{op}.json")
        return Step([sys.executable, CHILD, op, str(result), json.dumps(args)], env or {},
                    cwd, result)

    def setup(self, step: Step, what: str) -> Measured:
        m = run_timed(step.argv, step.env, step.cwd or self.dir, self.dir / "logs",
                      f"setup-{self.counter:02d}", self.bench.timeout, step.result_file)
        if not m.ok:
            raise RuntimeError(f"setup ({what}) failed: {m.error}")
        return m

    # artstore prerequisites, made untimed when the case that makes them was not selected

    def artstore_env(self, key: str = "cache") -> dict[str, str]:
        if key not in self.state:
            self.state[key] = str(self.fresh("statcache"))
        return {"ARTSTORE_CACHE_DIR": self.state[key]}

    def store(self) -> Path:
        if "store" not in self.state:
            store = self.fresh("store")
            self.setup(self.child("artstore_put", dict(store=str(store), src=str(self.data),
                                                       name="data"), self.artstore_env()),
                       "first put")
            self.state["store"] = store
        return self.state["store"]

    def copy_root(self) -> Path:
        if "copy_root" not in self.state:
            root = self.fresh("get-copy")
            self.setup(self.child("artstore_get", dict(store=str(self.store()), name="data",
                                                       root=str(root), mode="copy")), "get")
            self.state["copy_root"] = root
        return self.state["copy_root"]


def data_arg(t: Trial) -> str:
    return str(t.data)


def build_cases() -> list[Case]:
    cases: list[Case] = []

    def add(*args: Any, **kw: Any) -> None:
        cases.append(Case(*args, **kw))

    # -- references
    def cp(t: Trial) -> Step:
        flag = [] if t.data.is_file() else ["-r"]
        return Step(["cp", *flag, "--", str(t.data), str(t.fresh("cp"))])

    def cp_sync(t: Trial) -> Step:
        flag = "" if t.data.is_file() else "-r "
        return Step(["sh", "-c", f'cp {flag}-- "$1" "$2" && sync', "sh", str(t.data),
                     str(t.fresh("cp-sync"))])

    def cp_al(t: Trial) -> Step:
        return Step(["cp", "-al", "--", str(t.data), str(t.fresh("cp-al"))])

    add("ref.cp", "ref", "cp / cp -r", "whole process", cp, tool="cp")
    add("ref.cp_sync", "ref", "cp / cp -r, then sync", "whole process", cp_sync, tool="cp + sync")
    add("ref.cp_al", "ref", "cp -al (hard links)", "whole process", cp_al, tool="cp -al")
    add("ref.walkstat", "ref", "Python os.walk + stat", "in-process",
        lambda t: t.child("walkstat", dict(src=data_arg(t))))
    add("ref.readhash", "ref", "Python read + xxh3_128", "in-process",
        lambda t: t.child("readhash", dict(src=data_arg(t))))

    # -- artstore
    def put_first_api(t: Trial) -> Step:
        store = t.fresh("store")
        step = t.child("artstore_put", dict(store=str(store), src=data_arg(t), name="data"),
                       t.artstore_env())
        step.after = lambda m: m.ok and t.state.setdefault("store", store)
        return step

    def put_first_cli(t: Trial) -> Step:
        store = t.fresh("store-cli")
        return Step(_tools.artstore_cli() + ["put", data_arg(t), "-n", "data", "--store", str(store)],
                    t.artstore_env("cache-cli"))

    def put_unchanged_api(t: Trial) -> Step:
        return t.child("artstore_put", dict(store=str(t.store()), src=data_arg(t), name="data"),
                       t.artstore_env())

    def put_unchanged_cli(t: Trial) -> Step:
        return Step(_tools.artstore_cli() + ["put", data_arg(t), "-n", "data",
                                             "--store", str(t.store())], t.artstore_env())

    def get(mode: str) -> Callable[[Trial], Step]:
        def prepare(t: Trial) -> Step:
            root = t.fresh(f"get-{mode}")
            step = t.child("artstore_get", dict(store=str(t.store()), name="data",
                                                root=str(root), mode=mode))
            if mode == "copy":
                step.after = lambda m: m.ok and t.state.setdefault("copy_root", root)
            return step
        return prepare

    def verify(t: Trial) -> Step:
        return t.child("artstore_verify", dict(store=str(t.store()), name="data",
                                               root=str(t.copy_root())))

    def put_changed_api(t: Trial) -> Step:
        store = t.store()
        t.copy_root()  # verify's input must be made before the data changes
        t.state["changed"] = change_one_file(t.data, t.index)
        return t.child("artstore_put", dict(store=str(store), src=data_arg(t), name="data"),
                       t.artstore_env())

    def collab(n: int) -> Callable[[Trial], Step]:
        def prepare(t: Trial) -> Step:
            import artstore

            if not hasattr(artstore.Run, "upsert_artifact"):
                raise Skip("artstore.Run has no upsert_artifact yet: the collaborative API "
                           "(run.upsert_artifact / run.finish_artifact with distributed_id; "
                           "CLI put --distributed-id, finish) is not implemented")
            return t.child("artstore_collab", dict(
                store=str(t.fresh(f"store-collab{n}")), src=data_arg(t), name="data",
                writers=n, distributed_id=f"bench-{t.dataset}-{t.index}-{n}"),
                t.artstore_env(f"cache-collab{n}"))
        return prepare

    def collab_cli(n: int) -> Callable[[Trial], Step]:
        def prepare(t: Trial) -> Step:
            import artstore

            if not hasattr(artstore.Run, "upsert_artifact"):
                raise Skip("artstore has no collaborative API yet (CLI put --distributed-id, "
                           "finish)")
            # untimed: each writer's share of the files, hard-linked at its relative path
            shards = t.fresh(f"shards{n}")
            files = sorted((os.path.relpath(os.path.join(d, f), t.data), os.path.join(d, f))
                           for d, _, fs in os.walk(t.data) for f in fs) if t.data.is_dir() \
                else [(t.data.name, str(t.data))]
            for i, (rel, full) in enumerate(files):
                dest = shards / f"w{i % n:02d}" / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.link(full, dest)
            dirs = [str(shards / f"w{k:02d}") for k in range(n) if (shards / f"w{k:02d}").exists()]
            return t.child("artstore_collab_cli", dict(
                cli=_tools.artstore_cli(), store=str(t.fresh(f"store-collab-cli{n}")),
                shards=dirs, name="data", distributed_id=f"bench-cli-{t.dataset}-{t.index}-{n}"),
                t.artstore_env(f"cache-collab-cli{n}"))
        return prepare

    def put_link_api(t: Trial) -> Step:
        # The linking ingest makes its files read-only and part of the store: it gets a
        # copy of the data of its own (made untimed), never the shared one.
        src = t.fresh("link-src") / t.data.name
        copy_tree(t.data, src)
        return t.child("artstore_put", dict(store=str(t.fresh("store-link")), src=str(src),
                                            name="data", link=True), t.artstore_env("cache-link"))

    add("artstore.put_first_api", "artstore", "put, first (API)", "in-process", put_first_api,
        tool="artstore")
    add("artstore.put_link_api", "artstore", "put, first, linking ingest (API)", "in-process",
        put_link_api, tool="artstore")
    add("artstore.put_first_cli", "artstore", "put, first (CLI)", "whole process", put_first_cli,
        tool="artstore")
    add("artstore.put_unchanged_api", "artstore", "put again, unchanged (API)", "in-process",
        put_unchanged_api, tool="artstore")
    add("artstore.put_unchanged_cli", "artstore", "put again, unchanged (CLI)", "whole process",
        put_unchanged_cli, tool="artstore")
    add("artstore.get_copy", "artstore", "get, copy mode (API)", "in-process", get("copy"),
        tool="artstore")
    add("artstore.get_hardlink", "artstore", "get, hardlink mode (API)", "in-process",
        get("hardlink"), tool="artstore")
    add("artstore.verify", "artstore", "verify a copy (API)", "in-process", verify,
        tool="artstore")
    add("artstore.put_changed_api", "artstore", "put again, one file changed (API)", "in-process",
        put_changed_api, tool="artstore")
    add("artstore.collab8", "artstore", "collaborative put, 8 writers + finish", "in-process",
        collab(8), tool="artstore", heavy=True)
    add("artstore.collab32", "artstore", "collaborative put, 32 writers + finish", "in-process",
        collab(32), tool="artstore", heavy=True)
    add("artstore.collab8_cli", "artstore", "collaborative put, 8 CLI writers + CLI finish",
        "whole process", collab_cli(8), tool="artstore", heavy=True)

    # -- alternatives, each a whole process
    def inside(t: Trial, repo: Path) -> Path:
        target = repo / t.data.name
        copy_tree(t.data, target)
        return target

    def dvc_env(t: Trial) -> dict[str, str]:
        return {"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(t.dir / "dvc-site-cache")}

    def dvc_repo(t: Trial) -> Path:
        if "dvc" not in t.state:
            repo = t.fresh("dvc")
            repo.mkdir()
            inside(t, repo)
            t.setup(Step([_tools.bin_path("dvc") or "dvc", "init", "--no-scm", "-q"],
                         dvc_env(t), repo), "dvc init")
            t.state["dvc"] = repo
        return t.state["dvc"]

    def dvc_add(again: bool) -> Callable[[Trial], Step]:
        def prepare(t: Trial) -> Step:
            if again and "dvc_added" not in t.state:
                t.setup(dvc_add(False)(t), "dvc add")
            repo = dvc_repo(t)
            t.state["dvc_added"] = True
            return Step([_tools.bin_path("dvc") or "dvc", "add", "-q", t.data.name],
                        dvc_env(t), repo)
        return prepare

    def restic_env(t: Trial) -> dict[str, str]:
        return {"RESTIC_PASSWORD": "artstore-bench", "RESTIC_CACHE_DIR": str(t.dir / "restic-cache")}

    def restic(again: bool) -> Callable[[Trial], Step]:
        def prepare(t: Trial) -> Step:
            if "restic" not in t.state:
                repo = t.fresh("restic-repo")
                t.setup(Step(["restic", "init", "-q", "-r", str(repo)], restic_env(t)), "restic init")
                t.state["restic"] = repo
                if again:
                    t.setup(restic(False)(t), "restic backup")
            return Step(["restic", "-q", "-r", str(t.state["restic"]), "backup", "--host", "bench",
                         str(t.data)], restic_env(t))
        return prepare

    def git_env() -> dict[str, str]:
        return {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
                "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}

    def annex(again: bool) -> Callable[[Trial], Step]:
        def prepare(t: Trial) -> Step:
            if "annex" not in t.state:
                repo = t.fresh("annex")
                repo.mkdir()
                t.setup(Step(["sh", "-c", "git init -q && git annex init -q bench"], git_env(), repo),
                        "git annex init")
                inside(t, repo)
                t.state["annex"] = repo
                if again:
                    t.setup(annex(False)(t), "git annex add")
            return Step(["git", "annex", "add", "-q", t.data.name], git_env(), t.state["annex"])
        return prepare

    def wandb_env(t: Trial) -> dict[str, str]:
        base = t.dir / "wandb-home"
        return {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
                "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true",
                "WANDB_DIR": str(base), "WANDB_CACHE_DIR": str(base / "cache"),
                "WANDB_DATA_DIR": str(base / "data"), "WANDB_CONFIG_DIR": str(base / "config"),
                "WANDB_ARTIFACT_DIR": str(base / "artifacts")}

    def wandb(again: bool) -> Callable[[Trial], Step]:
        def prepare(t: Trial) -> Step:
            (t.dir / "wandb-home").mkdir(exist_ok=True)
            step = t.child("wandb_log", dict(src=data_arg(t), dir=str(t.dir / "wandb-home")),
                           wandb_env(t))
            if again and "wandb" not in t.state:
                t.setup(wandb(False)(t), "wandb log")
            t.state["wandb"] = True
            return step
        return prepare

    def oxen_env(t: Trial) -> dict[str, str]:
        return {"HOME": str(t.dir / "oxen-home")}

    def oxen(again: bool) -> Callable[[Trial], Step]:
        def prepare(t: Trial) -> Step:
            if "oxen" not in t.state:
                repo = t.fresh("oxen")
                repo.mkdir()
                t.setup(t.child("oxen_init", dict(repo=str(repo)), oxen_env(t)), "oxen init")
                inside(t, repo)
                t.state["oxen"] = repo
                if again:
                    t.setup(oxen(False)(t), "oxen commit")
            repo = t.state["oxen"]
            return t.child("oxen_commit", dict(repo=str(repo), src=str(repo / t.data.name)),
                           oxen_env(t), repo)
        return prepare

    for again in (False, True):
        sfx, word = ("_again", "again, unchanged") if again else ("", "first")
        add(f"dvc.add{sfx}", "alternative", f"dvc add, {word}", "whole process", dvc_add(again),
            tool="dvc", slow=True, heavy=True)
        add(f"restic.backup{sfx}", "alternative", f"restic backup, {word}", "whole process",
            restic(again), tool="restic", heavy=True)
        add(f"annex.add{sfx}", "alternative", f"git annex add, {word}", "whole process",
            annex(again), tool="git-annex", slow=True, heavy=True)
        add(f"wandb.log{sfx}", "alternative", f"W&B add_dir + log_artifact (offline), {word}",
            "whole process", wandb(again), tool="wandb", slow=True, heavy=True)
        add(f"oxen.commit{sfx}", "alternative", f"Oxen add + commit (Python API), {word}",
            "whole process", oxen(again), tool="oxen", slow=True, heavy=True)
    # references, then artstore (in the order added), then each tool's first and second run
    cases.sort(key=lambda c: ("ref artstore alternative".split().index(c.group),
                              c.tool if c.group == "alternative" else "", ))
    return cases


def startup_cases() -> list[Case]:
    def py(imports: list[str]) -> Callable[[Trial], Step]:
        return lambda t: t.child("noop", dict(imports=imports))

    return [
        Case("startup.python", "startup", "python -c pass (interpreter start)", "whole process",
             lambda t: Step([sys.executable, "-c", "pass"])),
        Case("startup.import_artstore", "startup", "python: import artstore", "whole process",
             py(["artstore"])),
        Case("startup.import_cli", "startup", "python: import artstore.cli", "whole process",
             py(["artstore.cli"])),
        Case("startup.cli_version", "startup", "artstore --version", "whole process",
             lambda t: Step(_tools.artstore_cli() + ["--version"])),
    ]


# -- the suite --------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path | None = None,
                 size: str | None = None) -> None:
        self.args = args
        self.size = SIZES[size or args.size]
        self.timeout = float(self.size["timeout"])
        self.work = work or Path(args.workdir or tempfile.mkdtemp(prefix="artstore-bench-",
                                                                  dir=_disk_tmp()))
        self.work.mkdir(parents=True, exist_ok=True)
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, dict[str, Any]] = {}

    def record(self, case: Case, dataset: str) -> dict[str, Any]:
        key = f"{dataset}:{case.id}"
        if key not in self.results:
            self.results[key] = dict(id=case.id, dataset=dataset, group=case.group,
                                     label=case.label, timing=case.timing, tool=case.tool,
                                     trials=[], skipped=None, notes=[])
        return self.results[key]


def _disk_tmp() -> str:
    for cand in (os.environ.get("ARTSTORE_BENCH_TMP"), "/var/tmp", tempfile.gettempdir()):
        if cand and os.path.isdir(cand) and os.access(cand, os.W_OK):
            return cand
    return tempfile.gettempdir()


def fs_type(path: Path) -> str:
    try:
        return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "unknown"


def parse_selection(spec: str | None) -> tuple[list[str], list[str]]:
    if not spec:
        return list(DATASETS), []
    tokens = [s.strip() for s in spec.split(",") if s.strip()]
    datasets = [s for s in tokens if s in DATASETS]
    filters = [s for s in tokens if s not in DATASETS]
    return datasets or list(DATASETS), filters


def selected(case: Case, filters: list[str]) -> bool:
    if not filters:
        return True
    for f in filters:
        if f == case.id or f == case.group or f == case.tool or case.id.startswith(f + ".") \
                or case.id.startswith(f):
            return True
    return False


def run_suite(bench: Bench, datasets: list[str], filters: list[str], trials: int,
              info: dict[str, dict[str, Any]], unavailable: dict[str, str],
              wrap: list[str] | None = None, quiet: bool = False) -> None:
    cases = [c for c in build_cases() if selected(c, filters)]
    starts = [] if wrap else [c for c in startup_cases()
                              if not filters or {"startup", "artstore"} & set(filters)]
    # a tiny run is a smoke test: the heavy cases (alternatives, collaborative writers) run on
    # one data set only, unless cases were chosen by name
    smoke = bench.size is SIZES["tiny"] and not filters and wrap is None
    smoke_ds = "b" if "b" in datasets else datasets[0]
    for index in range(trials):
        if not quiet:
            log(f"\n== trial {index + 1}/{trials}")
        for case in starts:
            t = Trial(bench, "startup", index, dict(path=str(bench.work)))
            run_case(bench, case, t, "-", unavailable, wrap, quiet)
        for ds in datasets:
            t = Trial(bench, ds, index, info[ds])
            for case in cases:
                if case.slow and index >= SLOW_TRIALS:
                    continue
                if case.heavy and smoke and (ds != smoke_ds or case.id == "artstore.collab32"):
                    continue
                run_case(bench, case, t, ds, unavailable, wrap, quiet)
            if info[ds]["files"] < FEW_FILES:
                # a few large files per case: delete now (cheap, and a full run would not
                # fit on the disk otherwise), --keep or not
                shutil.rmtree(t.dir, ignore_errors=True)


def run_case(bench: Bench, case: Case, t: Trial, ds: str, unavailable: dict[str, str],
             wrap: list[str] | None, quiet: bool) -> None:
    rec = bench.record(case, ds)
    if rec["skipped"]:
        return
    if case.tool in unavailable:
        rec["skipped"] = f"{case.tool} unavailable: {unavailable[case.tool]}"
        if not quiet:
            log(f"  {ds} {case.id:32s} skipped: {rec['skipped']}")
        return
    try:
        step = case.prepare(t)
    except Skip as why:
        rec["skipped"] = str(why)
        if not quiet:
            log(f"  {ds} {case.id:32s} skipped: {why}")
        return
    except Exception as exc:  # noqa: BLE001 - a broken setup fails this case, not the suite
        rec["trials"].append(dict(trial=t.index, ok=False, error=f"setup: {exc}"))
        log(f"  {ds} {case.id:32s} FAILED in setup: {exc}")
        return
    m = run_timed(step.argv, step.env, step.cwd or t.dir, t.dir / "logs",
                  f"{t.counter:02d}-{case.id}", bench.timeout, step.result_file, wrap)
    if step.after is not None:
        step.after(m)
    rec["trials"].append(dict(trial=t.index, ok=m.ok, proc=m.proc, op=m.op, maxrss_kib=m.maxrss_kib,
                              error=m.error, **m.extra))
    if m.extra.get("note") and m.extra["note"] not in rec["notes"]:
        rec["notes"].append(m.extra["note"])
    if quiet:
        return
    if m.ok:
        op = f"op {m.op:8.3f} s  " if m.op is not None else " " * 15
        log(f"  {ds} {case.id:32s} {op}proc {m.proc:8.3f} s  rss {m.maxrss_kib / 1024:7.1f} MiB")
    else:
        log(f"  {ds} {case.id:32s} FAILED: {m.error}")


def _primary(rec: dict[str, Any], t: dict[str, Any]) -> float | None:
    if rec["timing"] == "in-process" and t.get("op") is not None:
        return t["op"]
    return t.get("proc")


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians, ranges, peak RSS and ratios of each case's trials.

    A ratio is the median, over trials, of the case's time divided by the reference's
    time in the same trial (the two ran minutes apart at most, under the same load);
    ``ratios_of_medians`` divides the medians instead.
    """
    rows = []
    for rec in records:
        for i, t in enumerate(rec["trials"]):
            t.setdefault("trial", i)
        good = [t for t in rec["trials"] if t.get("ok")]
        rec["n"] = len(good)
        rec["failed"] = len(rec["trials"]) - len(good)
        rec["failure"] = "; ".join(sorted({str(t.get("error")) for t in rec["trials"]
                                           if not t.get("ok")}))[:600] or None
        procs = [t["proc"] for t in good if t.get("proc") is not None]
        ops = [t["op"] for t in good if t.get("op") is not None]
        rec["median_proc"] = statistics.median(procs) if procs else None
        rec["median_op"] = statistics.median(ops) if ops else None
        primary = [v for v in (_primary(rec, t) for t in good) if v is not None]
        rec["median"] = statistics.median(primary) if primary else None
        rec["min"] = min(primary) if primary else None
        rec["max"] = max(primary) if primary else None
        rss = [t["maxrss_kib"] for t in good if t.get("maxrss_kib")]
        rec["peak_rss_mib"] = max(rss) / 1024 if rss else None
        rows.append(rec)
    refs = {(r["dataset"], r["id"]): r for r in rows if r["group"] == "ref"}
    for r in rows:
        r["ratios"], r["ratios_of_medians"] = {}, {}
        if r["median"] is None:
            continue
        mine = {t["trial"]: _primary(r, t) for t in r["trials"] if t.get("ok")}
        for (ds, rid), ref in refs.items():
            if ds != r["dataset"] or not ref["median"]:
                continue
            r["ratios_of_medians"][rid] = r["median"] / ref["median"]
            theirs = {t["trial"]: _primary(ref, t) for t in ref["trials"] if t.get("ok")}
            pairs = [mine[i] / theirs[i] for i in mine
                     if i in theirs and mine[i] is not None and theirs[i]]
            r["ratios"][rid] = statistics.median(pairs) if pairs else r["median"] / ref["median"]
    return rows


def fsync_probe(bench: Bench, datasets: list[str], filters: list[str],
                unavailable: dict[str, str]) -> dict[str, dict[str, int]]:
    """Run every case once more on tiny data under strace, counting syncing syscalls."""
    if not _tools.available("strace"):
        return {}
    log("\n== fsync probe: each case once on tiny data under strace -f -c")
    probe = Bench(bench.args, work=bench.work / "probe", size="tiny")
    info = build_data(probe.work / "data", probe.size, datasets)
    trace_dir = bench.work / "probe" / "strace"
    trace_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    calls = "fsync,fdatasync,syncfs,sync,sync_file_range,msync"
    cases = [c for c in build_cases() if selected(c, filters) and c.tool not in unavailable]
    for ds in datasets:
        t = Trial(probe, ds, 0, info[ds])
        for case in cases:
            out = trace_dir / f"{ds}-{case.id}.txt"
            wrap = ["strace", "-f", "-qq", "-c", "-o", str(out), "-e", f"trace={calls}"]
            run_case(probe, case, t, ds, unavailable, wrap, quiet=True)
            counts[f"{ds}:{case.id}"] = _parse_strace(out)
    return counts


def _parse_strace(path: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        # % time  seconds  usecs/call  calls  [errors]  syscall
        if len(parts) >= 5 and parts[-1] in ("fsync", "fdatasync", "syncfs", "sync",
                                              "sync_file_range", "msync"):
            try:
                found[parts[-1]] = int(parts[3])
            except ValueError:
                pass
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=list(SIZES), default="tiny")
    ap.add_argument("--out", help="directory for results.md and results.json")
    ap.add_argument("--cases", help="data sets (a,b,c,d) and/or case filters, comma-separated")
    ap.add_argument("--trials", type=int, help="trials per case (default 5 full, 3 small, "
                    f"1 tiny; slow tools at most {SLOW_TRIALS})")
    inst = ap.add_mutually_exclusive_group()
    inst.add_argument("--install", dest="install", action="store_true", default=None,
                      help="install missing alternatives (pip: dvc wandb oxenai; apt-get: "
                           "restic git-annex strace); default for small and full")
    inst.add_argument("--no-install", dest="install", action="store_false",
                      help="never install; skip what is missing (default for tiny)")
    ap.add_argument("--workdir", help="where data and trial outputs go (default: a new "
                    "directory under /var/tmp, on disk; never tmpfs, where fsync is free)")
    ap.add_argument("--keep", action="store_true", help="keep the working directory (data and "
                    "the trials of many-file sets; large-file trials are deleted as they end)")
    probe = ap.add_mutually_exclusive_group()
    probe.add_argument("--fsync-probe", dest="fsync_probe", action="store_true", default=None,
                       help="after the trials, run each case once on tiny data under strace "
                            "and count its sync syscalls (default for small and full)")
    probe.add_argument("--no-fsync-probe", dest="fsync_probe", action="store_false")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--report-only", metavar="RESULTS_JSON",
                    help="re-render results.md (into --out) and the table from a results.json")
    args = ap.parse_args(argv)

    if args.report_only:
        payload = json.loads(Path(args.report_only).read_text())
        payload["cases"] = summarize(payload["cases"])
        payload["meta"]["durability"] = _tools.DURABILITY
        payload["targets"] = evaluate_targets(payload["cases"])
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
            (Path(args.out) / "results.md").write_text(render_markdown(payload))
        log(render_table(payload))
        return 0

    if args.list:
        for c in startup_cases() + build_cases():
            log(f"{c.id:32s} {c.group:12s} {c.timing:14s} {c.label}")
        return 0

    if not args.out:
        ap.error("--out is required")
    datasets, filters = parse_selection(args.cases)
    bench = Bench(args)
    trials = args.trials or bench.size["trials"]
    install = args.install if args.install is not None else args.size != "tiny"
    log(f"artstore benchmarks: size {args.size}, data sets {','.join(datasets)}, "
        f"{trials} trial(s), work in {bench.work} ({fs_type(bench.work)})")
    if fs_type(bench.work) == "tmpfs":
        log("warning: the working directory is on tmpfs, where fsync costs nothing")

    wanted_tools = sorted({c.tool for c in build_cases() if c.group == "alternative"
                           and selected(c, filters)})
    unavailable: dict[str, str] = {}
    if install:
        unavailable = _tools.install(wanted_tools + ["strace"], log)
        unavailable.pop("strace", None)
    for tool in wanted_tools:
        if not _tools.available(tool) and tool not in unavailable:
            unavailable[tool] = "not installed (run with --install)"
    for tool, why in unavailable.items():
        log(f"  {tool}: skipped, {why}")

    t0 = time.time()
    log("building data ...")
    info = build_data(bench.work / "data", bench.size, datasets)
    for ds, d in info.items():
        log(f"  ({ds}) {DATASETS[ds]}: {d['files']} files, {d['bytes'] / MiB:.1f} MiB")
    # warm the page cache: every figure below is taken warm
    for d in info.values():
        subprocess.run([sys.executable, CHILD, "readhash", os.devnull, json.dumps(dict(src=d["path"]))],
                       check=True)

    exit_code = 0
    try:
        run_suite(bench, datasets, filters, trials, info, unavailable)
        do_probe = args.fsync_probe if args.fsync_probe is not None else args.size != "tiny"
        probe = fsync_probe(bench, datasets, filters, unavailable) if do_probe else {}
        rows = summarize(list(bench.results.values()))
        meta = dict(
            date=dt.datetime.now().isoformat(timespec="seconds"),
            size=args.size, trials=trials, slow_trials=min(trials, SLOW_TRIALS),
            datasets={ds: {**info[ds], "what": DATASETS[ds]} for ds in datasets},
            machine=dict(cores=os.cpu_count(), platform=platform.platform(),
                         python=platform.python_version(), workdir_fs=fs_type(bench.work),
                         memory_gib=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB, 1)),
            artstore=_artstore_version(),
            tools={t: _tools.version(t) for t in wanted_tools},
            unavailable=unavailable,
            durability=_tools.DURABILITY,
            page_cache="warm (data read once before the trials; nothing dropped)",
            seconds=round(time.time() - t0, 1),
        )
        targets = evaluate_targets(rows)
        payload = dict(meta=meta, cases=rows, targets=targets, fsync_probe=probe)
        (bench.out / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
        (bench.out / "results.md").write_text(render_markdown(payload))
        log("\n" + render_table(payload))
        log(f"\nwrote {bench.out / 'results.md'} and {bench.out / 'results.json'} "
            f"({meta['seconds']} s)")
        broken = [r for r in rows if r["group"] in ("artstore", "ref", "startup") and r["failed"]]
        if broken:
            log("FAILED: " + ", ".join(f"{r['dataset']}:{r['id']}" for r in broken))
            exit_code = 1
    finally:
        if not args.keep:
            log(f"removing {bench.work} ...")
            shutil.rmtree(bench.work, ignore_errors=True)
    return exit_code


def _artstore_version() -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        import artstore

        out["version"] = artstore.__version__
        out["path"] = str(Path(artstore.__file__).parent)
        out["collaborative_api"] = hasattr(artstore.Run, "upsert_artifact")
    except Exception as exc:  # noqa: BLE001
        out["error"] = str(exc)
    try:
        out["commit"] = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                                       capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(HERE.parent), "status", "--porcelain", "--",
                                "artstore"], capture_output=True, text=True).stdout.strip()
        out["uncommitted_changes"] = bool(dirty)
    except OSError:
        pass
    return out


if __name__ == "__main__":
    sys.exit(main())
