"""Original uploads, kept content-addressed: ``uploads_dir/<sha256 of the raw bytes>``.

The upload is copied in chunks (never held in memory) to a temporary file in the same
directory while it is hashed; the import reads that copy; on success it is renamed to its
hash (or dropped when the same bytes are already kept), on failure it is deleted. The name
comes from the hash only, never from the user's file name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredUpload:
    path: Path
    sha256: str
    size: int


@contextmanager
def stored_upload(source: BinaryIO, uploads_dir: Path) -> Iterator[StoredUpload]:
    uploads_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=uploads_dir, prefix=".upload-", suffix=".part")
    path = Path(name)
    try:
        digest, size = _copy(source, fd)
        yield StoredUpload(path, digest, size)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    target = uploads_dir / digest
    if target.exists():
        path.unlink(missing_ok=True)
    else:
        os.replace(path, target)


def _copy(source: BinaryIO, fd: int) -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(COPY_CHUNK):
            sha.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return sha.hexdigest(), size
