"""Finding, installing and describing the alternative tools the suite compares with."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent

PIP_TOOLS = {"dvc": "dvc", "wandb": "wandb", "oxen": "oxenai"}
APT_TOOLS = {"restic": "restic", "git-annex": "git-annex", "strace": "strace"}

#: What is known of each tool's durability without measuring; the `sync calls` column of
#: the results (strace on tiny data) is the measured figure and overrides these notes.
DURABILITY = {
    "artstore": "syncfs() of the store's filesystem before new blobs are named and before "
                "a commit is published; its stat cache is SQLite (WAL), which fdatasyncs",
    "cp": "none (page cache only)",
    "cp + sync": "one sync(2) of every filesystem after the copy",
    "cp -al": "none (hard links only)",
    "dvc": "see the measured column (its state and index are SQLite databases)",
    "restic": "see the measured column (fsyncs the files of its local repository)",
    "git-annex": "see the measured column",
    "wandb": "see the measured column",
    "oxen": "see the measured column (RocksDB metadata)",
}


def bin_path(name: str) -> str | None:
    """The executable ``name`` of this interpreter's environment, else from PATH."""
    here = BIN / name
    if here.exists():
        return str(here)
    return shutil.which(name)


def artstore_cli() -> list[str]:
    path = bin_path("artstore")
    return [path] if path else [sys.executable, "-m", "artstore"]


def _ok(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def available(tool: str) -> bool:
    if tool == "dvc":
        return bin_path("dvc") is not None and importlib.util.find_spec("dvc") is not None
    if tool == "wandb":
        return importlib.util.find_spec("wandb") is not None
    if tool == "oxen":
        return importlib.util.find_spec("oxen") is not None
    if tool == "restic":
        return shutil.which("restic") is not None
    if tool == "git-annex":
        return shutil.which("git") is not None and _ok(["git", "annex", "version"])
    if tool == "strace":
        return shutil.which("strace") is not None
    raise KeyError(tool)


def version(tool: str) -> str | None:
    argv = {
        "dvc": [bin_path("dvc") or "dvc", "--version"],
        "restic": ["restic", "version"],
        "git-annex": ["git", "annex", "version", "--raw"],
        "wandb": [sys.executable, "-c", "import wandb; print(wandb.__version__)"],
        "oxen": [sys.executable, "-c", "import oxen; print(oxen.__version__)"],
    }.get(tool)
    if argv is None or not available(tool):
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0] if out else None


def install(tools: list[str], log) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Install the missing ``tools``; return a note per tool that could not be installed."""
    failed: dict[str, str] = {}
    pip = [PIP_TOOLS[t] for t in tools if t in PIP_TOOLS and not available(t)]
    if pip:
        log(f"installing with pip: {' '.join(pip)}")
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *pip],
                           capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            log("pip install failed: " + " | ".join(tail))
    apt = [APT_TOOLS[t] for t in tools if t in APT_TOOLS and not available(t)]
    if apt:
        if shutil.which("apt-get") is None:
            for t in tools:
                if t in APT_TOOLS and not available(t):
                    failed[t] = "not installed and there is no apt-get here"
        else:
            log(f"installing with apt-get: {' '.join(apt)}")
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env)
            r = subprocess.run(["apt-get", "install", "-y", "-q", *apt], capture_output=True,
                               text=True, env=env)
            if r.returncode != 0:
                tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
                log("apt-get install failed: " + " | ".join(tail))
    for t in tools:
        if not available(t) and t not in failed:
            failed[t] = "installation failed (see the log above)"
    return failed
