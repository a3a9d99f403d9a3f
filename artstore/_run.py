"""Runs: the process that logs and uses artifacts, recorded for lineage."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable
from typing import Any

from . import _format as fmt
from ._artifact import Artifact, target_log
from ._backend import HOST
from ._names import check_name
from ._store import Store, run_summary
from .errors import ArtifactStateError, InvalidInputError, InvalidNameError


class Run:
    """One job that logs and uses artifacts. Create it with :func:`artstore.init`."""

    def __init__(
        self,
        project: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        store: Store | str | os.PathLike[str] | None = None,
        id: str | None = None,  # noqa: A002
    ) -> None:
        if id is not None:
            try:
                check_name(id)
            except InvalidNameError:
                raise InvalidNameError(
                    f"invalid run id {id!r}: use 1-128 characters of letters, digits, "
                    "'_', '-' and '.', not starting with '.' or '-'"
                ) from None
        self.id = id or secrets.token_hex(8)
        self.project = project
        self.group = group
        self.job_type = job_type
        self.store = store if isinstance(store, Store) else Store(store)
        self._started = time.time()
        self._finished: float | None = None
        self._inputs: list[list[Any]] = []
        self._outputs: list[list[Any]] = []

    def __repr__(self) -> str:
        return f"<Run {self.id} project={self.project} group={self.group}>"

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def _summary(self) -> dict[str, Any]:
        return run_summary(self.id, self.project, self.group, self.job_type)

    def _record(self) -> None:
        self.store.write_run(
            {
                "kind": "run",
                "format": fmt.RECORD_FORMAT,
                "id": self.id,
                "project": self.project,
                "group": self.group,
                "job_type": self.job_type,
                "host": HOST,
                "pid": os.getpid(),
                "started": self._started,
                "finished": self._finished,
                "inputs": self._inputs,
                "outputs": self._outputs,
            }
        )

    @staticmethod
    def _link(artifact: Artifact) -> list[Any]:
        return [artifact.name, int(artifact.version[1:]), fmt.to_bin(artifact.id)]  # type: ignore[index,arg-type]

    def log_artifact(
        self, artifact: Artifact, aliases: Iterable[str] = (), progress: Any = None
    ) -> Artifact:
        """Log a draft as a new version (or, if its content equals the latest, reuse that).

        ``latest`` is always among the version's aliases; ``aliases`` adds others.
        """
        if isinstance(aliases, str):
            aliases = [aliases]
        if self._finished is not None:
            raise ArtifactStateError(f"run {self.id} is finished; start a new one")
        logged = target_log(self.store, artifact, aliases, self._summary(), progress)
        self._outputs.append(self._link(logged))
        self._record()
        return logged

    def _distributed_id(self, given: str | None, what: str) -> str:
        did = given if given is not None else self.group
        if did is None:
            raise InvalidInputError(
                f"cannot {what} artifact: the run has no group and no distributed_id was "
                "given; pass distributed_id=... or artstore.init(group=...)"
            )
        return did

    def upsert_artifact(
        self, artifact: Artifact, distributed_id: str | None = None, progress: Any = None
    ) -> Artifact:
        """Add the artifact's files to the pending version named by its name and ``distributed_id``.

        ``distributed_id`` defaults to the run's group. When this returns, the
        contribution is durable. The artifact object is frozen afterwards.
        """
        did = self._distributed_id(distributed_id, "upsert")
        self.store.staging.upsert(artifact, did, self._summary(), progress)
        artifact._frozen = f"upserted into distributed id {did!r}"
        return artifact

    def finish_artifact(
        self,
        artifact: Artifact,
        distributed_id: str | None = None,
        aliases: Iterable[str] = (),
        wait_for: int | None = None,
        timeout: float | None = None,
        on_conflict: str = "error",
        progress: Any = None,
    ) -> Artifact:
        """Seal the pending version: merge every contribution and the artifact's own files.

        Args:
            artifact: names the version; its own files (if any) join the merge.
            distributed_id: defaults to the run's group.
            aliases: aliases for the new version, besides ``latest``.
            wait_for: wait until this many contributions are staged first.
            timeout: seconds to wait for them before giving up (LockTimeoutError).
            on_conflict: ``error`` (default) refuses paths staged with different
                contents; ``newest`` or ``oldest`` lets that contribution win.
        """
        if isinstance(aliases, str):
            aliases = [aliases]
        did = self._distributed_id(distributed_id, "finish")
        refs, index = self.store.staging.finish(
            artifact,
            did,
            aliases=aliases,
            run=self._summary(),
            wait_for=wait_for,
            timeout=timeout,
            on_conflict=on_conflict,
            progress=progress,
        )
        artifact._bind(self.store, refs, index, self.store.read_commit(refs.versions[index][0]))
        self._outputs.append(self._link(artifact))
        self._record()
        return artifact

    def use_artifact(self, artifact: str | Artifact, type: str | None = None) -> Artifact:  # noqa: A002
        """Return the version ``NAME[:VERSION_OR_ALIAS]`` and record it as this run's input.

        A draft passed here is logged first.
        """
        if isinstance(artifact, Artifact):
            used = artifact if artifact.is_logged else self.log_artifact(artifact)
        else:
            used = self.store.artifact(artifact, type=type)
        self._inputs.append(self._link(used))
        self._record()
        return used

    def finish(self) -> None:
        """Mark the run finished and write its record."""
        if self._finished is None:
            self._finished = time.time()
            if self._inputs or self._outputs:
                self._record()


def init(
    project: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    store: Store | str | os.PathLike[str] | None = None,
    id: str | None = None,  # noqa: A002
) -> Run:
    """Start a run that logs to ``store`` (default ``$ARTSTORE_DIR`` or the user store)."""
    return Run(project=project, group=group, job_type=job_type, store=store, id=id)
