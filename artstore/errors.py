"""Errors raised by artstore.

Every error derives from :class:`ArtstoreError`, so ``except ArtstoreError`` catches all
of them. Leaf errors also derive from the builtin they resemble, so code written against
the builtins keeps working::

    ArtstoreError
    ├── NotFoundError (KeyError)
    │   ├── ArtifactNotFoundError
    │   ├── VersionNotFoundError
    │   ├── ObjectNotFoundError
    │   └── StoreNotFoundError
    ├── InvalidNameError (ValueError)
    ├── InvalidInputError (ValueError)
    ├── ConflictError
    │   ├── TypeMismatchError
    │   └── SealedError
    ├── CorruptDataError
    │   └── UnknownFormatError
    ├── ArtifactStateError
    ├── VerificationError (ValueError)
    ├── StoreFullError (OSError)
    ├── StorageError (OSError)
    └── LockTimeoutError (TimeoutError)
"""

from __future__ import annotations


class ArtstoreError(Exception):
    """Base class of every error artstore raises."""


class NotFoundError(ArtstoreError, KeyError):
    """Something named does not exist."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a message reads better bare.
        return str(self.args[0]) if self.args else ""


class ArtifactNotFoundError(NotFoundError):
    """No artifact of that name exists in the store."""


class VersionNotFoundError(NotFoundError):
    """The artifact exists but has no such version or alias."""


class ObjectNotFoundError(NotFoundError):
    """A blob, manifest or commit that a record refers to is missing."""

    def __init__(self, message: str, digest: str | None = None) -> None:
        super().__init__(message)
        self.digest = digest


class StoreNotFoundError(NotFoundError):
    """No store exists at the given location."""


class InvalidNameError(ArtstoreError, ValueError):
    """An artifact name, type, alias, version or entry path is not allowed."""


class InvalidInputError(ArtstoreError, ValueError):
    """An argument or input file cannot be used as given."""


class ConflictError(ArtstoreError):
    """The request conflicts with what the store already holds."""

    def __init__(self, message: str, paths: list[str] | None = None) -> None:
        super().__init__(message)
        self.paths = paths or []


class TypeMismatchError(ConflictError):
    """An artifact name is logged with a type other than the one it already has."""


class SealedError(ConflictError):
    """A collaborative version was already finished."""


class CorruptDataError(ArtstoreError):
    """Stored bytes do not match their digest, or a record cannot be decoded."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class UnknownFormatError(CorruptDataError):
    """A file carries a format version this artstore does not know."""


class ArtifactStateError(ArtstoreError):
    """The operation does not fit the artifact's state (a draft, or already logged)."""


class VerificationError(ArtstoreError, ValueError):
    """A directory differs from the version it was checked against."""

    def __init__(self, message: str, differences: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.differences = differences


class LockTimeoutError(ArtstoreError, TimeoutError):
    """A lock could not be taken within the time allowed."""


class StoreFullError(ArtstoreError, OSError):
    """The filesystem holding the store ran out of space or quota."""


class StorageError(ArtstoreError, OSError):
    """Object storage refused or failed a request (unreachable, denied, no such bucket)."""
