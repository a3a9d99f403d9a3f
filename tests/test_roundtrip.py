"""A real tree of a few thousand files through the CLI: put, get, diff -r, put again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from conftest import run_cli_process

from artstore import Store


#: Enough files for a real tree; the installed packages top up a trimmed stdlib to this.
TARGET = 1500


def copy_stdlib_sources(dest: Path) -> int:
    """Copy the *.py files of the standard library, and of the installed packages, to
    ``dest``/stdlib and ``dest``/site (no __pycache__).

    Some distributions ship a trimmed standard library (Debian's has about 700 modules),
    so the installed packages (pip, hypothesis, click, ...) make up a few thousand files.
    """
    paths = sysconfig.get_paths()
    count = 0
    for label, top in (("stdlib", Path(paths["stdlib"])), ("site", Path(paths["purelib"]))):
        if label == "site" and count >= TARGET:
            break
        for dirpath, dirnames, filenames in os.walk(top):
            if count >= TARGET and label == "site":
                break
            dirnames[:] = sorted(
                d for d in dirnames
                if d not in ("site-packages", "dist-packages", "__pycache__")
            )
            rel = Path(dirpath).relative_to(top)
            for name in sorted(filenames):
                src = Path(dirpath, name)
                if not name.endswith(".py") or src.is_symlink() or not src.is_file():
                    continue
                target = dest / label / rel / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
                count += 1
    return count


def diff(a: Path, b: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["diff", "-r", str(a), str(b)], capture_output=True, text=True, check=False
    )


@pytest.mark.skipif(shutil.which("diff") is None, reason="needs diff(1)")
def test_stdlib_tree_round_trip(tmp_path: Path, store_path: Path) -> None:
    src = tmp_path / "stdlib"
    count = copy_stdlib_sources(src)
    assert count >= 1000, f"only {count} stdlib sources found"

    rc, out, err = run_cli_process("put", src, "-n", "stdlib", "-t", "code", cwd=tmp_path)
    assert rc == 0, err
    assert out.strip() == "stdlib:v0"

    rc, out, err = run_cli_process("show", "stdlib", "--json", cwd=tmp_path)
    assert rc == 0, err
    shown = json.loads(out)
    assert shown["files"] == count
    assert shown["size"] == sum(f.stat().st_size for f in src.rglob("*.py"))

    dest = tmp_path / "restored"
    rc, out, err = run_cli_process("get", "stdlib:v0", "--root", dest, cwd=tmp_path)
    assert rc == 0, err
    result = diff(src, dest)
    assert result.returncode == 0, result.stdout[:2000] + result.stderr[:2000]
    assert result.stdout == ""

    rc, out, err = run_cli_process("verify", "stdlib:v0", dest, cwd=tmp_path)
    assert rc == 0, out + err

    # Change one file (keeping its size, so only its bytes tell): a new version.
    victim = src / "stdlib" / "json" / "__init__.py"
    data = bytearray(victim.read_bytes())
    data[0] = ord("#") if data[0] != ord("#") else ord(" ")
    victim.write_bytes(bytes(data))
    rc, out, err = run_cli_process("put", src, "-n", "stdlib", "-t", "code", cwd=tmp_path)
    assert rc == 0, err
    assert out.strip() == "stdlib:v1"

    # Unchanged since v1: no v2.
    rc, out, err = run_cli_process("put", src, "-n", "stdlib", "-t", "code", cwd=tmp_path)
    assert rc == 0, err
    assert out.strip() == "stdlib:v1"
    assert "unchanged" in err

    store = Store(store_path)
    assert [v.version for v in store.versions("stdlib")] == ["v0", "v1"]
    v0, v1 = store.versions("stdlib")
    changed = {
        p for p, e in v1.manifest.items() if v0.manifest.get(p) != e
    } | (set(v0.manifest) - set(v1.manifest))
    assert changed == {"stdlib/json/__init__.py"}

    # The old version is still there, byte for byte; the new one has the edit.
    rc, out, err = run_cli_process("checkout", "stdlib:v1", dest, cwd=tmp_path)
    assert rc == 0, err
    result = diff(src, dest)
    assert result.returncode == 0, result.stdout[:2000]
    rc, out, err = run_cli_process("verify", "stdlib:v0", dest, cwd=tmp_path)
    assert rc == 1
    assert "json/__init__.py" in out
