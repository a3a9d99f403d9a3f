"""Validation of artifact names, types, aliases, version specs and entry paths.

The rules are those of FORMAT.md section 5. Every check raises InvalidNameError with a
message that names the bad value and says what is allowed.
"""

from __future__ import annotations

import re

from .errors import InvalidNameError

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
_TYPE_RE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_VERSION_RE = re.compile(r"v([0-9]+)", re.ASCII)
_ALLOWED = "letters, digits, '_', '-' and '.'"


def check_name(name: object, what: str = "artifact name") -> str:
    """Return ``name`` if it is a valid artifact name, else raise InvalidNameError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidNameError(
            f"invalid {what} {name!r}: use 1-128 characters of {_ALLOWED}, "
            "not starting with '.' or '-'"
        )
    return name


def check_type(type_: object) -> str:
    """Return ``type_`` if it is a valid artifact type, else raise InvalidNameError."""
    if not isinstance(type_, str) or not _TYPE_RE.fullmatch(type_):
        raise InvalidNameError(
            f"invalid artifact type {type_!r}: use 1-64 characters of {_ALLOWED}"
        )
    return type_


def check_alias(alias: object) -> str:
    """Return ``alias`` if it is a valid alias, else raise InvalidNameError."""
    if not isinstance(alias, str) or not _NAME_RE.fullmatch(alias):
        raise InvalidNameError(
            f"invalid alias {alias!r}: use 1-128 characters of {_ALLOWED}, "
            "not starting with '.' or '-'"
        )
    if _VERSION_RE.fullmatch(alias):
        raise InvalidNameError(
            f"invalid alias {alias!r}: 'v' followed by digits is a version number, "
            "choose another alias"
        )
    return alias


def parse_version(text: str) -> int | None:
    """Return N for a version string ``vN``, or None if ``text`` is not one."""
    match = _VERSION_RE.fullmatch(text)
    if not match:
        return None
    digits = match.group(1)
    # No store has a quintillion versions; such a number names none (and int() of a
    # few thousand digits would raise).
    return int(digits) if len(digits) <= 18 else 10**18


def parse_spec(spec: object, default: str = "latest") -> tuple[str, str]:
    """Split ``NAME[:VERSION_OR_ALIAS]`` into a checked name and a version or alias."""
    if not isinstance(spec, str):
        raise InvalidNameError(f"invalid artifact reference {spec!r}: expected 'NAME:VERSION'")
    name, sep, which = spec.partition(":")
    check_name(name)
    if not sep:
        return name, default
    if parse_version(which) is None:
        if not which:
            raise InvalidNameError(
                f"invalid artifact reference {spec!r}: nothing after ':', "
                "give a version (v0) or an alias (latest)"
            )
        check_alias(which)
    return name, which


def check_path(path: object) -> str:
    """Return ``path`` if it is a valid entry path, else raise InvalidNameError.

    A valid path is relative, uses '/' separators, and cannot leave the artifact.
    """
    if not isinstance(path, str) or not path:
        raise InvalidNameError(f"invalid entry path {path!r}: must be a non-empty string")
    if "\x00" in path:
        raise InvalidNameError(f"invalid entry path {path!r}: contains a NUL character")
    if "\\" in path:
        raise InvalidNameError(
            f"invalid entry path {path!r}: contains '\\'; use '/' to separate directories"
        )
    if path.startswith("/"):
        raise InvalidNameError(
            f"invalid entry path {path!r}: absolute; entry paths are relative to the artifact"
        )
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidNameError(
                f"invalid entry path {path!r}: empty, '.' or '..' component; "
                "entry paths cannot leave the artifact"
            )
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameError(f"invalid entry path {path!r}: not valid UTF-8") from None
    return path


def normalize_path(path: str) -> str:
    """Turn a user-given relative path into entry form, then check it.

    Leading './' and repeated or trailing '/' are folded; '..' is never resolved.
    """
    if isinstance(path, str) and not path.startswith("/"):
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if parts:
            path = "/".join(parts)
    return check_path(path)
