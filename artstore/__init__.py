"""artstore: a local-first, content-addressed store for versioned artifacts.

The API follows Weights & Biases Artifacts::

    import artstore

    with artstore.init(project="demo") as run:
        art = artstore.Artifact("mnist", type="dataset")
        art.add_dir("data/")
        run.log_artifact(art, aliases=["raw"])

    artstore.Store().artifact("mnist:latest").download("out/")
"""

from ._artifact import Artifact
from ._format import Entry
from ._run import Run, init
from ._store import Store, default_store_path
from .errors import (
    ArtifactNotFoundError,
    ArtifactStateError,
    ArtstoreError,
    ConflictError,
    CorruptDataError,
    InvalidInputError,
    InvalidNameError,
    LockTimeoutError,
    NotFoundError,
    ObjectNotFoundError,
    SealedError,
    StorageError,
    StoreFullError,
    StoreNotFoundError,
    TypeMismatchError,
    UnknownFormatError,
    VerificationError,
    VersionNotFoundError,
)

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "ArtifactNotFoundError",
    "ArtifactStateError",
    "ArtstoreError",
    "ConflictError",
    "CorruptDataError",
    "Entry",
    "InvalidInputError",
    "InvalidNameError",
    "LockTimeoutError",
    "NotFoundError",
    "ObjectNotFoundError",
    "Run",
    "SealedError",
    "StorageError",
    "Store",
    "StoreFullError",
    "StoreNotFoundError",
    "TypeMismatchError",
    "UnknownFormatError",
    "VerificationError",
    "VersionNotFoundError",
    "__version__",
    "default_store_path",
    "init",
]
