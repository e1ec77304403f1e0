"""Read records out of a stored upload, streaming: the file type, compression and encoding.

Types by file name (after an optional ``.gz``): ``.json`` (an array, or JSON Lines when it
starts with ``{``), ``.jsonl``/``.ndjson``, ``.csv``/``.tsv``, ``.parquet``, ``.txt`` (one
text record per non-blank line, as Hugging Face ``datasets`` reads text files). gzip is
recognised by its magic bytes whatever the name says.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from app.data.encodings import SAMPLE_BYTES, Encoding, choose_encoding, iter_text
from app.data.errors import ImportRefused, RowError
from app.data.jsonarray import iter_json_array
from app.data.records import Record, iter_jsonl, iter_lines, iter_text_lines
from app.data.tabular import iter_csv, iter_parquet

GZIP_MAGIC = b"\x1f\x8b"
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


@contextmanager
def open_binary(path: Path, compressed: bool) -> Iterator[BinaryIO]:
    with path.open("rb") as raw:
        if compressed:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield raw


def iter_records(
    path: Path, info: FileInfo, declared_encoding: str | None = None
) -> Iterator[Record | RowError]:
    """Records of the file in order; a record that cannot be parsed is a RowError."""
    try:
        if info.file_type == "parquet":
            yield from _parquet(path, info)
            return
        with open_binary(path, info.compressed) as stream:
            sample = stream.read(SAMPLE_BYTES)
            encoding = choose_encoding(sample, declared_encoding)
            info.encoding = encoding.reason
            if info.file_type == "json" and _starts_with_object(sample, encoding):
                info.file_type = "jsonl"
                info.notes.append("one JSON object per line")
            stream.seek(0)
            yield from _text_records(info, iter_text(stream, encoding))
    except (OSError, EOFError, zlib.error) as exc:
        what = "the gzip data is damaged" if info.compressed else "the file could not be read"
        raise ImportRefused(f"{what}: {exc}") from exc


def _starts_with_object(sample: bytes, encoding: Encoding) -> bool:
    """A .json file whose text starts with '{' holds JSON Lines (as LLaMA-Factory allows)."""
    text = sample.decode(encoding.codec, errors="ignore")
    return text.lstrip("\ufeff \t\r\n").startswith("{")


def _text_records(info: FileInfo, chunks: Iterator[str]) -> Iterator[Record | RowError]:
    if info.file_type == "json":
        yield from iter_json_array(chunks)
    elif info.file_type == "jsonl":
        yield from iter_jsonl(iter_lines(chunks))
    elif info.file_type in ("csv", "tsv"):
        yield from iter_csv(iter_lines(chunks), delimiter="\t" if info.file_type == "tsv" else ",")
    else:
        yield from iter_text_lines(iter_lines(chunks))


def _parquet(path: Path, info: FileInfo) -> Iterator[Record]:
    if not info.compressed:
        yield from iter_parquet(path)
        return
    # Parquet needs random access: unpack a gzip-compressed one to a temporary file first.
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".parquet") as unpacked:
        with open_binary(path, compressed=True) as stream:
            shutil.copyfileobj(stream, unpacked, 1024 * 1024)
        unpacked.flush()
        yield from iter_parquet(Path(unpacked.name))
