"""A shared store (``artstore init DIR --shared``) used by several real Unix users of one group.

Needs root: the test creates a group with two members and one outsider (``groupadd``,
``useradd``; unique names per run, removed afterwards) and runs the real CLI as each of
them (``subprocess`` with ``user=``/``group=``/``extra_groups=``). The users must be able to
run this Python and import artstore; when they cannot (for example a virtual environment
under a private home or temporary directory), the test is skipped and says why.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import read_tree, write_tree

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="creating Unix users and groups needs root",
)


@dataclass
class User:
    name: str
    uid: int
    gid: int
    groups: list[int]
    home: Path
    umask: int = 0o022

    def env(self, store: Path) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "USER": self.name,
            "LANG": "C.UTF-8",
            "ARTSTORE_DIR": str(store),
            "ARTSTORE_CACHE_DIR": str(self.home / "cache"),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "TMPDIR": "/tmp",
        }
        if "PYTHONPATH" in os.environ:
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    def run(self, store: Path, *args: str | os.PathLike[str]) -> tuple[int, str, str]:
        proc = subprocess.run(
            [sys.executable, "-m", "artstore", *map(str, args)],
            user=self.uid, group=self.gid, extra_groups=self.groups, umask=self.umask,
            env=self.env(store), cwd=self.home, capture_output=True, text=True, timeout=120,
            check=False,
        )
        return proc.returncode, proc.stdout, proc.stderr

    def ok(self, store: Path, *args: str | os.PathLike[str]) -> str:
        rc, out, err = self.run(store, *args)
        assert rc == 0, f"{self.name}: artstore {' '.join(map(str, args))}: rc={rc}\n{out}\n{err}"
        assert "Traceback" not in err
        return out


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _blocked_by(path: str) -> str | None:
    """The first directory on ``path`` that "other" users cannot enter, if any."""
    here = Path(path).absolute()
    for d in [*reversed(here.parents)]:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return f"{d} (mode {stat.S_IMODE(os.stat(d).st_mode):o})"
    return None


@dataclass
class Setup:
    base: Path
    store: Path
    group: str
    gid: int
    a: User
    b: User
    outsider: User


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Setup]:
    tag = secrets.token_hex(3)
    group, other_group = f"astg{tag}", f"asto{tag}"
    names = {"a": f"asa{tag}", "b": f"asb{tag}", "outsider": f"asc{tag}"}
    made_groups: list[str] = []
    made_users: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="artstore-shared-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        for g in (group, other_group):
            _sh("groupadd", g)
            made_groups.append(g)
        for key, name in names.items():
            _sh("useradd", "-M", "-N", "-s", "/usr/sbin/nologin",
                "-g", other_group if key == "outsider" else group, name)
            made_users.append(name)
        gid = grp.getgrnam(group).gr_gid
        users = {}
        for key, name in names.items():
            pw = pwd.getpwnam(name)
            home = base / "home" / name
            home.mkdir(parents=True)
            os.chown(home, pw.pw_uid, pw.pw_gid)
            os.chmod(home, 0o700)
            users[key] = User(name, pw.pw_uid, pw.pw_gid, [pw.pw_gid], home)
        # B works with a private umask: a shared store must not depend on users' umasks.
        users["b"].umask = 0o077
        store = base / "store"
        store.mkdir()
        os.chown(store, users["a"].uid, gid)  # A's directory, handed to the group ("chgrp")
        yield Setup(base, store, group, gid, users["a"], users["b"], users["outsider"])
    finally:
        for name in made_users:
            try:
                uid = pwd.getpwnam(name).pw_uid
            except KeyError:
                continue
            subprocess.run(["userdel", name], capture_output=True, check=False)
            shutil.rmtree(f"/tmp/artstore-locks-{uid}", ignore_errors=True)
        for g in made_groups:
            subprocess.run(["groupdel", g], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def _require_python_for(user: User, store: Path) -> None:
    """Skip, naming the reason, unless ``user`` can run this interpreter and import artstore."""
    import artstore

    blocked = _blocked_by(sys.executable) or _blocked_by(artstore.__file__)
    probe = (
        "import os, sys, artstore; "
        "paths = [sys.executable, os.path.dirname(artstore.__file__)]; "
        "bad = [p for p in paths if not os.access(p, os.R_OK)]; "
        "print(artstore.__file__); sys.exit(1 if bad else 0)"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", probe], user=user.uid, group=user.gid,
                              extra_groups=user.groups, env=user.env(store), cwd=user.home,
                              capture_output=True, text=True, timeout=60, check=False)
    except PermissionError as exc:
        pytest.skip(f"user {user.name} cannot execute {sys.executable} ({exc}); "
                    f"blocked by {blocked or 'unknown'}")
    if proc.returncode != 0:
        pytest.skip(f"user {user.name} cannot use {sys.executable} with artstore "
                    f"(blocked by {blocked or 'unknown'}): {proc.stderr.strip()[-300:]}")


def _own(user: User, root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        os.chown(p, user.uid, user.gid)


def _store_files(store: Path) -> dict[str, tuple[int, int, int, bytes | None]]:
    """Every path of the store with (mode, uid, gid, bytes-if-file), lock markers aside."""
    out: dict[str, tuple[int, int, int, bytes | None]] = {}
    for p in sorted(store.rglob("*")):
        st = os.lstat(p)
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[p.relative_to(store).as_posix()] = (st.st_mode, st.st_uid, st.st_gid, data)
    return out


def test_two_group_members_share_a_store_and_an_outsider_cannot_write(shared: Setup) -> None:
    a, b, outsider, store = shared.a, shared.b, shared.outsider, shared.store
    for user in (a, b, outsider):
        _require_python_for(user, store)

    out = a.ok(store, "init", store, "--shared")
    assert "shared" in out
    mode = os.stat(store).st_mode
    assert mode & stat.S_ISGID and mode & stat.S_IWGRP, oct(mode)

    files_a = {"a.txt": b"written by A\n" * 50, "common.bin": bytes(range(256)) * 40}
    files_b = {"b.txt": b"written by B\n" * 50, "common.bin": bytes(range(256)) * 40}
    files_other = {"o/x.bin": os.urandom(200_000)}
    src_a = write_tree(a.home / "src", files_a)
    src_b = write_tree(b.home / "src", files_b)
    src_o = write_tree(b.home / "other", files_other)
    _own(a, src_a)
    _own(b, src_b)
    _own(b, src_o)

    assert a.ok(store, "put", src_a, "-n", "team").strip() == "team:v0"
    assert b.ok(store, "put", src_b, "-n", "team").strip() == "team:v1"
    assert b.ok(store, "put", src_o, "-n", "other").strip() == "other:v0"
    a.ok(store, "alias", "team:v1", "reviewed")  # A changes refs B wrote last

    for user in (a, b):
        for spec, files in (("team:v0", files_a), ("team:reviewed", files_b),
                            ("other", files_other)):
            root = user.home / "out" / spec.replace(":", "-")
            user.ok(store, "get", spec, "--root", root)
            assert read_tree(root) == files

    # A version A logged, deleted by B, collected by B's gc: B may remove A's files.
    extra = write_tree(a.home / "extra", {"temp.bin": os.urandom(50_000)})
    _own(a, extra)
    assert a.ok(store, "put", extra, "-n", "scratch").strip() == "scratch:v0"
    b.ok(store, "rm", "scratch:v0", "--delete-aliases")
    out = b.ok(store, "gc", "--grace", "0")
    assert out.startswith("freed ") and "1 blobs" in out, out
    assert "ok:" in a.ok(store, "fsck")
    assert "ok:" in b.ok(store, "fsck")

    # Modes and ownership: read-only content, setgid group-writable directories, one group.
    owners = set()
    readonly = ("blobs/", "manifests/", "commits/", "refs/")
    for p in [store, *store.rglob("*")]:
        st = os.lstat(p)
        rel = p.relative_to(store).as_posix() or "."
        assert st.st_gid == shared.gid, f"{rel} has group {st.st_gid}, not {shared.group}"
        if stat.S_ISDIR(st.st_mode):
            assert st.st_mode & stat.S_ISGID, f"{rel} is not setgid: {oct(st.st_mode)}"
            assert st.st_mode & stat.S_IWGRP and st.st_mode & stat.S_IXGRP, \
                f"{rel} is not group-writable: {oct(st.st_mode)}"
        elif rel == "artstore.json" or rel.startswith(readonly):
            assert stat.S_IMODE(st.st_mode) == 0o444, f"{rel}: {oct(st.st_mode)}"
            if rel.startswith("blobs/"):
                owners.add(st.st_uid)
        elif stat.S_ISREG(st.st_mode):
            # Rewritable records (runs, policies) stay writable by the group.
            assert st.st_mode & stat.S_IWGRP, f"{rel}: {oct(st.st_mode)}"
    assert owners == {a.uid, b.uid}, owners

    # The outsider can read the store but not change it.
    out = outsider.ok(store, "ls", "team")
    assert [line.split("\t")[0] for line in out.strip().splitlines()] == ["v0", "v1"]
    before = _store_files(store)
    src_c = write_tree(outsider.home / "src", {"c.txt": b"from the outsider\n"})
    _own(outsider, src_c)
    for args in (("put", src_c, "-n", "team"), ("put", src_c, "-n", "intruder"),
                 ("alias", "team:v0", "hijacked"), ("rm", "team:v0", "--delete-aliases"),
                 ("gc", "--grace", "0")):
        rc, out, err = outsider.run(store, *args)
        assert rc == 1, (args, rc, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("artstore: error:"), (args, err)
        assert "Permission denied" in lines[0] or "permission" in lines[0].lower(), lines[0]
    assert _store_files(store) == before
    out = a.ok(store, "ls", "team")
    assert [line.split("\t")[-1] for line in out.strip().splitlines()] == ["", "latest,reviewed"]
