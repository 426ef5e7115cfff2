"""The one mapping from an object key (relative to a checkpoint) to a local path, and how to show text.

Listing, hashing and downloading all use :func:`check_key`: a key is used exactly as stored, never
collapsed or stripped, so the object that is hashed is the object that is downloaded. A key that could
name something outside its directory (empty, ``.`` or ``..`` segments, a leading ``/``, backslashes,
control or invisible characters) is refused, never repaired.
"""

from __future__ import annotations

import os
from pathlib import Path

from rlops_core.errors import UnsafeKeyError

MAX_KEY_CHARS = 1024  # S3's own limit for a whole key
MAX_SEGMENT_CHARS = 255  # the usual file-name limit of local filesystems
MESSAGE_CHARS = 200  # how much of an untrusted string an error message shows


def shown(text: str, limit: int = MESSAGE_CHARS) -> str:
    """``text`` quoted for a message: control and invisible characters escaped (``\\u200b``), truncated."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def is_plain(text: str) -> bool:
    """Whether ``text`` holds only visible characters and plain spaces (no tabs, newlines, ``\\u200b``)."""
    return text.isprintable()


def check_key(rel: str) -> str:
    """Return ``rel`` unchanged if it is a safe relative key, else raise UnsafeKeyError saying why."""
    if not isinstance(rel, str) or not rel:
        raise UnsafeKeyError("an object key is empty")
    if len(rel) > MAX_KEY_CHARS:
        raise UnsafeKeyError(f"object key {shown(rel)} is longer than {MAX_KEY_CHARS} characters")
    if not is_plain(rel):
        raise UnsafeKeyError(f"object key {shown(rel)} holds control characters or invisible characters")
    if "\\" in rel:
        raise UnsafeKeyError(f"object key {shown(rel)} holds a backslash")
    if rel.startswith("/"):
        raise UnsafeKeyError(f"object key {shown(rel)} is absolute (it starts with '/' or has '//')")
    for segment in rel.split("/"):
        if segment == "":
            raise UnsafeKeyError(f"object key {shown(rel)} has an empty segment ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise UnsafeKeyError(f"object key {shown(rel)} has a {segment!r} segment")
        if len(segment) > MAX_SEGMENT_CHARS:
            raise UnsafeKeyError(f"object key {shown(rel)} has a segment over {MAX_SEGMENT_CHARS} characters")
    return rel


def local_target(dest: Path, rel: str) -> Path:
    """The path for key ``rel`` below the existing folder ``dest``, checked before anything is written.

    The key must be safe, no existing component below ``dest`` may be a symlink, and the resolved path
    must stay inside the resolved ``dest``.
    """
    parts = check_key(rel).split("/")
    root = Path(os.path.realpath(dest))
    current = root
    for segment in parts:
        current = current / segment
        if current.is_symlink():
            raise UnsafeKeyError(f"{shown(rel)} would be written through the symlink {current}")
    resolved = Path(os.path.realpath(current))
    if not resolved.is_relative_to(root) or resolved == root:
        raise UnsafeKeyError(f"{shown(rel)} resolves to {resolved}, outside {root}")
    return current
