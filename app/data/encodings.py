"""Text encodings of an upload: sniffed from its first bytes, or declared by the user.

Accepted: UTF-8 (with or without a byte-order mark), UTF-16 with a byte-order mark (or
declared as utf-16-le / utf-16-be), and GB18030 (which covers GBK and GB2312), detected when
the sample is not UTF-8 but is valid GB18030. Anything else is refused with the byte offset
of the first byte that does not decode.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from app.data.errors import ImportRefused

SAMPLE_BYTES = 64 * 1024
CHUNK_BYTES = 1024 * 1024

# Python codec name -> the codec the studio decodes with.
DECLARABLE = {
    "utf-8": "utf-8",
    "utf-8-sig": "utf-8",
    "utf-16": "utf-16",
    "utf-16-le": "utf-16-le",
    "utf-16-be": "utf-16-be",
    "gb18030": "gb18030",
    "gbk": "gb18030",
    "gb2312": "gb18030",
}
LABELS = {
    "utf-8": "UTF-8",
    "utf-16": "UTF-16",
    "utf-16-le": "UTF-16 LE",
    "utf-16-be": "UTF-16 BE",
    "gb18030": "GB18030",
}
SUPPORTED = "UTF-8, UTF-16 with a byte-order mark, GB18030/GBK"


@dataclass(frozen=True)
class Encoding:
    codec: str
    reason: str

    @property
    def label(self) -> str:
        return LABELS[self.codec]


def choose_encoding(sample: bytes, declared: str | None) -> Encoding:
    """The encoding to decode the file with, and why."""
    if declared and declared.strip():
        return _declared(declared.strip())
    if sample.startswith(b"\xef\xbb\xbf"):
        return Encoding("utf-8", "UTF-8 with a byte-order mark")
    if sample.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        raise ImportRefused(f"UTF-32 text is not supported; save the file as UTF-8 ({SUPPORTED})")
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Encoding("utf-16", "UTF-16 with a byte-order mark")
    nul = sample.find(b"\x00")
    if nul >= 0:
        raise ImportRefused(
            f"NUL byte at offset {nul}: not a text file, or UTF-16 without a byte-order mark "
            "(declare encoding=utf-16-le or utf-16-be)"
        )
    utf8_error = _first_bad_byte(sample, "utf-8")
    if utf8_error is None:
        return Encoding("utf-8", "UTF-8")
    if _first_bad_byte(sample, "gb18030") is None:
        return Encoding("gb18030", f"GB18030 (not UTF-8: byte offset {utf8_error})")
    raise ImportRefused(
        f"unsupported text encoding: the byte at offset {utf8_error} is not UTF-8, and the file "
        f"is not GB18030 either; save it as UTF-8 or declare its encoding ({SUPPORTED})"
    )


def _declared(name: str) -> Encoding:
    try:
        codec = DECLARABLE.get(codecs.lookup(name).name)
    except LookupError:
        codec = None
    if codec is None:
        raise ImportRefused(f"encoding '{name[:40]}' is not supported (use one of: {SUPPORTED})")
    return Encoding(codec, f"{LABELS[codec]} (declared)")


def _first_bad_byte(sample: bytes, codec: str) -> int | None:
    decoder = codecs.getincrementaldecoder(codec)()
    try:
        decoder.decode(sample, final=False)  # the sample may end in the middle of a character
    except UnicodeDecodeError as exc:
        return exc.start
    return None


def iter_text(stream: BinaryIO, encoding: Encoding) -> Iterator[str]:
    """The decoded text in chunks, without a leading byte-order mark; bad bytes refuse the file."""
    decoder = codecs.getincrementaldecoder(encoding.codec)()
    offset = 0
    first = True
    while True:
        chunk = stream.read(CHUNK_BYTES)
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            position = max(offset - pending + exc.start, 0)
            raise ImportRefused(
                f"the file is not valid {encoding.label}: bad byte at offset {position} "
                f"(encoding: {encoding.reason}); if it is in another encoding, declare it "
                f"({SUPPORTED})"
            ) from exc
        offset += len(chunk)
        if first and text:
            text = text.removeprefix("\ufeff")
            first = False
        if text:
            yield text
        if not chunk:
            return
