"""The ``artstore`` command line, run as a real subprocess (``python -m artstore``)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import xxhash
from conftest import CliResult, ok, one_error_line, read_tree, write_tree

from artstore import Store

Cli = Callable[..., CliResult]




def as_json(result: CliResult) -> object:
    return json.loads(ok(result))




@pytest.fixture
def src(tmp_path: Path) -> Path:
    return write_tree(
        tmp_path / "data", {"a.txt": "alpha\n", "sub/b.bin": bytes(range(200)), "sub/c/d.txt": "d"}
    )


# -- put -----------------------------------------------------------------------------------


def test_put_directory_prints_name_and_version(cli: Cli, src: Path, store_path: Path) -> None:
    out = ok(cli("put", src))
    assert out.strip() == "data:v0"  # default name: the directory's name
    art = Store(store_path).artifact("data:v0")
    assert sorted(art.manifest) == ["a.txt", "sub/b.bin", "sub/c/d.txt"]
    assert art.type == "dataset"


def test_put_file(cli: Cli, tmp_path: Path, store_path: Path) -> None:
    f = tmp_path / "model.pt"
    f.write_bytes(b"weights")
    assert ok(cli("put", f, "-t", "model")).strip() == "model.pt:v0"
    art = Store(store_path).artifact("model.pt")
    assert art.type == "model"
    assert art.get_entry("model.pt").digest == xxhash.xxh3_128_hexdigest(b"weights")


def test_put_options_type_alias_description_metadata(
    cli: Cli, src: Path, store_path: Path
) -> None:
    out = ok(
        cli(
            "put", src, "-n", "named", "-t", "model", "-a", "best", "--alias", "prod",
            "-d", "a description", "-m", "lr=0.001", "-m", 'layers=[64, 32]',
            "-m", "name=resnet", "-m", 'cfg={"a": true}', "-m", "empty=",
        )
    )
    assert out.strip() == "named:v0"
    art = Store(store_path).artifact("named:best")
    assert art.version == "v0"
    assert art.type == "model"
    assert sorted(art.aliases) == ["best", "latest", "prod"]
    assert art.description == "a description"
    assert art.metadata == {
        "lr": 0.001,
        "layers": [64, 32],
        "name": "resnet",
        "cfg": {"a": True},
        "empty": "",
    }


def test_put_again_unchanged_prints_same_version(cli: Cli, src: Path, store_path: Path) -> None:
    rc, out, err = cli("put", src, "-n", "ds")
    assert (rc, out.strip()) == (0, "ds:v0")
    assert "unchanged" not in err
    rc, out, err = cli("put", src, "-n", "ds", "-a", "again")
    assert (rc, out.strip()) == (0, "ds:v0")
    assert "unchanged" in err
    assert "ds:v0" in err
    assert [a.version for a in Store(store_path).versions("ds")] == ["v0"]
    assert "again" in Store(store_path).artifact("ds:v0").aliases
    (src / "a.txt").write_text("changed\n")
    rc, out, err = cli("put", src, "-n", "ds")
    assert (rc, out.strip()) == (0, "ds:v1")
    assert "unchanged" not in err


def test_put_missing_path_fails(cli: Cli, tmp_path: Path) -> None:
    rc, out, err = cli("put", tmp_path / "nope")
    assert rc == 1
    assert out == ""
    assert "nope" in one_error_line(err)


def test_put_bad_metadata_is_a_usage_error(cli: Cli, src: Path) -> None:
    rc, _out, err = cli("put", src, "-m", "novalue")
    assert rc == 2
    assert "KEY=VALUE" in err
    assert "Traceback" not in err


# -- get, ls, show, verify, alias ----------------------------------------------------------


def test_get_root_writes_identical_files(cli: Cli, src: Path, tmp_path: Path) -> None:
    ok(cli("put", src, "-n", "ds"))
    dest = tmp_path / "dest"
    out = ok(cli("get", "ds:v0", "--root", dest))
    assert Path(out.strip()) == dest
    assert read_tree(dest) == read_tree(src)


def test_get_default_root(cli: Cli, src: Path, tmp_path: Path) -> None:
    ok(cli("put", src, "-n", "ds"))
    work = tmp_path / "work"
    work.mkdir()
    ok(cli("get", "ds", cwd=work))
    assert read_tree(work / "artifacts" / "ds-v0") == read_tree(src)


def test_checkout_removes_extra_files(cli: Cli, src: Path, tmp_path: Path) -> None:
    ok(cli("put", src, "-n", "ds"))
    dest = write_tree(tmp_path / "dest", {"extra.txt": "x", "sub/also-extra": "y"})
    ok(cli("checkout", "ds", dest))
    assert read_tree(dest) == read_tree(src)


def test_ls_lists_names_and_versions(cli: Cli, src: Path, tmp_path: Path) -> None:
    assert ok(cli("ls")).strip() == ""  # empty (and not even created) store
    ok(cli("put", src, "-n", "ds"))
    (src / "a.txt").write_text("v1\n")
    ok(cli("put", src, "-n", "ds", "-a", "best"))
    other = tmp_path / "o.txt"
    other.write_text("o")
    ok(cli("put", other, "-n", "other", "-t", "model"))

    lines = ok(cli("ls")).strip().splitlines()
    assert [line.split("\t")[:4] for line in lines] == [
        ["ds", "dataset", "v1", "2 version(s)"],
        ["other", "model", "v0", "1 version(s)"],
    ]
    rows = ok(cli("ls", "ds")).strip().splitlines()
    assert [r.split("\t")[0] for r in rows] == ["v0", "v1"]
    assert rows[1].split("\t")[-1] == "best,latest"
    assert "3 file(s)" in rows[0]


def test_show(cli: Cli, src: Path) -> None:
    ok(cli("put", src, "-n", "ds", "-d", "described", "-m", "k=1"))
    out = ok(cli("show", "ds:v0"))
    assert out.startswith("ds:v0  type=dataset  aliases=latest")
    assert "description: described" in out
    assert 'metadata: {"k": 1}' in out
    for path in ("a.txt", "sub/b.bin", "sub/c/d.txt"):
        assert path in out
    assert xxhash.xxh3_128_hexdigest(b"alpha\n") in out


def test_verify_ok_and_modified(cli: Cli, src: Path, tmp_path: Path) -> None:
    ok(cli("put", src, "-n", "ds"))
    dest = tmp_path / "dest"
    ok(cli("get", "ds", "--root", dest))
    rc, out, err = cli("verify", "ds", dest)
    assert rc == 0
    assert out.startswith("ok:")
    (dest / "a.txt").write_text("ALPHA\n")
    rc, out, err = cli("verify", "ds", dest)
    assert rc == 1
    assert "a.txt" in out
    assert "differs" in err
    assert "Traceback" not in err
    (dest / "a.txt").write_text("alpha\n")
    (dest / "new").write_text("extra")
    rc, out, _err = cli("verify", "ds:v0", dest)
    assert rc == 1
    assert "new: not in the version" in out


def test_alias_set_move_and_remove(cli: Cli, src: Path, store_path: Path) -> None:
    ok(cli("put", src, "-n", "ds"))
    (src / "a.txt").write_text("v1\n")
    ok(cli("put", src, "-n", "ds"))
    assert ok(cli("alias", "ds:v0", "best")).strip() == "ds:best -> ds:v0"
    assert Store(store_path).artifact("ds:best").version == "v0"
    ok(cli("alias", "ds:v1", "best"))
    assert Store(store_path).artifact("ds:best").version == "v1"
    assert "best" not in Store(store_path).artifact("ds:v0").aliases
    assert "removed" in ok(cli("alias", "--remove", "ds", "best"))
    assert "best" not in Store(store_path).artifact("ds:v1").aliases
    rc, _out, err = cli("alias", "--remove", "ds", "best")
    assert rc == 1
    one_error_line(err)
    rc, _out, err = cli("alias", "ds:v0", "latest")
    assert rc == 1
    one_error_line(err)
    rc, _out, err = cli("alias", "ds:v0", "v5")
    assert rc == 2
    one_error_line(err)


# -- --json ---------------------------------------------------------------------------------


def test_json_output_of_every_data_command(cli: Cli, src: Path, tmp_path: Path) -> None:
    put = as_json(cli("put", src, "-n", "ds", "-a", "first", "--json"))
    assert isinstance(put, dict)
    assert put["qualified_name"] == "ds:v0"
    assert put["version"] == "v0"
    assert put["files"] == 3
    assert sorted(put["aliases"]) == ["first", "latest"]

    again = as_json(cli("put", src, "-n", "ds", "--json"))
    assert isinstance(again, dict) and again["version"] == "v0"
    assert again["digest"] == put["digest"]

    dest = tmp_path / "dest"
    got = as_json(cli("get", "ds:v0", "--root", dest, "--json"))
    assert isinstance(got, dict)
    assert Path(got["root"]) == dest
    assert got["version"] == "v0"

    listing = as_json(cli("--json", "ls"))
    assert isinstance(listing, list)
    assert [(r["name"], r["latest"], r["versions"]) for r in listing] == [("ds", "v0", 1)]

    versions = as_json(cli("ls", "ds", "--json"))
    assert isinstance(versions, list)
    assert [v["version"] for v in versions] == ["v0"]
    assert versions[0]["digest"] == put["digest"]

    shown = as_json(cli("show", "ds", "--json"))
    assert isinstance(shown, dict)
    assert sorted(e["path"] for e in shown["entries"]) == ["a.txt", "sub/b.bin", "sub/c/d.txt"]
    assert shown["digest"] == put["digest"]
    assert isinstance(shown["created"], float)

    verified = as_json(cli("verify", "ds", dest, "--json"))
    assert isinstance(verified, dict)
    assert verified["ok"] is True and verified["version"] == "ds:v0"
    (dest / "a.txt").write_text("tampered")
    rc, out, _err = cli("verify", "ds", dest, "--json")
    assert rc == 1
    failed = json.loads(out)
    assert failed["ok"] is False
    assert [d["path"] for d in failed["differences"]] == ["a.txt"]

    aliased = as_json(cli("alias", "ds:v0", "best", "--json"))
    assert isinstance(aliased, dict)
    assert "best" in aliased["aliases"]
    removed = as_json(cli("alias", "--remove", "ds", "best", "--json"))
    assert isinstance(removed, dict)
    assert (removed["name"], removed["removed"]) == ("ds", "best")

    initialized = as_json(cli("init", tmp_path / "another", "--json"))
    assert isinstance(initialized, dict)
    assert initialized["store"] == str(tmp_path / "another")
    assert (tmp_path / "another" / "artstore.json").is_file()


# -- errors and exit codes --------------------------------------------------------------------


def test_unknown_artifact_exits_1_with_one_error_line(cli: Cli, src: Path) -> None:
    for args in (("get", "ghost"), ("show", "ghost:v0"), ("ls", "ghost")):
        rc, out, err = cli(*args)
        assert rc == 1, args
        assert out == ""
        assert "ghost" in one_error_line(err)
    ok(cli("put", src, "-n", "ds"))
    rc, _out, err = cli("show", "ds:v9")
    assert rc == 1
    assert "v9" in one_error_line(err)
    rc, _out, err = cli("get", "ds:nosuchalias")
    assert rc == 1
    one_error_line(err)


@pytest.mark.parametrize(
    "args",
    [
        ("get", "bad name"),
        ("show", "../etc"),
        ("get", "ds:"),
        ("ls", "bad/name"),
        ("put", "{src}", "-n", ".hidden"),
        ("put", "{src}", "-t", "bad type"),
        ("put", "{src}", "-a", "v1"),
    ],
)
def test_invalid_name_exits_2(cli: Cli, src: Path, args: tuple[str, ...]) -> None:
    rc, out, err = cli(*(a.format(src=src) for a in args))
    assert rc == 2, (rc, out, err)
    assert out == ""
    one_error_line(err)


def test_unknown_option_exits_2(cli: Cli) -> None:
    rc, out, err = cli("ls", "--no-such-option")
    assert rc == 2
    assert out == ""
    assert "no-such-option" in err
    assert "Traceback" not in err
    rc, _out, err = cli("no-such-command")
    assert rc == 2
    assert "Traceback" not in err


def test_debug_shows_a_traceback(cli: Cli) -> None:
    rc, _out, err = cli("--debug", "get", "ghost")
    assert rc != 0
    assert "Traceback" in err
    assert "ArtifactNotFoundError" in err
    rc, _out, err = cli("get", "ghost", "--debug")
    assert rc != 0
    assert "Traceback" in err


def test_version_and_help(cli: Cli) -> None:
    assert "0.1.0" in ok(cli("--version"))
    out = ok(cli("--help"))
    for command in ("put", "get", "ls", "show", "verify", "alias", "init", "checkout"):
        assert command in out


# -- choosing the store ---------------------------------------------------------------------


def test_store_option_and_artstore_dir(
    cli: Cli, src: Path, tmp_path: Path, store_path: Path
) -> None:
    explicit = tmp_path / "explicit-store"
    ok(cli("--store", explicit, "put", src, "-n", "in-explicit"))
    ok(cli("put", src, "-n", "in-env"))
    assert Store(explicit).artifact_names() == ["in-explicit"]
    assert Store(store_path).artifact_names() == ["in-env"]
    # --store after the command name works too.
    assert ok(cli("ls", "--store", explicit)).startswith("in-explicit\t")
    assert ok(cli("ls")).startswith("in-env\t")

    env = dict(os.environ, ARTSTORE_DIR=str(explicit))
    assert ok(cli("ls", env=env)).startswith("in-explicit\t")
    rc, _out, err = cli("get", "in-env", env=env)
    assert rc == 1
    one_error_line(err)


def test_init_creates_a_store(cli: Cli, tmp_path: Path) -> None:
    target = tmp_path / "new" / "store"
    out = ok(cli("init", target))
    assert str(target) in out
    marker = json.loads((target / "artstore.json").read_text())
    assert marker["format"] == "artstore-store"
    assert marker["version"] == 1
    assert len(marker["id"]) == 32
    assert marker["shared"] is False
    # Initialising again is harmless and keeps the store's id.
    ok(cli("init", target))
    assert json.loads((target / "artstore.json").read_text())["id"] == marker["id"]


def test_init_into_a_non_empty_directory_fails_clearly(cli: Cli, tmp_path: Path) -> None:
    target = write_tree(tmp_path / "occupied", {"notes.txt": "mine"})
    rc, out, err = cli("init", target)
    assert rc == 1
    assert out == ""
    line = one_error_line(err)
    assert "not empty" in line
    assert str(target) in line
    assert not (target / "artstore.json").exists()
    assert sorted(os.listdir(target)) == ["notes.txt"]


def test_put_into_a_non_empty_non_store_directory_fails(
    cli: Cli, src: Path, tmp_path: Path
) -> None:
    target = write_tree(tmp_path / "occupied", {"notes.txt": "mine"})
    rc, _out, err = cli("--store", target, "put", src)
    assert rc == 1
    assert "not empty" in one_error_line(err)
    assert not (target / "artstore.json").exists()
