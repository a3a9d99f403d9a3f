"""The ``artstore`` command line. Each command parses its arguments and calls the API."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from . import __version__
from ._store import Store
from .errors import ArtstoreError, InvalidInputError, InvalidNameError, VerificationError

log = logging.getLogger("artstore.cli")


class Options:
    def __init__(self) -> None:
        self.store: str | None = None
        self.json = False
        self.debug = False

    def open_store(self) -> Store:
        return Store(self.store)


class FiniteFloat(click.FloatRange):
    """A float range that also refuses NaN and infinities (which compare false to any bound)."""

    name = "finite float"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        import math

        result = super().convert(value, param, ctx)
        if isinstance(result, float) and not math.isfinite(result):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return result


def common(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Accept --store, --json and --debug after the command name too."""

    def set_store(ctx: click.Context, _p: click.Parameter, value: str | None) -> None:
        if value is not None:
            ctx.ensure_object(Options).store = value

    def set_flag(name: str) -> Callable[[click.Context, click.Parameter, bool], None]:
        def callback(ctx: click.Context, _p: click.Parameter, value: bool) -> None:
            if value:
                setattr(ctx.ensure_object(Options), name, True)
                if name == "debug":
                    _setup_logging(True)

        return callback

    fn = click.option("--store", callback=set_store, expose_value=False, metavar="DIR",
                      help="The store to use (default: $ARTSTORE_DIR, else ~/.local/share/artstore).")(fn)
    fn = click.option("--json", "as_json", is_flag=True, callback=set_flag("json"),
                      expose_value=False, help="Print results as JSON.")(fn)
    fn = click.option("--debug", is_flag=True, callback=set_flag("debug"), expose_value=False,
                      help="Show debug logs and tracebacks.")(fn)
    return click.pass_obj(fn)


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="artstore: %(levelname)s: %(message)s" if not debug else
        "%(asctime)s %(name)s %(levelname)s: %(message)s",
        force=True,
    )
    # watchdog logs an error when its inotify thread is stopped mid-event; harmless
    # here, and not the user's business unless they asked for debug output.
    logging.getLogger("watchdog").setLevel(logging.DEBUG if debug else logging.CRITICAL)


def emit(opts: Options, data: Any, text: str | Callable[[], str]) -> None:
    if opts.json:
        click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
    else:
        out = text() if callable(text) else text
        if out:
            click.echo(out)


@contextmanager
def progress_bar(total: int | None, desc: str) -> Iterator[Callable[[int, int], None] | None]:
    """A byte-rate progress bar on stderr, shown on a terminal only."""
    if not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
              leave=False, file=sys.stderr, mininterval=0.5) as bar:
        files = [0]

        def update(nbytes: int, nfiles: int) -> None:
            files[0] += nfiles
            bar.update(nbytes)
            bar.set_postfix(files=files[0], refresh=False)

        yield update


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _parse_metadata(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="-m/--metadata")
        try:
            out[key] = json.loads(value)
        except (ValueError, RecursionError):
            out[key] = value
    return out


def _artifact_from_path(path: str | None, name: str | None, type_: str,
                        description: str | None = None, meta: dict[str, Any] | None = None,
                        policy: str = "mutable") -> Any:
    from ._artifact import Artifact

    if path is None:
        if name is None:
            raise click.UsageError("give -n NAME")
        return Artifact(name, type_, description=description, metadata=meta)
    is_ref = "://" in path
    local = Path(path)
    if not is_ref and not local.exists():
        raise InvalidInputError(f"cannot put {path}: no such file or directory")
    default_name = (path.rstrip("/").rsplit("/", 1)[-1] if is_ref
                    else local.absolute().name) or "artifact"
    art = Artifact(default_name if name is None else name, type_, description=description,
                   metadata=meta)
    if is_ref:
        art.add_reference(path)
    elif local.is_dir():
        art.add_dir(local, policy=policy)
    else:
        art.add_file(local, policy=policy)
    return art


def _draft_bytes(art: Any) -> int | None:
    """Total size of a draft's local files, for a progress bar (only on a terminal)."""
    if not sys.stderr.isatty():
        return None
    return sum(s.stat().st_size for s in art._sources.values() if isinstance(s, Path))


def _describe(art: Any) -> dict[str, Any]:
    return {
        "name": art.name,
        "version": art.version,
        "qualified_name": art.qualified_name,
        "type": art.type,
        "aliases": art.aliases,
        "digest": art.digest,
        "id": art.id,
        "size": art.size,
        "files": len(art.manifest),
        "created": art.created_at,
        "description": art.description,
        "metadata": art.metadata,
    }


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="artstore")
@common
def cli(opts: Options) -> None:
    """Version datasets, models and results in a local content-addressed store."""


@cli.command("init")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--shared", is_flag=True, help="Make the store writable by the directory's group.")
@common
def init_cmd(opts: Options, directory: str | None, shared: bool) -> None:
    """Create a store in DIRECTORY (default: the configured store)."""
    store = Store.init(directory or opts.store, shared=shared)
    note = " (shared: group-writable, setgid directories)" if shared else ""
    emit(opts, {"store": str(store.path), "shared": shared}, f"store ready at {store.path}{note}")


@cli.command()
@click.argument("path")
@click.option("-n", "--name", help="Artifact name (default: the file or directory name).")
@click.option("-t", "--type", "type_", default="dataset", show_default=True, help="Artifact type.")
@click.option("-a", "--alias", "aliases", multiple=True, help="Alias to add (repeatable).")
@click.option("-d", "--description", help="Description of the version.")
@click.option("-m", "--metadata", "metadata", multiple=True, metavar="KEY=VALUE",
              help="Metadata (repeatable); VALUE is parsed as JSON when it can be.")
@click.option("--distributed-id", metavar="ID",
              help="Stage the files into the pending collaborative version ID instead.")
@click.option("--link", is_flag=True,
              help="Hard-link large files into the store instead of copying them. You promise "
                   "never to modify them; they become read-only.")
@common
def put(opts: Options, path: str, name: str | None, type_: str, aliases: tuple[str, ...],
        description: str | None, metadata: tuple[str, ...], distributed_id: str | None,
        link: bool) -> None:
    """Log a file or directory (or a file:// reference) as a new version; print NAME:vN."""
    from ._artifact import target_log

    art = _artifact_from_path(path, name, type_, description, _parse_metadata(metadata),
                              policy="immutable" if link else "mutable")
    store = opts.open_store()
    if distributed_id is not None:
        if aliases:
            raise click.UsageError("--alias goes with 'artstore finish' in collaborative mode")
        with progress_bar(_draft_bytes(art), "stage") as update:
            count = store.staging.upsert(art, distributed_id, None, update)
        emit(opts, {"name": art.name, "distributed_id": distributed_id, "entries": count},
             f"staged {count} file(s) into {art.name} (distributed id {distributed_id})")
        return
    with progress_bar(_draft_bytes(art), "put") as update:
        before = store.read_refs(art.name)
        target_log(store, art, aliases, progress=update)
    created = before is None or art._index >= len(before.versions)
    if not created and not opts.json:
        click.echo(f"unchanged: same content as {art.qualified_name}", err=True)
    emit(opts, {**_describe(art), "new_version": created}, art.qualified_name)


def _store_or_remote(opts: Options, remote: str | None) -> Store:
    """The store named by --store (or the default), or its remote named ``remote``."""
    store = opts.open_store()
    if remote is None:
        return store
    from ._remote import pick_remote

    return pick_remote(store, remote)[1]


class Size(click.ParamType):
    """A size in bytes: a number, or one with K, M, G or T (powers of 1024)."""

    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from ._cache import parse_size

        try:
            return parse_size(str(value))
        except ArtstoreError as exc:
            self.fail(str(exc), param, ctx)


@cli.command()
@click.argument("spec", metavar="NAME[:VERSION]")
@click.option("--root", type=click.Path(file_okay=False), help="Where to write (default ./artifacts/NAME-vN).")
@click.option("--mode", type=click.Choice(["copy", "hardlink", "symlink", "reflink", "auto"]),
              default="copy", show_default=True, help="How to place files.")
@click.option("--path-prefix", help="Only entries whose path starts with this.")
@click.option("--include", "include", multiple=True, metavar="GLOB",
              help="Only entries whose path matches GLOB (repeatable; '*' crosses '/').")
@click.option("--remote", help="Read the version from this remote, not the local store.")
@click.option("--cache-size", type=Size(), metavar="SIZE",
              help="Bound of the download cache for remote stores, e.g. 2G "
                   "(default $ARTSTORE_CACHE_SIZE, else 10G).")
@common
def get(opts: Options, spec: str, root: str | None, mode: str, path_prefix: str | None,
        include: tuple[str, ...], remote: str | None, cache_size: int | None) -> None:
    """Download a version (default: latest) into a directory."""
    store = _store_or_remote(opts, remote)
    if cache_size is not None:
        store.cache.limit = cache_size
    art = store.artifact(spec)
    with progress_bar(art.size, "get") as update:
        where = art.download(root, mode=mode, path_prefix=path_prefix, progress=update,
                             include=include or None)
    emit(opts, {**_describe(art), "root": where}, where)


# -- remotes -------------------------------------------------------------------------------


@cli.group()
def remote() -> None:
    """Other stores (a path or an s3:// URL) to push versions to and pull them from."""


@remote.command("add")
@click.argument("name")
@click.argument("url")
@common
def remote_add(opts: Options, name: str, url: str) -> None:
    """Remember URL (a store path or s3://bucket/prefix) as remote NAME."""
    from ._remote import add_remote

    where = add_remote(opts.open_store(), name, url)
    emit(opts, {"name": name, "url": where}, f"{name}\t{where}")


@remote.command("ls")
@common
def remote_ls(opts: Options) -> None:
    """List the remotes."""
    from ._remote import remotes

    rows = [{"name": n, "url": u} for n, u in remotes(opts.open_store()).items()]
    emit(opts, rows, lambda: "\n".join(f"{r['name']}\t{r['url']}" for r in rows))


@remote.command("rm")
@click.argument("name")
@common
def remote_rm(opts: Options, name: str) -> None:
    """Forget remote NAME (nothing in it is touched)."""
    from ._remote import remove_remote

    remove_remote(opts.open_store(), name)
    emit(opts, {"removed": name}, f"removed remote {name}")


def _transfer_command(opts: Options, specs: tuple[str, ...], remote_name: str | None,
                      verb: str) -> None:
    from ._remote import describe, pick_remote, pull, push

    store = opts.open_store()
    name, other = pick_remote(store, remote_name)
    run = push if verb == "push" else pull
    with progress_bar(None, verb) as update:
        moved = run(store, other, list(specs), update)
    rows = describe(moved, "remote_version" if verb == "push" else "local_version", name)

    def text() -> str:
        lines = []
        # A version on the remote is written with the remote's name before it.
        src, dst = ("", f"{name} ") if verb == "push" else (f"{name} ", "")
        for m in moved:
            state = ("sent" if verb == "push" else "fetched") if m.created else \
                "not copied: already there, or copied before"
            lines.append(f"{src}{m.name}:v{m.source} -> {dst}{m.name}:v{m.dest}  ({state}; "
                         f"{m.blobs} blob(s), {_size(m.bytes)} copied)")
        return "\n".join(lines) or "nothing to " + verb

    emit(opts, rows, text)


@cli.command("push")
@click.argument("specs", nargs=-1, metavar="[NAME[:VERSION]]...")
@click.option("--remote", "remote_name", help="The remote (needed when there are several).")
@common
def push_cmd(opts: Options, specs: tuple[str, ...], remote_name: str | None) -> None:
    """Send versions (default: all) to a remote; the remote numbers them itself."""
    _transfer_command(opts, specs, remote_name, "push")


@cli.command("pull")
@click.argument("specs", nargs=-1, metavar="[NAME[:VERSION]]...")
@click.option("--remote", "remote_name", help="The remote (needed when there are several).")
@common
def pull_cmd(opts: Options, specs: tuple[str, ...], remote_name: str | None) -> None:
    """Fetch versions (default: all) from a remote into the local store."""
    _transfer_command(opts, specs, remote_name, "pull")


@cli.command()
@click.argument("spec", metavar="NAME[:VERSION]")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--mode", type=click.Choice(["copy", "hardlink", "symlink", "reflink", "auto"]),
              default="copy", show_default=True)
@common
def checkout(opts: Options, spec: str, root: str, mode: str) -> None:
    """Make ROOT hold exactly the version's files, deleting any others."""
    art = opts.open_store().artifact(spec)
    where = art.checkout(root, mode=mode)
    emit(opts, {**_describe(art), "root": where}, where)


@cli.command("ls")
@click.argument("name", required=False)
@common
def ls_cmd(opts: Options, name: str | None) -> None:
    """List artifact names, or the versions of NAME."""
    store = opts.open_store()
    if name is None:
        rows = []
        for n in store.artifact_names():
            latest = store.artifact(n)
            refs = store.read_refs(n)
            count = sum(v is not None for v in refs.versions) if refs else 0
            rows.append({"name": n, "type": latest.type, "latest": latest.version,
                         "versions": count, "updated": latest.created_at})
        emit(opts, rows, lambda: "\n".join(
            f"{r['name']}\t{r['type']}\t{r['latest']}\t{r['versions']} version(s)\t{_when(r['updated'])}"
            for r in rows))
        return
    versions = store.versions(name)
    rows = [{"version": a.version, "aliases": a.aliases, "size": a.size, "files": len(a.manifest),
             "created": a.created_at, "digest": a.digest} for a in versions]
    emit(opts, rows, lambda: "\n".join(
        f"{r['version']}\t{_size(r['size'])}\t{r['files']} file(s)\t{_when(r['created'])}\t"
        f"{','.join(r['aliases'])}" for r in rows))


@cli.command()
@click.argument("spec", metavar="NAME[:VERSION]")
@common
def show(opts: Options, spec: str) -> None:
    """Show a version's metadata and entries."""
    art = opts.open_store().artifact(spec)
    entries = [{"path": e.path, "digest": e.digest, "size": e.size, "ref": e.ref}
               for e in art.files()]

    def text() -> str:
        lines = [f"{art.qualified_name}  type={art.type}  aliases={','.join(art.aliases)}",
                 f"digest {art.digest}  {len(entries)} file(s), {_size(art.size)}  "
                 f"created {_when(art.created_at)}"]
        if art.description:
            lines.append(f"description: {art.description}")
        if art.metadata:
            lines.append(f"metadata: {json.dumps(art.metadata, sort_keys=True)}")
        for e in entries:
            size = "-" if e["size"] is None else str(e["size"])
            lines.append(f"  {size:>12}  {e['digest']}  {e['path']}" + (f"  -> {e['ref']}" if e["ref"] else ""))
        return "\n".join(lines)

    emit(opts, {**_describe(art), "entries": entries, "run": art.logged_by()}, text)


@cli.command()
@click.argument("spec", metavar="NAME[:VERSION]")
@click.argument("root", type=click.Path())
@click.option("--include", "include", multiple=True, metavar="GLOB",
              help="Only paths matching GLOB (repeatable), as after 'get --include'.")
@click.option("--remote", help="Read the version from this remote, not the local store.")
@common
def verify(opts: Options, spec: str, root: str, include: tuple[str, ...],
           remote: str | None) -> None:
    """Check that ROOT holds exactly the version's files, byte for byte."""
    art = _store_or_remote(opts, remote).artifact(spec)
    try:
        art.verify(root, include=include or None)
    except VerificationError as exc:
        diffs = [{"path": p, "problem": why} for p, why in exc.differences]
        emit(opts, {"ok": False, "version": art.qualified_name, "differences": diffs},
             lambda: "\n".join(f"{d['path']}: {d['problem']}" for d in diffs))
        if not opts.json:
            click.echo(f"artstore: {root} differs from {art.qualified_name} in "
                       f"{len(diffs)} place(s)", err=True)
        sys.exit(1)
    emit(opts, {"ok": True, "version": art.qualified_name},
         f"ok: {root} matches {art.qualified_name}")


@cli.command()
@click.argument("spec", metavar="NAME:VERSION")
@click.argument("alias")
@click.option("-r", "--remove", is_flag=True, help="Remove ALIAS from NAME instead.")
@common
def alias(opts: Options, spec: str, alias: str, remove: bool) -> None:
    """Point ALIAS at a version, or remove it with --remove (give NAME alone)."""
    store = opts.open_store()
    if remove:
        name = spec.partition(":")[0]
        store.remove_alias(name, alias)
        emit(opts, {"name": name, "removed": alias}, f"removed {alias} from {name}")
        return
    art = store.add_alias(spec, alias)
    emit(opts, _describe(art), f"{art.name}:{alias} -> {art.qualified_name}")


@cli.command()
@click.argument("path", required=False)
@click.option("-n", "--name", required=True, help="Artifact name.")
@click.option("--distributed-id", required=True, metavar="ID", help="The pending version to seal.")
@click.option("-t", "--type", "type_", default="dataset", show_default=True)
@click.option("-a", "--alias", "aliases", multiple=True, help="Alias for the new version.")
@click.option("-d", "--description")
@click.option("-m", "--metadata", "metadata", multiple=True, metavar="KEY=VALUE")
@click.option("--wait-for", type=click.IntRange(min=1), metavar="N",
              help="Wait until N contributions are staged.")
@click.option("--timeout", type=FiniteFloat(min=0), metavar="SECONDS",
              help="Give up waiting after this long.")
@click.option("--on-conflict", type=click.Choice(["error", "newest", "oldest"]), default="error",
              show_default=True, help="What to do with a path staged with different contents.")
@common
def finish(opts: Options, path: str | None, name: str, distributed_id: str, type_: str,
           aliases: tuple[str, ...], description: str | None, metadata: tuple[str, ...],
           wait_for: int | None, timeout: float | None, on_conflict: str) -> None:
    """Seal a collaborative version, adding PATH's files if given; print NAME:vN."""
    from ._artifact import Artifact

    art = _artifact_from_path(path, name, type_, description, _parse_metadata(metadata))
    store = opts.open_store()
    refs, index = store.staging.finish(art, distributed_id, aliases=aliases, wait_for=wait_for,
                                       timeout=timeout, on_conflict=on_conflict)
    done = Artifact._logged(store, refs, index)
    emit(opts, _describe(done), done.qualified_name)


@cli.group()
def staging() -> None:
    """Pending collaborative versions."""


def _pending_row(p: Any) -> dict[str, Any]:
    return {"name": p.name, "distributed_id": p.distributed_id,
            "contributions": len(p.contributions), "entries": p.entry_count, "size": p.size,
            "oldest": p.oldest, "newest": p.newest, "closing": p.closing,
            "writers": sorted({c.label for c in p.contributions})}


def _age(ts: float | None) -> str:
    import time

    if ts is None:
        return "-"
    seconds = max(0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@staging.command("ls")
@common
def staging_ls(opts: Options) -> None:
    """List pending collaborative versions."""
    rows = [_pending_row(p) for p in opts.open_store().staging.pending()]
    emit(opts, rows, lambda: "\n".join(
        f"{r['name']}\t{r['distributed_id']}\t{r['contributions']} contribution(s)\t"
        f"{r['entries']} file(s)\t{_size(r['size'])}\tage {_age(r['oldest'])}"
        for r in rows))


@staging.command("show")
@click.argument("distributed_id", metavar="ID")
@click.option("-n", "--name", help="Only this artifact.")
@common
def staging_show(opts: Options, distributed_id: str, name: str | None) -> None:
    """Show the contributions staged under ID."""
    found = [p for p in opts.open_store().staging.pending()
             if p.distributed_id == distributed_id and (name is None or p.name == name)]
    if not found:
        raise InvalidInputError(f"nothing is staged under distributed id {distributed_id!r}")
    rows = []
    for p in found:
        row = _pending_row(p)
        row["contributions"] = [
            {"record": c.key, "writer": c.label, "entries": len(c.entries),
             "size": sum(e.size or 0 for e in c.entries), "created": c.created}
            for c in p.contributions]
        rows.append(row)

    def text() -> str:
        lines = []
        for r in rows:
            lines.append(f"{r['name']} (distributed id {r['distributed_id']}): {r['entries']} "
                         f"file(s), {_size(r['size'])}" + (" [finishing]" if r["closing"] else ""))
            for c in r["contributions"]:
                lines.append(f"  {c['writer']}\t{c['entries']} file(s)\t{_size(c['size'])}\t"
                             f"age {_age(c['created'])}")
        return "\n".join(lines)

    emit(opts, rows, text)


@staging.command("abort")
@click.argument("distributed_id", metavar="ID")
@click.option("-n", "--name", help="Only this artifact.")
@common
def staging_abort(opts: Options, distributed_id: str, name: str | None) -> None:
    """Drop every contribution staged under ID (their blobs become garbage for gc)."""
    store = opts.open_store()
    targets = sorted({p.name for p in store.staging.pending()
                      if p.distributed_id == distributed_id and (name is None or p.name == name)})
    if not targets:
        raise InvalidInputError(f"nothing is staged under distributed id {distributed_id!r}")
    dropped = {n: store.staging.abort(n, distributed_id) for n in targets}
    emit(opts, {"distributed_id": distributed_id, "dropped": dropped},
         lambda: "\n".join(f"aborted {n} (distributed id {distributed_id}): {c} contribution(s) "
                            "dropped" for n, c in dropped.items()))


@cli.command()
@click.argument("spec", metavar="NAME[:VERSION]")
@click.option("--add", "adds", multiple=True, metavar="PATH[:NAME]",
              help="Add or replace a file or directory (as NAME inside the artifact).")
@click.option("--remove", "removes", multiple=True, metavar="NAME",
              help="Remove an entry or a directory of entries.")
@click.option("-a", "--alias", "aliases", multiple=True)
@common
def patch(opts: Options, spec: str, adds: tuple[str, ...], removes: tuple[str, ...],
          aliases: tuple[str, ...]) -> None:
    """Make a new version from VERSION (default latest) with entries added or removed."""
    from ._artifact import target_log

    if not adds and not removes:
        raise click.UsageError("give at least one --add or --remove")
    store = opts.open_store()
    draft = store.artifact(spec).new_draft()
    for item in removes:
        draft.remove(item)
    for item in adds:
        local, sep, inside = item.rpartition(":")
        # A path that exists as given is taken whole: file names may contain ':'.
        if Path(item).exists() or not sep or not local:
            local, inside = item, ""
        source = Path(local)
        if source.is_dir():
            draft.add_dir(source, name=inside or None, overwrite=True)
        elif source.is_file():
            draft.add_file(source, name=inside or None, overwrite=True)
        else:
            raise InvalidInputError(f"cannot add {local}: no such file or directory")
    with progress_bar(_draft_bytes(draft), "patch") as update:
        target_log(store, draft, aliases, progress=update)
    emit(opts, _describe(draft), draft.qualified_name)


@cli.command()
@click.argument("first", metavar="NAME:A")
@click.argument("second", metavar="NAME:B")
@common
def diff(opts: Options, first: str, second: str) -> None:
    """List entries added, removed and modified from version A to version B."""
    store = opts.open_store()
    a, b = store.artifact(first), store.artifact(second)
    old, new = a.manifest, b.manifest
    rows = (
        [{"change": "added", "path": p, "size": new[p].size} for p in new if p not in old]
        + [{"change": "removed", "path": p, "size": old[p].size} for p in old if p not in new]
        + [{"change": "modified", "path": p, "old_size": old[p].size, "size": new[p].size}
           for p in new if p in old and old[p] != new[p]]
    )
    rows.sort(key=lambda r: (r["path"], r["change"]))
    sign = {"added": "+", "removed": "-", "modified": "M"}

    def text() -> str:
        lines = []
        for r in rows:
            size = "-" if r["size"] is None else r["size"]
            if r["change"] == "modified":
                old = "-" if r["old_size"] is None else r["old_size"]
                lines.append(f"M {r['path']}\t{old} -> {size} bytes")
            else:
                lines.append(f"{sign[r['change']]} {r['path']}\t{size} bytes")
        added = sum(r["change"] == "added" for r in rows)
        removed = sum(r["change"] == "removed" for r in rows)
        lines.append(f"{a.qualified_name} -> {b.qualified_name}: {added} added, "
                     f"{removed} removed, {len(rows) - added - removed} modified")
        return "\n".join(lines)

    emit(opts, {"from": a.qualified_name, "to": b.qualified_name, "changes": rows}, text)


@cli.command()
@click.option("--sample", type=FiniteFloat(0, 1), default=1.0, show_default=True,
              help="Fraction of blobs to re-hash (1 = all).")
@common
def fsck(opts: Options, sample: float) -> None:
    """Check every record and re-hash blobs; exit 1 if anything is damaged."""
    report = opts.open_store().fsck(sample=sample)
    data = {"ok": report.ok, "versions": report.versions, "blobs": report.blobs_checked,
            "blobs_hashed": report.blobs_hashed,
            "problems": [{"severity": p.severity, "path": p.path, "message": p.message}
                         for p in report.problems]}
    emit(opts, data, lambda: "\n".join(
        [str(p) for p in report.problems]
        + [f"{'ok' if report.ok else 'DAMAGED'}: {report.versions} version(s), "
           f"{report.blobs_checked} blob(s), {report.blobs_hashed} re-hashed, "
           f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)"]))
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--grace", type=FiniteFloat(min=0), metavar="SECONDS",
              help="Keep unreferenced objects younger than this (default 24 h).")
@common
def gc(opts: Options, dry_run: bool, grace: float | None) -> None:
    """Apply retention rules and remove what no version or pending write needs."""
    report = opts.open_store().gc(grace=grace, dry_run=dry_run)
    verb = "would free" if dry_run else "freed"
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.removed.items())) or "nothing"
    data = {"dry_run": dry_run, "removed": report.removed, "freed_bytes": report.freed_bytes,
            "versions_deleted": report.versions_deleted, "kept_young": report.kept_young}
    emit(opts, data, lambda: "\n".join(
        [f"{'would delete' if dry_run else 'deleted'} {v} (retention)" for v in report.versions_deleted]
        + [f"{verb} {_size(report.freed_bytes)}: {counts}; kept {report.kept_young} young "
           "unreferenced object(s)"]))


@cli.command("rm")
@click.argument("spec", metavar="NAME:VERSION")
@click.option("--delete-aliases", is_flag=True, help="Also drop the version's aliases.")
@common
def rm_cmd(opts: Options, spec: str, delete_aliases: bool) -> None:
    """Delete a version (its blobs go at the next gc unless other versions use them)."""
    from ._names import parse_spec

    name, which = parse_spec(spec, default="")
    if not which:
        raise click.UsageError(f"give the version to delete, as {name}:vN or {name}:ALIAS")
    store = opts.open_store()
    art = store.artifact(spec)
    store.delete_version(art.qualified_name, delete_aliases=delete_aliases)
    emit(opts, {"deleted": art.qualified_name}, f"deleted {art.qualified_name}")


@cli.command()
@click.argument("name")
@click.option("--keep-last", type=click.IntRange(min=1), metavar="N",
              help="Keep the last N versions, and every version with an alias.")
@click.option("--clear", is_flag=True, help="Remove the rule.")
@common
def retention(opts: Options, name: str, keep_last: int | None, clear: bool) -> None:
    """Show or set the retention rule of NAME, applied by gc."""
    store = opts.open_store()
    if clear or keep_last is not None:
        store.set_retention(name, None if clear else keep_last)
    rule = store.retention(name)
    emit(opts, {"name": name, "keep_last": rule},
         f"{name}: " + (f"keep the last {rule} version(s) and aliased ones" if rule else "keep all"))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 operational error, 2 usage error)."""
    _setup_logging(False)
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="artstore", standalone_mode=False, obj=Options())
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        exc.show()
        return 2
    except click.Abort:
        click.echo("artstore: aborted", err=True)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        click.echo("artstore: interrupted; nothing stored was damaged", err=True)
        return 130
    except ArtstoreError as exc:
        if debug:
            raise
        click.echo(f"artstore: error: {exc}", err=True)
        # A malformed name or version on the command line is a usage error.
        return 2 if isinstance(exc, InvalidNameError) else 1
    except OSError as exc:
        if debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        click.echo(f"artstore: error: {exc.strerror or exc}{where}", err=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - one line for the user, traceback on request
        if debug:
            raise
        if type(exc).__module__.startswith("obstore"):
            from ._s3 import explain

            click.echo(f"artstore: error: {explain(exc, 'object storage')}", err=True)
            return 1
        click.echo(f"artstore: internal error: {type(exc).__name__}: {exc} "
                   "(rerun with --debug for a traceback)", err=True)
        return 1
    return 0


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
