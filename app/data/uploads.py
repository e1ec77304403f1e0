"""Original uploads, kept content-addressed: ``uploads_dir/<sha256 of the raw bytes>``.

The upload is copied in chunks (never held in memory) to a temporary file in the same
directory while it is hashed; the import reads that copy; on success it is renamed to its
hash (or dropped when the same bytes are already kept), on failure it is deleted. The name
comes from the hash only, never from the user's file name.

``UploadLimits`` bound what an upload may make the studio read and store (settings
``max_inflated_bytes``, ``max_inflate_ratio``, ``inflate_ratio_min_bytes``, ``max_upload_rows``,
``max_row_bytes``): each is checked as the file is read, so a decompression bomb is refused
as soon as it crosses one, not after it has been read.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from app.data.errors import ImportRefused, RowError

if TYPE_CHECKING:
    from app.settings import Settings

COPY_CHUNK = 1024 * 1024
MIB = 1024 * 1024
GIB = 1024 * MIB


@dataclass(frozen=True)
class UploadLimits:
    """How much an upload may inflate to, how many records it may hold, how large one may be.

    The defaults are the settings' defaults.
    """

    max_inflated_bytes: int = 4 * GIB
    max_inflate_ratio: float = 200.0  # 0: no ratio limit
    inflate_ratio_min_bytes: int = 64 * MIB
    max_rows: int = 5_000_000
    max_row_bytes: int = 16 * MIB

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            max_inflated_bytes=settings.max_inflated_bytes,
            max_inflate_ratio=settings.max_inflate_ratio,
            inflate_ratio_min_bytes=settings.inflate_ratio_min_bytes,
            max_rows=settings.max_upload_rows,
            max_row_bytes=settings.max_row_bytes,
        )

    @classmethod
    def configured(cls) -> UploadLimits:
        from app.settings import get_settings  # read at import time, not when this is imported

        return cls.from_settings(get_settings())


def size_text(size: int) -> str:
    """A limit in words: ``4 GiB``, ``1.5 MiB``, ``4,096 bytes``."""
    if size >= GIB:
        return f"{size / GIB:.3g} GiB"
    if size >= MIB:
        return f"{size / MIB:.3g} MiB"
    return f"{size:,} bytes"


def too_many_records(line: int, max_rows: int) -> ImportRefused:
    """The refusal for the first record past ``max_rows`` (it starts on ``line``)."""
    return ImportRefused(
        f"the file holds more than {max_rows:,} records, the limit for one upload "
        "(FTSTUDIO_MAX_UPLOAD_ROWS); nothing was stored",
        [RowError(line, f"record {max_rows + 1:,}: more than {max_rows:,} records")],
    )


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
