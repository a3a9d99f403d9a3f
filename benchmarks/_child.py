"""One timed operation, run as its own process by ``run.py``.

Usage: ``python _child.py OP RESULT_JSON ARGS_JSON``. Imports happen before the clock
starts; the time of the operation alone is written to RESULT_JSON as ``{"op": seconds}``.
The parent times the whole process (interpreter start and imports included) and reads
its peak RSS, so each operation gets both figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _files(src: Path) -> list[tuple[str, Path]]:
    """(relative '/'-path, absolute path) of every file under ``src``, sorted."""
    if src.is_file():
        return [(src.name, src)]
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for f in sorted(filenames):
            full = Path(dirpath, f)
            out.append((full.relative_to(src).as_posix(), full))
    return out


# -- artstore ------------------------------------------------------------------------


def artstore_put(a: dict) -> dict:
    import artstore

    src = Path(a["src"])
    t0 = time.perf_counter()
    art = artstore.Artifact(a["name"], "dataset")
    # "immutable": the opt-in ingest that hard-links files into the store.
    policy = "immutable" if a.get("link") else "mutable"
    if src.is_dir():
        art.add_dir(src, policy=policy)
    else:
        art.add_file(src, policy=policy)
    art.save(artstore.Store(a["store"]))
    t1 = time.perf_counter()
    return {"op": t1 - t0, "version": art.version}


def artstore_get(a: dict) -> dict:
    import artstore

    t0 = time.perf_counter()
    art = artstore.Store(a["store"]).artifact(a["name"])
    art.download(a["root"], mode=a["mode"])
    return {"op": time.perf_counter() - t0}


def artstore_verify(a: dict) -> dict:
    import artstore

    t0 = time.perf_counter()
    artstore.Store(a["store"]).artifact(a["name"]).verify(a["root"])
    return {"op": time.perf_counter() - t0}


def artstore_collab(a: dict) -> dict:
    """N writer processes upsert shards of one distributed artifact, then one finishes it."""
    import artstore

    n = int(a["writers"])
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "artstore_collab_writer", os.devnull,
             json.dumps({**a, "shard": k})]
        )
        for k in range(n)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"collaborative writers failed: exit codes {codes}")
    t1 = time.perf_counter()
    run = artstore.init(store=a["store"], job_type="finish")
    art = artstore.Artifact(a["name"], "dataset")
    run.finish_artifact(art, distributed_id=a["distributed_id"])  # type: ignore[attr-defined]
    run.finish()
    t2 = time.perf_counter()
    return {"op": t2 - t0, "writers_s": t1 - t0, "finish_s": t2 - t1}


def artstore_collab_cli(a: dict) -> dict:
    """One ``artstore put SHARD --distributed-id`` process per shard, at once, then finish."""
    cli, store, did = a["cli"], a["store"], a["distributed_id"]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(cli + ["put", shard, "-n", a["name"], "--distributed-id", did,
                                "--store", store], stdout=subprocess.DEVNULL)
        for shard in a["shards"]
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"collaborative CLI writers failed: exit codes {codes}")
    t1 = time.perf_counter()
    subprocess.run(cli + ["finish", "-n", a["name"], "--distributed-id", did, "--store", store],
                   check=True, stdout=subprocess.DEVNULL)
    t2 = time.perf_counter()
    return {"op": t2 - t0, "writers_s": t1 - t0, "finish_s": t2 - t1}


def artstore_collab_writer(a: dict) -> dict:
    import artstore

    n, k = int(a["writers"]), int(a["shard"])
    run = artstore.init(store=a["store"], group=a["distributed_id"], job_type="writer")
    art = artstore.Artifact(a["name"], "dataset")
    for rel, full in _files(Path(a["src"]))[k::n]:
        art.add_file(full, name=rel)
    run.upsert_artifact(art, distributed_id=a["distributed_id"])  # type: ignore[attr-defined]
    run.finish()
    return {}


# -- physical references -------------------------------------------------------------


def walkstat(a: dict) -> dict:
    src = a["src"]
    t0 = time.perf_counter()
    n = 0
    if os.path.isfile(src):
        os.stat(src)
        n = 1
    else:
        for dirpath, _dirs, filenames in os.walk(src):
            for f in filenames:
                os.stat(os.path.join(dirpath, f))
                n += 1
    return {"op": time.perf_counter() - t0, "files": n}


def readhash(a: dict) -> dict:
    import xxhash

    t0 = time.perf_counter()
    buf = bytearray(4 * 1024 * 1024)
    view = memoryview(buf)
    total = 0
    for _rel, full in _files(Path(a["src"])):
        h = xxhash.xxh3_128()
        with open(full, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                h.update(view[:n])
                total += n
        h.digest()
    return {"op": time.perf_counter() - t0, "bytes": total}


def noop(a: dict) -> dict:
    for mod in a.get("imports", []):
        __import__(mod)
    return {"op": 0.0}


# -- alternatives --------------------------------------------------------------------


def wandb_log(a: dict) -> dict:
    import wandb

    src = Path(a["src"])
    t0 = time.perf_counter()
    run = wandb.init(project="artstore-bench", mode="offline", dir=a["dir"])
    art = wandb.Artifact("data", type="dataset")
    if src.is_dir():
        art.add_dir(str(src))
    else:
        art.add_file(str(src))
    run.log_artifact(art)
    run.finish()
    return {"op": time.perf_counter() - t0}


def oxen_init(a: dict) -> dict:
    from oxen import Repo, user

    user.config_user("artstore-bench", "bench@example.invalid")
    Repo(a["repo"]).init()
    return {"op": 0.0}


def oxen_commit(a: dict) -> dict:
    from oxen import Repo

    t0 = time.perf_counter()
    repo = Repo(a["repo"])
    repo.add(a["src"])
    note = None
    try:
        repo.commit(a.get("message", "bench"))
    except Exception as exc:  # "No changes to commit" on an unchanged tree
        if "no changes" not in str(exc).lower():
            raise
        note = "no changes to commit"
    return {"op": time.perf_counter() - t0, "note": note}


OPS = {f.__name__: f for f in (
    artstore_put, artstore_get, artstore_verify, artstore_collab, artstore_collab_cli,
    artstore_collab_writer,
    walkstat, readhash, noop, wandb_log, oxen_init, oxen_commit,
)}


def main() -> None:
    op, result_path, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    result = OPS[op](args)
    if result_path != os.devnull:
        Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
