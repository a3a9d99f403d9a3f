"""A store in S3-compatible object storage, through obstore.

Object storage has no locks, links or renames. What the filesystem backend does with
link(2) this one does with conditional writes: a key is created only if absent
(``If-None-Match: *``) and a lock marker is replaced only if unchanged (``If-Match``).
Any 412 "Precondition Failed" on a create means the key exists, whatever else the server
says. A PUT is durable when it returns, so :meth:`S3Backend.sync` has nothing to do.

Credentials, region and endpoint come from the standard AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
``AWS_ENDPOINT_URL``), else from the profile ``$AWS_PROFILE`` (or ``default``) of the
shared AWS files ``~/.aws/credentials`` and ``~/.aws/config``.
"""

from __future__ import annotations

import configparser
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import obstore
import obstore.exceptions
from obstore.exceptions import AlreadyExistsError, PreconditionError
from obstore.store import S3Store

from ._backend import CHUNK, Backend, TempFile, URLPath
from ._cache import HOST_TAG, _dead_here
from ._lock import HOST_ID, WARN_AFTER, LockTimeout, _alive, _start_time
from .errors import InvalidInputError, StorageError

T = TypeVar("T")

log = logging.getLogger(__name__)

#: How long a lock survives a holder that stopped refreshing it (there is no pid to test
#: on another host, and no shared clock: a waiter counts on its own monotonic clock).
LEASE_SECONDS = 60.0
#: Uploads in flight at once when a batch of blobs is published.
UPLOADS = 16


def _aws_profile() -> dict[str, str]:
    """The settings of the selected profile in the shared AWS config files."""
    profile = os.environ.get("AWS_PROFILE", "default")
    found: dict[str, str] = {}
    files = [
        (os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
         "default" if profile == "default" else f"profile {profile}"),
        (os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), profile),
    ]
    for name, section in files:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(os.path.expanduser(name))
        except configparser.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise InvalidInputError(f"cannot read AWS settings from {name}: {first}") from None
        if parser.has_section(section):
            found.update(parser.items(section))
    return found


#: Variables that name a source of credentials other than keys.
_OTHER_CREDENTIALS = ("ARTSTORE_S3_INSTANCE_ROLE", "AWS_WEB_IDENTITY_TOKEN_FILE",
                      "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                      "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_SKIP_SIGNATURE")


def store_config() -> tuple[dict[str, str], bool]:
    """obstore settings for the endpoint, region and credentials, and whether HTTP is allowed."""
    profile = _aws_profile()
    pairs = {
        "access_key_id": ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        "secret_access_key": ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        "session_token": ("AWS_SESSION_TOKEN", "aws_session_token"),
        "region": ("AWS_REGION", "region"),
        "endpoint": ("AWS_ENDPOINT_URL", "endpoint_url"),
    }
    config = {}
    for key, (env, ini) in pairs.items():
        value = os.environ.get(env) or profile.get(ini)
        if value:
            config[key] = value
    if "region" not in config and os.environ.get("AWS_DEFAULT_REGION"):
        config["region"] = os.environ["AWS_DEFAULT_REGION"]
    config.setdefault("region", "us-east-1")
    if "access_key_id" not in config and not any(os.environ.get(v) for v in _OTHER_CREDENTIALS):
        # Without this check the client would go looking for an instance role on the
        # cloud's metadata address, which off a cloud machine only hangs, then fails.
        raise InvalidInputError(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a "
            "profile in ~/.aws/credentials (AWS_PROFILE picks one); on a cloud machine with "
            "an instance role, set ARTSTORE_S3_INSTANCE_ROLE=1"
        )
    endpoint = config.get("endpoint", "")
    return config, endpoint.startswith("http://")


_HINTS = {
    "NoSuchBucket": "create the bucket, or correct the bucket name in the store URL",
    "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID (or the profile's aws_access_key_id)",
    "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY (or the profile's secret)",
    "AccessDenied": "check that these credentials may read and write the bucket",
}


def explain(exc: BaseException, location: str) -> str:
    """One line saying what object storage answered (its messages run to many lines)."""
    text = str(exc)
    if "error sending request" in text or "Connection refused" in text or "dns error" in text:
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "the S3 endpoint")
        return (f"cannot reach {endpoint} for {location}: the connection failed; check "
                "AWS_ENDPOINT_URL and that the server is up")
    code = re.search(r"<Code>([^<]+)</Code>", text)
    message = re.search(r"<Message>([^<]+)</Message>", text)
    status = re.search(r"status code: (\d{3}[^:<]*)", text)
    if code or status:
        said = " ".join(p for p in (status and status.group(1).strip(),
                                    code and code.group(1)) if p)
        line = f"{location}: the server answered {said}"
        if message:
            line += f" ({message.group(1).rstrip('.')})"
        hint = _HINTS.get(code.group(1)) if code else None
        if hint is None and status and status.group(1).startswith("403"):
            # A HEAD's refusal has no body to name the reason.
            hint = ("check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that they may "
                    "use the bucket")
        return f"{line}; {hint}" if hint else line
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{location}: {first}"


def _translated(fn: Callable[..., T]) -> Callable[..., T]:
    """Raise object storage failures (other than "not found") as StorageError."""

    @functools.wraps(fn)
    def call(self: "S3Backend", *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except obstore.exceptions.NotFoundError as exc:
            raise FileNotFoundError(str(exc).splitlines()[0]) from exc
        except obstore.exceptions.BaseError as exc:
            raise StorageError(explain(exc, self.location)) from exc
        except BaseException as exc:
            # The client's Rust core reports some bad settings by panicking.
            if type(exc).__name__ != "PanicException":
                raise
            raise StorageError(f"{self.location}: the S3 client failed ({str(exc).strip()}); "
                               "check AWS_ENDPOINT_URL and the other AWS_* settings") from None

    return call


_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://BUCKET/PREFIX``; refuses anything else with the fix."""
    rest = url.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise InvalidInputError(f"{url}: no bucket; use s3://BUCKET/PREFIX")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise InvalidInputError(
            f"{url}: {bucket!r} is not a bucket name (3-63 lowercase letters, digits, '.' "
            "and '-'); use s3://BUCKET/PREFIX, with the endpoint in AWS_ENDPOINT_URL"
        )
    parts = prefix.split("/") if prefix else []
    bad = [p for p in parts if p in ("", ".", "..") or any(c in p for c in "?#\\\0")]
    if bad:
        raise InvalidInputError(
            f"{url}: the prefix may not have empty, '.' or '..' parts, or '?', '#', "
            "backslash or NUL; use s3://BUCKET/PREFIX"
        )
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if endpoint and not _good_endpoint(endpoint):
        raise InvalidInputError(
            f"AWS_ENDPOINT_URL={endpoint!r} is not an http:// or https:// URL of a host and "
            "optional port; for example https://s3.example.com or http://127.0.0.1:9000"
        )
    return bucket, prefix


def _good_endpoint(endpoint: str) -> bool:
    from urllib.parse import urlsplit

    if not re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", endpoint):
        return False
    try:
        parts = urlsplit(endpoint)
        port = parts.port  # raises on a port that is not a number from 0 to 65535
    except ValueError:
        return False
    return bool(parts.hostname) and (port is None or port > 0)


def _is_precondition_failure(exc: Exception) -> bool:
    return isinstance(exc, (AlreadyExistsError, PreconditionError)) or "412" in str(exc)


class _MemoryTemp(TempFile):
    """A small blob already in memory: uploaded straight from its bytes."""

    def __init__(self, backend: Backend, data: bytes) -> None:
        super().__init__(backend, Path(os.devnull), None)
        self.data = data

    def discard(self) -> None:
        self.data = b""


class S3Backend(Backend):
    """A store under ``s3://bucket/prefix``."""

    def __init__(self, url: URLPath) -> None:
        self.location = str(url)
        bucket, prefix = check_url(self.location)
        config, allow_http = store_config()
        retries = os.environ.get("ARTSTORE_S3_RETRIES", "5")
        if not retries.isdigit():
            raise InvalidInputError(f"ARTSTORE_S3_RETRIES={retries!r} is not a whole number")
        try:
            self._store = S3Store(
                bucket, prefix=prefix or None, config=config,  # type: ignore[arg-type]
                client_options={"allow_http": allow_http, "timeout": "120s"},
                retry_config={"max_retries": int(retries),
                              "retry_timeout": timedelta(seconds=120)},
            )
        except BaseException as exc:  # noqa: BLE001 - the client panics on some settings
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidInputError(
                f"cannot open {self.location}: {first}; check the AWS_* settings"
            ) from None
        self._spool: Path | None = None

    def prepare_create(self, shared: bool) -> None:
        if shared:
            raise InvalidInputError(
                f"--shared is for stores on a filesystem (it sets Unix group permissions); "
                f"who may use {self.location} is up to the bucket's access policy"
            )
        others = [n for n in self.list("") if n not in ("tmp", "locks", "artstore.json")]
        if others:
            raise InvalidInputError(
                f"cannot create a store at {self.location}: the prefix holds other objects "
                f"({', '.join(sorted(others)[:3])}) and is not an artstore store; choose an "
                "empty or new prefix"
            )

    # -- the interface -----------------------------------------------------------------

    @_translated
    def read(self, key: str) -> bytes:
        return bytes(obstore.get(self._store, key).bytes())

    def read_chunks(self, key: str) -> Iterator[bytes]:
        try:
            for chunk in obstore.get(self._store, key).stream(min_chunk_size=CHUNK):
                yield bytes(chunk)
        except obstore.exceptions.BaseError as exc:
            raise StorageError(explain(exc, self.location)) from exc

    @_translated
    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(obstore.head(self._store, key))
        except FileNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def size(self, key: str) -> int | None:
        meta = self.head(key)
        return None if meta is None else int(meta["size"])

    def stat(self, key: str) -> tuple[int, float] | None:
        meta = self.head(key)
        if meta is None:
            return None
        return int(meta["size"]), meta["last_modified"].timestamp()

    def create(self, key: str, data: bytes) -> bool:
        return self.create_tagged(key, data) is not None

    @_translated
    def create_tagged(self, key: str, data: bytes) -> str | None:
        """Create ``key`` if absent; return its new entity tag, or None if it existed."""
        try:
            result = obstore.put(self._store, key, data, mode="create")
        except Exception as exc:  # noqa: BLE001 - obstore raises several kinds for a 412
            if not _is_precondition_failure(exc):
                raise
            # A retried PUT whose first reply was lost answers 412 although it worked:
            # the bytes tell (every created record carries a unique nonce or time).
            with contextlib.suppress(FileNotFoundError):
                got = obstore.get(self._store, key)
                if bytes(got.bytes()) == data:
                    return str(got.meta["e_tag"])
            return None
        return str(result["e_tag"])

    @_translated
    def replace_if(self, key: str, data: bytes, e_tag: str) -> str | None:
        """Overwrite ``key`` only if its entity tag is still ``e_tag``; return the new one."""
        try:
            result = obstore.put(self._store, key, data, mode={"e_tag": e_tag})
        except Exception as exc:  # noqa: BLE001
            if _is_precondition_failure(exc) or isinstance(exc, FileNotFoundError):
                return None
            raise
        return str(result["e_tag"])

    @_translated
    def publish(self, key: str, data: bytes, readonly: bool = True) -> None:
        obstore.put(self._store, key, data)

    @_translated
    def list(self, prefix: str) -> list[str]:
        prefix = prefix.strip("/")
        listing = obstore.list_with_delimiter(self._store, prefix or None)
        names = {p.rstrip("/").rsplit("/", 1)[-1] for p in listing["common_prefixes"]}
        for o in listing["objects"]:
            # Some servers list a folder marker (the prefix itself, or "NAME/") as an
            # object once everything under it is deleted: that is no entry.
            path = o["path"]
            if path.endswith("/") or path.strip("/") == prefix:
                continue
            names.add(path.rsplit("/", 1)[-1])
        return sorted(names)

    @_translated
    def blob_sizes(self) -> dict[str, int]:
        """Every blob's digest and size, by listing (a thousand per request)."""
        sizes = {}
        for batch in obstore.list(self._store, "blobs/", chunk_size=1000):
            for meta in batch:
                parts = meta["path"].split("/")
                if len(parts) == 3:
                    sizes[parts[1] + parts[2]] = int(meta["size"])
        return sizes

    @_translated
    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            obstore.delete(self._store, key)

    def _lease(self, name: str) -> "ObjectLease":
        return ObjectLease(self, f"locks/{name}", LEASE_SECONDS)

    def temp(self) -> TempFile:
        # Bytes are spooled to local disk while hashed, then uploaded under their name:
        # what is uploaded is exactly what was hashed, even if the source changes.
        fd, name = tempfile.mkstemp(prefix=f"upload.{HOST_TAG}.{os.getpid()}.", suffix=".tmp",
                                    dir=self._spool_dir())
        return TempFile(self, Path(name), os.fdopen(fd, "w+b"))

    def temp_with(self, data: bytes) -> TempFile:
        self._spool_dir()  # clears spools of killed puts, even when this put spools none
        return _MemoryTemp(self, data)

    def _spool_dir(self) -> Path:
        if self._spool is None:
            self._spool = spool_dir()
        return self._spool

    def sync(self) -> None:
        """Nothing to do: an object exists only once its PUT has returned."""

    @_translated
    def publish_temp(self, temp: TempFile, key: str) -> bool:
        if isinstance(temp, _MemoryTemp):
            obstore.put(self._store, key, temp.data)
            return True
        temp.close()
        try:
            obstore.put(self._store, key, temp.path, chunk_size=8 * CHUNK)
        finally:
            temp.discard()
        return True

    def publish_many(self, items: Iterable[tuple[TempFile, str]]) -> None:
        with ThreadPoolExecutor(UPLOADS) as pool:
            for done in [pool.submit(self.publish_temp, t, k) for t, k in items]:
                done.result()

    @_translated
    def upload_file(self, key: str, chunks: Iterable[bytes]) -> str:
        """Upload ``chunks`` as ``key``; return the MD5 hex digest of what was sent."""
        md5 = hashlib.md5(usedforsecurity=False)

        def counted() -> Iterator[bytes]:
            for chunk in chunks:
                md5.update(chunk)
                yield chunk

        result = obstore.put(self._store, key, counted(), chunk_size=8 * CHUNK)
        tag = str(result.get("e_tag") or "").strip('"')
        # A single-part upload's entity tag is the MD5 of the bytes the server kept.
        if len(tag) == 32 and "-" not in tag and tag != md5.hexdigest():
            raise OSError(f"{self.location}/{key}: the server kept other bytes than were sent")
        return md5.hexdigest()

    def touch(self, key: str) -> bool:
        # Objects cannot be given a new modification time in place; gc on object storage
        # does not delete blobs (see gc), so a reused blob needs no refresh.
        return True

    @_translated
    def rename(self, key: str, new_key: str) -> None:
        obstore.copy(self._store, key, new_key)
        obstore.delete(self._store, key)


def spool_dir() -> Path:
    """Where uploads are spooled: ``spool/`` of the cache directory, cleared of files left
    by processes of this host that are no longer running (killed mid-put, say)."""
    from ._statcache import default_cache_dir

    spool = default_cache_dir() / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(spool):
        # Named upload.HOST.PID.*, as partial downloads in the cache are .DIGEST.HOST.PID.*
        if entry.name.startswith("upload.") and _dead_here(entry.name.removeprefix("upload.")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    return spool


class ObjectLease:
    """A lock held by a marker object, taken with create-if-absent and kept by If-Match.

    The holder rewrites its marker every quarter lease (a new entity tag each time). A
    waiter takes the marker over with If-Match on the tag it saw when the marker has not
    changed for a whole lease by the waiter's own clock, or at once when the marker names
    a dead process of the waiter's own host. Only one waiter's If-Match can succeed.
    """

    def __init__(self, backend: S3Backend, key: str, lease: float) -> None:
        self.backend = backend
        self.key = key
        self.lease = lease
        self._nonce = ""
        self._tag: str | None = None
        self._beats = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _claim(self) -> bytes:
        pid = os.getpid()
        self._beats += 1
        return json.dumps({"host": HOST_ID, "pid": pid, "start": _start_time(pid),
                           "nonce": self._nonce, "beat": self._beats,
                           "time": time.time()}).encode()

    def _owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(self.backend.read(self.key))
        except (FileNotFoundError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def _dead_here(self) -> bool:
        owner = self._owner()
        if owner is None or owner.get("host") != HOST_ID:
            return False
        pid = owner.get("pid")
        return not (isinstance(pid, int) and _alive(pid, owner.get("start")))

    def acquire(self, timeout: float) -> None:
        self._nonce = secrets.token_hex(8)
        deadline = time.monotonic() + timeout
        warn_at = time.monotonic() + WARN_AFTER
        seen: tuple[str, float] | None = None  # (tag, when we first saw it)
        delay = 0.01
        while True:
            self._tag = self.backend.create_tagged(self.key, self._claim())
            if self._tag is not None:
                break
            meta = self.backend.head(self.key)
            if meta is None:
                continue  # released meanwhile
            tag = str(meta["e_tag"])
            if seen is None or seen[0] != tag:
                seen = (tag, time.monotonic())
            if time.monotonic() - seen[1] > self.lease or self._dead_here():
                self._tag = self.backend.replace_if(self.key, self._claim(), tag)
                if self._tag is not None:
                    log.warning("took over lock %s/%s from a holder that is gone",
                                self.backend.location, self.key)
                    break
                continue
            now = time.monotonic()
            if now >= deadline:
                raise LockTimeout(self.key)
            if warn_at and now >= warn_at:
                warn_at = 0.0
                owner = self._owner() or {}
                log.warning("waiting for lock %s/%s, held by pid %s on %s; it is taken over "
                            "if that holder stops refreshing it for %g s", self.backend.location,
                            self.key, owner.get("pid"), owner.get("host"), self.lease)
            time.sleep(min(delay, max(0.0, deadline - now)))
            delay = min(delay * 1.5, 0.5)
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                        name=f"artstore-lease-{self.key}")
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease / 4):
            assert self._tag is not None
            try:
                tag = self.backend.replace_if(self.key, self._claim(), self._tag)
            except Exception as exc:  # noqa: BLE001 - a refresh is retried next beat
                log.warning("could not refresh lock %s: %s", self.key, exc)
                continue
            if tag is None:
                log.warning("lock %s/%s was taken over while held", self.backend.location,
                            self.key)
                return
            self._tag = tag

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        meta = self.backend.head(self.key)
        if meta is not None and str(meta["e_tag"]) == self._tag:
            self.backend.delete(self.key)
