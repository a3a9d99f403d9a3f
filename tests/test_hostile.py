"""Hostile input: bad entry names, damaged records, odd file trees, racing writers of the
input, symlinks in download targets, a full disk, malformed names on the command line.

Every test has its own store (``tests/conftest.py``); the CLI runs as a real subprocess.
Tests that need root (a tmpfs mount) or another Unix user skip cleanly without them.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliResult, h, ok, one_error_line, read_tree, write_tree

from artstore import (
    Artifact,
    ConflictError,
    InvalidInputError,
    InvalidNameError,
    Store,
    UnknownFormatError,
)

Cli = Callable[..., CliResult]






def obj(store_path: Path, kind: str, digest: str) -> Path:
    return store_path / kind / digest[:2] / digest[2:]


def refs_state(store_path: Path) -> dict[str, bytes]:
    base = store_path / "refs"
    if not base.exists():
        return {}
    return {p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()}


# -- entry names ------------------------------------------------------------------------------

BAD_NAMES = ["/etc/passwd", "/abs", "a/../b", "..", "../escape", "a/..", "a\x00b", "a\\b",
             "..\\windows"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_entry_names_are_refused_everywhere(bad: str, tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("content")
    art = Artifact("ds", "dataset")
    with pytest.raises(InvalidNameError):
        art.add_file(f, name=bad)
    with pytest.raises(InvalidNameError), art.new_file(bad) as out:
        out.write("never added")
    with pytest.raises(InvalidNameError):
        art.add_reference(f.as_uri(), name=bad)
    with pytest.raises(InvalidNameError):
        art.add_reference("s3://bucket/key.bin", name=bad, checksum=False)
    with pytest.raises(InvalidNameError):
        art.add_dir(write_tree(tmp_path / "d", {"x": "x"}), name=bad)
    assert art.manifest == {}


def test_names_colliding_after_normalisation_conflict(store: Store, tmp_path: Path) -> None:
    f1 = tmp_path / "one.txt"
    f2 = tmp_path / "two.txt"
    f1.write_text("first")
    f2.write_text("second")
    art = Artifact("ds", "dataset")
    art.add_file(f1, name="a/./b")
    for other in ("a//b", "a/b", "./a/b", "a/b/"):
        with pytest.raises(ConflictError):
            art.add_file(f2, name=other)
    with pytest.raises(ConflictError), art.new_file("a//b") as out:
        out.write("third")
    with pytest.raises(ConflictError):
        art.add_reference(f2.as_uri(), name="a/./b")
    art.save(store)
    assert [(e.path, e.digest) for e in art.files()] == [("a/b", h(b"first"))]


def test_names_differing_only_in_unicode_normalisation_conflict(
    store: Store, tmp_path: Path
) -> None:
    f1 = tmp_path / "one.txt"
    f2 = tmp_path / "two.txt"
    f1.write_text("first")
    f2.write_text("second")
    art = Artifact("ds", "dataset")
    art.add_file(f1, name="caf\u00e9.txt")
    art.add_file(f2, name="cafe\u0301.txt")
    with pytest.raises(ConflictError):
        art.save(store)
    assert store.artifact_names() == []


# -- damaged records -------------------------------------------------------------------------


def _put_ds(cli: Cli, tmp_path: Path) -> Store:
    src = write_tree(tmp_path / "src", {"a.txt": "alpha\n" * 20, "d/b.bin": bytes(range(256))})
    ok(cli("put", src, "-n", "ds"))
    return Store(os.environ["ARTSTORE_DIR"])


def _record(store: Store, which: str) -> Path:
    art = store.artifact("ds")
    if which == "manifest":
        return obj(store.path, "manifests", art.digest)
    if which == "commit":
        return obj(store.path, "commits", art.id)
    return max((store.path / "refs" / "ds").iterdir())


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
@pytest.mark.parametrize("which", ["manifest", "commit", "refs"])
def test_damaged_record_gives_a_one_line_error_naming_it(
    which: str, damage: str, cli: Cli, tmp_path: Path
) -> None:
    store = _put_ds(cli, tmp_path)
    path = _record(store, which)
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\xc1 not msgpack \xff" * 7,
                      "empty": b""}[damage])

    for args in (("get", "ds", "--root", tmp_path / "out"), ("ls", "ds"), ("show", "ds"),
                 ("show", "ds:v0"), ("verify", "ds", tmp_path / "src")):
        rc, out, err = cli(*args)
        assert rc == 1, (args, rc, out, err)
        line = one_error_line(err)
        assert str(path) in line, (args, line)
        assert out == "", (args, out)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    rc, out, _err = cli("fsck")
    assert rc == 1 and str(path) in out


@pytest.mark.parametrize("marker", [
    {"format": "artstore-store", "version": 99},
    {"format": "artstore-store", "version": "1"},
])
def test_unknown_store_format_version_is_refused_clearly(
    marker: dict, cli: Cli, tmp_path: Path, store_path: Path  # type: ignore[type-arg]
) -> None:
    _put_ds(cli, tmp_path)
    path = store_path / "artstore.json"
    current = json.loads(path.read_text())
    os.chmod(path, 0o644)
    path.write_text(json.dumps({**current, **marker}))
    before = path.read_bytes()
    with pytest.raises(UnknownFormatError) as info:
        Store(store_path).artifact("ds")
    assert repr(marker["version"]) in str(info.value) and str(path) in str(info.value)
    src = write_tree(tmp_path / "new", {"n.txt": "n"})
    for args in (("ls",), ("ls", "ds"), ("get", "ds", "--root", tmp_path / "o"), ("fsck",),
                 ("gc",), ("put", src, "-n", "ds")):
        rc, out, err = cli(*args)
        assert rc == 1, (args, out, err)
        line = one_error_line(err)
        assert "version" in line and repr(marker["version"]) in line, line
        # A newer number asks for a newer artstore; a malformed one is called damaged.
        assert ("upgrade" if isinstance(marker["version"], int) else "damaged") in line, line
    assert path.read_bytes() == before
    assert len(list((store_path / "refs" / "ds").iterdir())) == 1


# -- odd things inside a directory being added ---------------------------------------------------


@pytest.fixture
def hostile_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    outside = write_tree(tmp_path / "outside", {"secret.txt": "outside content\n"})
    root = write_tree(tmp_path / "tree", {"plain.txt": "plain\n", "sub/inner.txt": "inner\n"})
    (root / "link-inside.txt").symlink_to("sub/inner.txt")
    (root / "link-outside.txt").symlink_to(outside / "secret.txt")
    (root / "dangling.txt").symlink_to(tmp_path / "does-not-exist")
    (root / "sub" / "loop").symlink_to("..")  # a directory symlink to its parent
    (root / "sub" / "outdir").symlink_to(outside)
    os.mkfifo(root / "fifo")
    (root / "empty").mkdir()
    (root / "empty" / "deeper").mkdir()
    monkeypatch.chdir(root)  # a short relative path keeps within the unix socket name limit
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("sock")
    monkeypatch.chdir(tmp_path)
    try:
        yield root
    finally:
        sock.close()


EXPECTED_TREE = {
    "plain.txt": b"plain\n",
    "sub/inner.txt": b"inner\n",
    "link-inside.txt": b"inner\n",
    "link-outside.txt": b"outside content\n",
}


@pytest.mark.timeout(60)
def test_add_dir_follows_file_links_and_skips_the_rest_with_warnings(
    hostile_tree: Path, store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="artstore")
    art = Artifact("tree", "dataset")
    art.add_dir(hostile_tree)
    art.save(store)
    assert {e.path: e.digest for e in art.files()} == {p: h(b) for p, b in EXPECTED_TREE.items()}
    warned = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for skipped in ("dangling.txt", "loop", "outdir", "fifo", "sock"):
        assert re.search(rf"skipping \S*{re.escape(skipped)}\b", warned), (skipped, warned)
    assert "empty" not in warned and "plain.txt" not in warned
    root = tmp_path / "out"
    store.artifact("tree").download(root)
    assert read_tree(root) == EXPECTED_TREE
    assert not (root / "empty").exists()
    assert (tmp_path / "outside" / "secret.txt").read_text() == "outside content\n"


def test_cli_put_of_a_hostile_tree_does_not_hang(hostile_tree: Path, cli: Cli) -> None:
    proc = subprocess.run([sys.executable, "-m", "artstore", "put", str(hostile_tree), "-n", "t"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "t:v0"
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("artstore: WARNING:")]
    assert len(warnings) == 5, proc.stderr
    assert "Traceback" not in proc.stderr
    shown = json.loads(ok(cli("show", "t", "--json")))
    assert sorted(e["path"] for e in shown["entries"]) == sorted(EXPECTED_TREE)


def test_empty_directories_make_no_entries(store: Store, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="artstore")
    root = write_tree(tmp_path / "t", {"a/file.txt": "f"})
    (root / "a" / "empty").mkdir()
    (root / "nothing" / "at" / "all").mkdir(parents=True)
    art = Artifact("t", "dataset")
    art.add_dir(root)
    art.save(store)
    assert [e.path for e in art.files()] == ["a/file.txt"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    only_empty = tmp_path / "only-empty"
    (only_empty / "x").mkdir(parents=True)
    art2 = Artifact("t2", "dataset")
    art2.add_dir(only_empty)
    art2.save(store)
    assert art2.files() == []


def test_non_utf8_file_name_is_refused_naming_it(cli: Cli, store: Store, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "t", {"good.txt": "good"})
    bytes_dir = os.fsencode(root)
    with open(os.path.join(bytes_dir, b"bad\xff.txt"), "wb") as f:
        f.write(b"bad name")
    art = Artifact("t", "dataset")
    with pytest.raises(InvalidNameError) as info:
        art.add_dir(root)
    message = str(info.value)
    assert re.search(r"bad.{1,12}\.txt", message) and "UTF-8" in message, message
    rc, out, err = cli("put", root, "-n", "t")
    assert rc in (1, 2), (rc, out, err)
    line = one_error_line(err)
    assert re.search(r"bad.{1,12}\.txt", line) and "UTF-8" in line, line
    assert store.artifact_names() == []


def _run_as_user_or_skip(user: str, home: Path) -> dict[str, str]:
    """Environment for running the CLI as ``user``; skip if that user cannot run Python here."""
    env = {**os.environ, "HOME": str(home), "ARTSTORE_CACHE_DIR": str(home / "cache")}
    pw = pwd.getpwnam(user)
    try:
        probe = subprocess.run([sys.executable, "-c", "import artstore"], user=pw.pw_uid,
                               group=pw.pw_gid, extra_groups=[], env=env, capture_output=True,
                               text=True, timeout=60, check=False)
    except PermissionError as exc:
        pytest.skip(f"{user} cannot run {sys.executable}: {exc}")
    if probe.returncode != 0:
        pytest.skip(f"{user} cannot import artstore with {sys.executable}: {probe.stderr[-300:]}")
    return env


def test_unreadable_file_is_a_clear_error(tmp_path: Path, cli: Cli) -> None:
    if os.geteuid() != 0:
        root = write_tree(tmp_path / "t", {"ok.txt": "ok", "locked.txt": "secret"})
        os.chmod(root / "locked.txt", 0)
        try:
            rc, out, err = cli("put", root, "-n", "t")
        finally:
            os.chmod(root / "locked.txt", 0o644)
        assert rc == 1, (out, err)
        line = one_error_line(err)
        assert "locked.txt" in line and "Permission denied" in line
        assert Store(os.environ["ARTSTORE_DIR"]).artifact_names() == []
        return
    # root reads everything: run the CLI as an unprivileged user instead.
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no 'nobody' user to run as")
    base = Path(tempfile.mkdtemp(prefix="artstore-unreadable-"))
    try:
        os.chmod(base, 0o755)
        home = base / "home"
        home.mkdir()
        root = write_tree(base / "t", {"ok.txt": "ok", "locked.txt": "secret"})
        store_dir = base / "store"
        store_dir.mkdir()
        for p in (home, store_dir, root, root / "ok.txt", root / "locked.txt"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(root / "locked.txt", 0)
        env = _run_as_user_or_skip("nobody", home)
        env["ARTSTORE_DIR"] = str(store_dir)
        proc = subprocess.run([sys.executable, "-m", "artstore", "put", str(root), "-n", "t"],
                              user=pw.pw_uid, group=pw.pw_gid, extra_groups=[], env=env,
                              capture_output=True, text=True, timeout=60, cwd=base, check=False)
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        line = one_error_line(proc.stderr)
        assert "locked.txt" in line and "Permission denied" in line, line
        assert Store(store_dir).artifact_names() == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- a file changing while it is read --------------------------------------------------------

REWRITER = r"""
import os, random, sys, time
path, stop = sys.argv[1], sys.argv[2]
size = os.path.getsize(path)
rng = random.Random(7)
fd = os.open(path, os.O_WRONLY)
print("running", flush=True)
deadline = time.monotonic() + 120
while not os.path.exists(stop) and time.monotonic() < deadline:
    os.pwrite(fd, rng.randbytes(4096), rng.randrange(0, size - 4096))
    time.sleep(0.0005)
os.close(fd)
"""


def test_file_rewritten_while_put_reads_it_is_refused(
    cli: Cli, store_path: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.writelines(os.urandom(1024 * 1024) for _ in range(48))
    stop = tmp_path / "stop"
    writer = subprocess.Popen([sys.executable, "-c", REWRITER, str(big), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    refused = 0
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "running"
        for _attempt in range(5):
            before = refs_state(store_path)
            rc, out, err = cli("put", big, "-n", "moving")
            if rc == 0:
                continue  # the race did not trigger this time
            assert rc == 1, (out, err)
            line = one_error_line(err)
            assert "changed while it was being read" in line and "big.bin" in line, line
            assert refs_state(store_path) == before  # no version was made
            refused += 1
            if refused >= 2:
                break
    finally:
        stop.touch()
        writer.wait(timeout=30)
        if writer.stdout is not None:
            writer.stdout.close()
    assert refused >= 1, "the file changed under every put, yet no put noticed"
    # Nothing half-read was kept: the temporary area holds no leftover of the failed reads.
    leftovers = [p for p in (store_path / "tmp").iterdir()] if (store_path / "tmp").exists() else []
    assert leftovers == [], leftovers
    # Once it stops changing, the same file goes in whole.
    out = ok(cli("put", big, "-n", "moving")).strip()
    root = tmp_path / "out"
    ok(cli("get", out, "--root", root))
    assert h((root / "big.bin").read_bytes()) == h(big.read_bytes())


# -- download targets holding symlinks ---------------------------------------------------------


@pytest.fixture
def two_level(store: Store, tmp_path: Path) -> Artifact:
    src = write_tree(tmp_path / "src", {"top.txt": "top\n", "sub/a.txt": "a\n", "sub/b.txt": "b\n"})
    art = Artifact("ds", "dataset")
    art.add_dir(src)
    return art.save(store)


def test_download_refuses_a_symlinked_directory_leading_outside(
    two_level: Artifact, cli: Cli, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "sub").symlink_to(outside)
    with pytest.raises(InvalidInputError) as info:
        two_level.download(root)
    assert "symlink" in str(info.value) and str(outside) in str(info.value)
    assert list(outside.iterdir()) == []
    rc, out, err = cli("get", "ds", "--root", root)
    assert rc == 1, (out, err)
    line = one_error_line(err)
    assert "refusing" in line and "sub" in line
    assert list(outside.iterdir()) == []
    assert (root / "sub").is_symlink()
    # A link that stays inside the root is fine.
    root2 = tmp_path / "root2"
    (root2 / "real").mkdir(parents=True)
    (root2 / "sub").symlink_to("real")
    two_level.download(root2)
    assert read_tree(root2 / "real") == {"a.txt": b"a\n", "b.txt": b"b\n"}


def test_download_replaces_a_symlink_at_a_file_name_and_leaves_its_target_alone(
    two_level: Artifact, cli: Cli, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("do not overwrite me\n")
    for i, how in enumerate(("api", "cli")):
        root = tmp_path / f"root-{how}"
        (root / "sub").mkdir(parents=True)
        (root / "top.txt").symlink_to(victim)
        (root / "sub" / "a.txt").symlink_to(victim)
        if how == "api":
            two_level.download(root)
        else:
            ok(cli("get", "ds", "--root", root))
        for name, content in (("top.txt", b"top\n"), ("sub/a.txt", b"a\n")):
            assert not (root / name).is_symlink()
            assert (root / name).read_bytes() == content
        assert victim.read_text() == "do not overwrite me\n"


# -- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_during_put(tiny_fs: Path, cli: Cli, tmp_path: Path) -> None:
    store_dir = tiny_fs / "store"
    env = {**os.environ, "ARTSTORE_DIR": str(store_dir)}
    first = write_tree(tmp_path / "first", {"one.bin": os.urandom(1024 * 1024), "n.txt": "one"})
    ok(cli("put", first, "-n", "ds", env=env))

    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.writelines(os.urandom(1024 * 1024) for _ in range(30))
    rc, out, err = cli("put", big, "-n", "ds", env=env)
    assert rc == 1, (out, err)
    line = one_error_line(err)
    assert "No space left on device" in line, line
    store = Store(store_dir)
    assert [a.version for a in store.versions("ds")] == ["v0"]
    listing = ok(cli("ls", "ds", env=env)).strip().splitlines()
    assert [row.split("\t")[0] for row in listing] == ["v0"]
    report = store.fsck()
    assert report.errors == [], report.errors
    assert all("tmp" in p.path for p in report.warnings), report.warnings
    rc, out, _ = cli("fsck", env=env)
    assert rc == 0, out

    # Free the space the failed put left behind, then a put that fits works.
    ok(cli("gc", "--grace", "0", env=env))
    second = write_tree(tmp_path / "second", {"two.bin": os.urandom(5 * 1024 * 1024)})
    assert ok(cli("put", second, "-n", "ds", env=env)).strip() == "ds:v1"
    rc, out, _ = cli("fsck", env=env)
    assert rc == 0 and "0 warning(s)" in out, out
    for version, src in (("v0", first), ("v1", second)):
        root = tmp_path / f"out-{version}"
        ok(cli("get", f"ds:{version}", "--root", root, env=env))
        assert read_tree(root) == read_tree(src)


def test_put_failing_on_a_full_disk_leaves_no_temporary_file(
    tiny_fs: Path, cli: Cli, tmp_path: Path
) -> None:
    """The failed put's partial copy must not keep the disk full until a gc long after."""
    store_dir = tiny_fs / "store"
    env = {**os.environ, "ARTSTORE_DIR": str(store_dir)}
    ok(cli("init", store_dir, env=env))
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.writelines(os.urandom(1024 * 1024) for _ in range(30))
    rc, out, err = cli("put", big, "-n", "ds", env=env)
    assert rc == 1, (out, err)
    assert "No space left on device" in one_error_line(err)
    leftovers = {p.name: p.stat().st_size for p in (store_dir / "tmp").iterdir()}
    assert leftovers == {}, f"partial copies left in {store_dir / 'tmp'}: {leftovers}"
    # So a put that fits works at once, without anyone running gc --grace 0.
    small = write_tree(tmp_path / "small", {"s.bin": os.urandom(8 * 1024 * 1024)})
    assert ok(cli("put", small, "-n", "ds", env=env)).strip() == "ds:v0"


# -- malformed names on the command line -----------------------------------------------------------


@pytest.fixture
def named_store(cli: Cli, tmp_path: Path) -> Path:
    src = write_tree(tmp_path / "src", {"a.txt": "a\n"})
    ok(cli("put", src, "-n", "ds", "-a", "best"))
    return src


BAD_NAME = "bad name"
USAGE_ERRORS = [
    ("put", "{src}", "-n", BAD_NAME),
    ("put", "{src}", "-n", ".hidden"),
    ("put", "{src}", "-n", "a/b"),
    ("put", "{src}", "-n", "x" * 129),
    ("put", "{src}", "-n", "ds", "-a", "v3"),
    ("put", "{src}", "-n", "ds", "-a", "bad alias"),
    ("put", "{src}", "-n", "ds", "-a", ".dot"),
    ("put", "{src}", "-n", "ds", "--distributed-id", "bad id"),
    ("put", "{src}", "-n", "ds", "-t", "bad type"),
    ("get", BAD_NAME),
    ("get", "ds:"),
    ("get", "ds:bad alias"),
    ("get", "../ds"),
    ("show", BAD_NAME),
    ("show", "ds:"),
    ("show", "ds:bad alias"),
    ("verify", BAD_NAME, "{src}"),
    ("verify", "ds:", "{src}"),
    ("alias", "ds:v0", "v3"),
    ("alias", "ds:v0", "bad alias"),
    ("alias", f"{BAD_NAME}:v0", "x"),
    ("alias", "ds:", "x"),
    ("alias", "--remove", "ds", "bad alias"),
    ("alias", "--remove", BAD_NAME, "best"),
    ("rm", f"{BAD_NAME}:v0"),
    ("rm", "ds:"),
    ("rm", "ds:bad alias"),
    ("patch", BAD_NAME, "--add", "{src}/a.txt"),
    ("patch", "ds:", "--add", "{src}/a.txt"),
    ("patch", "ds", "--add", "{src}/a.txt:new.txt", "-a", "v3"),
    ("patch", "ds", "--add", "{src}/a.txt:new.txt", "-a", "bad alias"),
    ("diff", f"{BAD_NAME}:v0", "ds:v0"),
    ("diff", "ds:v0", "ds:"),
    ("ls", BAD_NAME),
    ("ls", "../refs"),
    ("finish", "-n", BAD_NAME, "--distributed-id", "d1"),
    ("finish", "-n", "ds", "--distributed-id", "bad id"),
    ("retention", BAD_NAME, "--keep-last", "2"),
    ("retention", BAD_NAME, "--clear"),
    ("retention", BAD_NAME),
    ("retention", "../policies"),
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=lambda a: " ".join(a).replace("{src}", "SRC"))
def test_malformed_name_on_the_command_line_is_a_usage_error(
    args: tuple[str, ...], named_store: Path, cli: Cli, store_path: Path
) -> None:
    before = refs_state(store_path)
    argv = [a.replace("{src}", str(named_store)) for a in args]
    rc, out, err = cli(*argv)
    assert rc == 2, (rc, out, err)
    line = one_error_line(err)
    assert "invalid" in line, line
    assert out == ""
    assert refs_state(store_path) == before


@pytest.mark.parametrize("command", ["get", "show", "rm", "diff-second", "diff", "patch",
                                     "alias", "verify"])
@pytest.mark.parametrize("which", ["v-1", "vx", "v99", "nosuch"])
def test_well_formed_but_unknown_versions_are_not_found(
    command: str, which: str, named_store: Path, cli: Cli, store_path: Path
) -> None:
    """``v-1`` and ``vx`` are well-formed aliases (FORMAT.md section 5), so they are looked up."""
    spec = f"ds:{which}"
    argv = {
        "get": ["get", spec, "--root", str(named_store.parent / "out")],
        "show": ["show", spec],
        "rm": ["rm", spec],
        "diff-second": ["diff", "ds:v0", spec],
        "diff": ["diff", spec, "ds:v0"],
        "patch": ["patch", spec, "--add", str(named_store / "a.txt") + ":n.txt"],
        "alias": ["alias", spec, "other"],
        "verify": ["verify", spec, str(named_store)],
    }[command]
    before = refs_state(store_path)
    rc, out, err = cli(*argv)
    assert rc == 1, (rc, out, err)
    line = one_error_line(err)
    wanted = f"no version {which}" if which == "v99" else f"no alias {which!r}"
    assert wanted in line, line
    assert refs_state(store_path) == before


def test_finish_with_a_bad_alias_keeps_the_contributions(
    cli: Cli, store_path: Path, tmp_path: Path
) -> None:
    part = write_tree(tmp_path / "part", {"p.txt": "part"})
    ok(cli("put", part, "-n", "col", "--distributed-id", "d1"))
    for alias in ("v3", "bad alias"):
        rc, out, err = cli("finish", "-n", "col", "--distributed-id", "d1", "-a", alias)
        assert rc == 2, (out, err)
        assert "invalid alias" in one_error_line(err)
    rows = json.loads(ok(cli("staging", "ls", "--json")))
    assert [(r["name"], r["distributed_id"], r["contributions"], r["closing"]) for r in rows] == [
        ("col", "d1", 1, False)
    ]
    out = ok(cli("finish", "-n", "col", "--distributed-id", "d1", "-a", "good"))
    assert out.strip() == "col:v0"
