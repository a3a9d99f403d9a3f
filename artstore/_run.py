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
from ._store import Store, run_summary
from .errors import ArtifactStateError


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
