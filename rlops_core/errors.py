"""The errors of the storage layer, by what a caller should do about them.

``transient`` says whether trying again later may help (an outage, a timeout, a permission that an
operator can fix) or whether the object itself is unusable (missing, unsafe, too large) until it changes.
"""

from __future__ import annotations


class StorageError(Exception):
    """Storage could not be reached, or an object is missing or unreadable."""

    transient = True


class StorageURIError(StorageError, ValueError):
    """A storage URI is malformed."""

    transient = False


class ObjectNotFound(StorageError):
    """The named object does not exist."""

    transient = False


class AccessDenied(StorageError):
    """The store refused access (HTTP 403, or a local permission error): credentials or policy."""


class StorageTimeout(StorageError):
    """A read did not finish within its total deadline (a slow or trickling server)."""


class UnsafeKeyError(StorageURIError):
    """An object key or path segment that could escape its directory, or that no checkpoint uses
    (also raised when joining such a part onto a URI)."""

    transient = False


class LimitExceeded(StorageError):
    """An object is larger than the bound for what is being read (pointer, manifest, file).

    ``etag`` is the object's version token when it is known, so a reader can remember the refusal.
    """

    transient = False

    def __init__(self, message: str, etag: str = "") -> None:
        super().__init__(message)
        self.etag = etag
