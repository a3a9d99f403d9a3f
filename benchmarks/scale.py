"""How artstore scales with the number of files: put, list, diff and download.

    python benchmarks/scale.py --out DIR --files 10000,100000,1000000

For each count N it builds N small files (seeded, 64 to 191 bytes, 1,000 per folder),
then times, each as a whole CLI process, with its peak memory (GNU time):

- ``put`` of the tree (first put), and ``put`` again unchanged;
- ``ls NAME`` and ``show NAME`` (which loads the whole manifest);
- ``diff`` between the version and one made with 1% of the files changed;
- ``get`` of the version (copy mode);

and, in this process, the time to decode the version's manifest. It writes
``results.md`` and ``results.json`` to ``--out``: the figures per count and per file, so
that linear growth shows as a flat per-file column.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(root: Path, count: int, seed: int = 11) -> None:
    rng = random.Random(seed)
    for i in range(count):
        if i % 1000 == 0:
            folder = root / f"d{i // 1000:05d}"
            folder.mkdir(parents=True)
        (folder / f"f{i:07d}.txt").write_bytes(rng.randbytes(64 + i % 128))


def timed(argv: list[str], env: dict[str, str], work: Path) -> tuple[float, int | None]:
    """Seconds and peak RSS (KiB) of one command run to completion."""
    report = work / "time.txt"
    gnu_time = shutil.which("time") or "/usr/bin/time"
    prefix = [gnu_time, "-f", "%M", "-o", str(report)] if os.path.exists(gnu_time) else []
    start = time.perf_counter()
    proc = subprocess.run(prefix + argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-500:]}")
    rss = None
    if prefix:
        found = re.findall(r"^\d+$", report.read_text(), re.M)
        rss = int(found[-1]) if found else None
    return seconds, rss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--files", default="10000,100000")
    args = ap.parse_args(argv)
    counts = [int(n) for n in args.files.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "artstore"]
    rows: list[dict[str, object]] = []
    works: list[Path] = []
    # Trees are deleted only at the end: creating files right after deleting many is
    # several times slower on this machine for minutes.
    try:
        for count in counts:
            work = Path(tempfile.mkdtemp(prefix=f"artstore-scale-{count}-", dir="/var/tmp"))
            works.append(work)
            measure(work, count, cli, rows)
    finally:
        for work in works:
            shutil.rmtree(work, ignore_errors=True)
    report(rows, args.out)
    return 0


def measure(work: Path, count: int, cli: list[str], rows: list[dict[str, object]]) -> None:
    """Build ``count`` files under ``work`` and time each step on them into ``rows``."""
    data = work / "data"
    t0 = time.perf_counter()
    build(data, count)
    print(f"{count}: built in {time.perf_counter() - t0:.1f} s", flush=True)
    env = {**os.environ, "ARTSTORE_DIR": str(work / "store"),
           "ARTSTORE_CACHE_DIR": str(work / "cache")}
    steps = [
        ("put", cli + ["put", str(data), "-n", "big"]),
        ("put unchanged", cli + ["put", str(data), "-n", "big"]),
        ("ls", cli + ["ls", "big"]),
        ("show", cli + ["show", "big:v0"]),
    ]
    for label, command in steps:
        seconds, rss = timed(command, env, work)
        rows.append({"files": count, "step": label, "seconds": seconds, "rss_kib": rss})
        print(f"  {label}: {seconds:.2f} s, {rss} KiB", flush=True)
    # 1% of the files changed, for diff.
    for i in range(0, count, 100):
        path = data / f"d{i // 1000:05d}" / f"f{i:07d}.txt"
        path.write_bytes(b"changed " + path.read_bytes())
    seconds, rss = timed(cli + ["put", str(data), "-n", "big"], env, work)
    rows.append({"files": count, "step": "put, 1% changed", "seconds": seconds,
                 "rss_kib": rss})
    seconds, rss = timed(cli + ["diff", "big:v0", "big:v1"], env, work)
    rows.append({"files": count, "step": "diff", "seconds": seconds, "rss_kib": rss})
    seconds, rss = timed(cli + ["get", "big:v1", "--root", str(work / "out")], env, work)
    rows.append({"files": count, "step": "get (copy)", "seconds": seconds,
                 "rss_kib": rss})
    for r in rows[-3:]:
        print(f"  {r['step']}: {float(r['seconds']):.2f} s, {r['rss_kib']} KiB", flush=True)
    # Manifest decode, in-process.
    import artstore

    store = artstore.Store(work / "store")
    digest = store.read_commit(store.artifact("big:v1").id)["manifest"]
    raw = store.backend.read(f"manifests/{digest[:2]}/{digest[2:]}")
    from artstore import _format as fmt

    t0 = time.perf_counter()
    manifest = fmt.decode_manifest(raw, "bench")
    paths = manifest.paths
    decode = time.perf_counter() - t0
    assert len(paths) == count
    rows.append({"files": count, "step": "manifest decode (in-process)",
                 "seconds": decode, "rss_kib": None})
    print(f"  manifest decode: {decode:.3f} s ({len(raw) / 1e6:.1f} MB)", flush=True)


def report(rows: list[dict[str, object]], out: Path) -> None:
    lines = ["# artstore scaling with file count", "",
             "Each step a whole CLI process (except the manifest decode); peak RSS from GNU time.",
             "", "| files | step | seconds | µs per file | peak RSS MiB |", "|---|---|---|---|---|"]
    for r in rows:
        per = float(r["seconds"]) / int(r["files"]) * 1e6  # type: ignore[arg-type]
        rss = "-" if r["rss_kib"] is None else f"{int(r['rss_kib']) / 1024:.0f}"  # type: ignore[arg-type]
        lines.append(f"| {r['files']:,} | {r['step']} | {float(r['seconds']):.2f} | {per:.0f} | {rss} |")  # type: ignore[arg-type]
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    sys.exit(main())
