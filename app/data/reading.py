"""Read records out of a stored upload, streaming: the file type, compression and encoding.

Types by file name (after an optional ``.gz``): ``.json`` (an array, or JSON Lines when it
starts with ``{``), ``.jsonl``/``.ndjson``, ``.csv``/``.tsv``, ``.parquet``, ``.txt`` (one
text record per non-blank line, as Hugging Face ``datasets`` reads text files). gzip is
recognised by its magic bytes whatever the name says.

Reading is bounded by ``UploadLimits``: the content read (inflated, for gzip) is counted as it
is read, and the file is refused (``UploadTooLarge``) the moment it passes a limit; a line
longer than the size limit of one record refuses the file at that line.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, cast

from app.data.encodings import SAMPLE_BYTES, Encoding, choose_encoding, iter_text
from app.data.errors import ImportRefused, RowError, UploadTooLarge
from app.data.jsonarray import iter_json_array
from app.data.records import Record, iter_jsonl, iter_lines, iter_text_lines
from app.data.tabular import iter_csv, iter_parquet
from app.data.uploads import UploadLimits, size_text

GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK = 1024 * 1024
FILE_TYPES = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".txt": "txt",
}
SUPPORTED_SUFFIXES = ", ".join(FILE_TYPES) + " (each optionally .gz)"


@dataclass
class FileInfo:
    """What reading found out about the file, for the detection reason."""

    file_type: str
    compressed: bool
    encoding: str = ""
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [self.file_type.upper() if self.file_type != "jsonl" else "JSON Lines"]
        if self.compressed:
            parts.append("gzip-compressed")
        if self.encoding:
            parts.append(self.encoding)
        return ", ".join(parts + self.notes)


def file_type(filename: str) -> str:
    name = Path(filename).name.lower()
    for suffix in (".gz", ".gzip"):
        name = name.removesuffix(suffix)
    kind = FILE_TYPES.get(Path(name).suffix)
    if kind is None:
        raise ImportRefused(f"unsupported file type; use one of {SUPPORTED_SUFFIXES}")
    return kind


def is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == GZIP_MAGIC


class LimitedReader:
    """The file's content (inflated, for gzip), refused once it passes the limits: its size,
    and for gzip its ratio to the compressed bytes read so far (a bomb inflates evenly, so
    the ratio shows at once; the first ``inflate_ratio_min_bytes`` pass whatever it is)."""

    def __init__(
        self, content: BinaryIO, raw: BinaryIO, compressed: bool, limits: UploadLimits
    ) -> None:
        self._content = content
        self._raw = raw
        self._compressed = compressed
        self._limits = limits
        self.position = 0

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:  # never all at once: the limits are checked per chunk
            return b"".join(iter(lambda: self.read(READ_CHUNK), b""))
        data = self._content.read(size)
        self.position += len(data)
        self._check()
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = self._content.seek(offset, whence)
        return self.position

    def tell(self) -> int:
        return self.position

    def _check(self) -> None:
        limits = self._limits
        if self.position > limits.max_inflated_bytes:
            what = "inflates to" if self._compressed else "is"
            raise UploadTooLarge(
                f"the file {what} more than {size_text(limits.max_inflated_bytes)}, the limit "
                "for an upload's content (FTSTUDIO_MAX_INFLATED_BYTES); nothing was stored"
            )
        ratio = limits.max_inflate_ratio
        if not (self._compressed and ratio and self.position > limits.inflate_ratio_min_bytes):
            return
        if self.position > ratio * max(self._raw.tell(), 1):
            raise UploadTooLarge(
                f"the gzip data inflates more than {ratio:g} times (past "
                f"{size_text(limits.inflate_ratio_min_bytes)}), the limit for an upload "
                "(FTSTUDIO_MAX_INFLATE_RATIO): refused as a likely decompression bomb; "
                "nothing was stored"
            )


@contextmanager
def open_binary(
    path: Path, compressed: bool, limits: UploadLimits | None = None
) -> Iterator[BinaryIO]:
    """The file's content, read within ``limits`` (default: the settings' defaults)."""
    limits = limits or UploadLimits()
    with path.open("rb") as raw:
        if compressed:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield cast(BinaryIO, LimitedReader(unzipped, raw, True, limits))
        else:
            yield cast(BinaryIO, LimitedReader(raw, raw, False, limits))


def iter_records(
    path: Path,
    info: FileInfo,
    declared_encoding: str | None = None,
    limits: UploadLimits | None = None,
) -> Iterator[Record | RowError]:
    """Records of the file in order; a record that cannot be parsed is a RowError."""
    limits = limits or UploadLimits()
    try:
        if info.file_type == "parquet":
            yield from _parquet(path, info, limits)
            return
        with open_binary(path, info.compressed, limits) as stream:
            sample = stream.read(SAMPLE_BYTES)
            encoding = choose_encoding(sample, declared_encoding)
            info.encoding = encoding.reason
            if info.file_type == "json" and _starts_with_object(sample, encoding):
                info.file_type = "jsonl"
                info.notes.append("one JSON object per line")
            stream.seek(0)
            yield from _text_records(info, iter_text(stream, encoding), limits.max_row_bytes)
    except (OSError, EOFError, zlib.error) as exc:
        what = "the gzip data is damaged" if info.compressed else "the file could not be read"
        raise ImportRefused(f"{what}: {exc}") from exc


def _starts_with_object(sample: bytes, encoding: Encoding) -> bool:
    """A .json file whose text starts with '{' holds JSON Lines (as LLaMA-Factory allows)."""
    text = sample.decode(encoding.codec, errors="ignore")
    return text.lstrip("\ufeff \t\r\n").startswith("{")


def _text_records(
    info: FileInfo, chunks: Iterator[str], max_line: int
) -> Iterator[Record | RowError]:
    if info.file_type == "json":
        yield from iter_json_array(chunks)
        return
    lines = _bounded_lines(iter_lines(chunks), max_line)
    if info.file_type == "jsonl":
        yield from iter_jsonl(lines)
    elif info.file_type in ("csv", "tsv"):
        yield from iter_csv(lines, delimiter="\t" if info.file_type == "tsv" else ",")
    else:
        yield from iter_text_lines(lines)


def _bounded_lines(lines: Iterable[tuple[int, str]], max_chars: int) -> Iterator[tuple[int, str]]:
    """The lines, refusing the file at the first one over ``max_chars`` (every character is at
    least one UTF-8 byte: a line over it is over the byte limit too)."""
    for number, line in lines:
        if len(line) > max_chars:
            limit = size_text(max_chars)
            raise ImportRefused(
                f"line {number} is larger than {limit}, the limit for one record "
                "(FTSTUDIO_MAX_ROW_BYTES); nothing was stored",
                [RowError(number, f"the line is larger than {limit}")],
            )
        yield number, line


def _parquet(path: Path, info: FileInfo, limits: UploadLimits) -> Iterator[Record]:
    if not info.compressed:
        yield from iter_parquet(path, limits)
        return
    # Parquet needs random access: unpack a gzip-compressed one to a temporary file first. The
    # limited stream stops the copy at the limit; leaving the block deletes the partial file.
    with tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=".unpacked-", suffix=".parquet"
    ) as unpacked:
        with open_binary(path, compressed=True, limits=limits) as stream:
            shutil.copyfileobj(stream, unpacked, READ_CHUNK)
        unpacked.flush()
        yield from iter_parquet(Path(unpacked.name), limits)
