"""Content-addressed blob stores: a blob's key is ``sha256/<hex of its bytes>``, so the same
bytes are stored once, a key never changes meaning, and a write is idempotent.

``LocalBlobStore`` is the embedded default (a directory; nothing to start). The registry adds
an S3-compatible store behind the same protocol."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

REF = re.compile(r"^sha256/[0-9a-f]{64}$")


def ref_of(data: bytes) -> str:
    return "sha256/" + hashlib.sha256(data).hexdigest()


def check_ref(ref: str) -> str:
    if not isinstance(ref, str) or not REF.match(ref):
        raise KeyError(f"not a blob key: {ref!r} (expected sha256/<64 hex>)")
    return ref


class BlobStore(Protocol):
    def put(self, data: bytes) -> str:
        """Store ``data``; returns its key (the same bytes always give the same key)."""

    def get(self, ref: str) -> bytes:
        """The bytes under ``ref``; KeyError if there are none."""

    def exists(self, ref: str) -> bool: ...


class LocalBlobStore:
    """Blobs as files ``<root>/<aa>/<hex>``; written to a temporary file, then renamed, so a
    reader never sees half a blob."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, ref: str) -> Path:
        digest = check_ref(ref).split("/", 1)[1]
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        ref = ref_of(data)
        path = self.path(ref)
        if path.exists():
            return ref
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ref

    def get(self, ref: str) -> bytes:
        try:
            data = self.path(ref).read_bytes()
        except FileNotFoundError:
            raise KeyError(f"no blob {ref}") from None
        if ref_of(data) != ref:  # a corrupted file must not pass as the blob
            raise KeyError(f"blob {ref} is corrupt on disk")
        return data

    def exists(self, ref: str) -> bool:
        return self.path(ref).exists()
