"""Import an uploaded file as a dataset, streaming: rows are validated and inserted in batches.

Rows are committed batch by batch into a dataset hidden until the import ends
(``app.data.staging``): no import holds the database for its length. By default a file with
any invalid record is refused and nothing is stored (what was written is deleted); with
``skip_invalid`` the good rows are kept and the bad ones counted. Memory stays bounded by one
batch of rows plus one decoded chunk of the file, whatever its size; errors keep the first
100 and count the rest. ``UploadLimits`` (from the settings unless given) bound the content
read, the records and the size of one row: a file crossing one is refused there and then.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from app.data.canonical import canonical_json
from app.data.detection import Plan, check_choices, make_plan
from app.data.errors import ImportRefused, Problem, RowError
from app.data.mapping import Mapping, parse_mapping
from app.data.reading import FileInfo, file_type, is_gzip, iter_records
from app.data.records import Record
from app.data.rows import RowWriter
from app.data.staging import StagedDataset, remove_abandoned_imports
from app.data.uploads import UploadLimits, size_text, stored_upload, too_many_records
from app.models import Dataset, User

MAX_LISTED_ERRORS = 100


@dataclass(frozen=True)
class ImportOptions:
    name: str | None = None
    kind: str | None = None  # None: detected from the layout
    format: str | None = None  # a layout name; None: detected from the first record
    mapping: dict[str, Any] | None = None  # plain column mapping or a dataset_info.json entry
    encoding: str | None = None  # None: detected
    skip_invalid: bool = False


@dataclass
class ErrorLog:
    count: int = 0
    listed: list[RowError] = field(default_factory=list)

    def add(self, error: RowError) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED_ERRORS:
            self.listed.append(error)


@dataclass
class ImportResult:
    dataset: Dataset
    skipped: int
    skipped_errors: list[RowError]


def import_dataset(
    session: Session,
    owner: User,
    *,
    filename: str,
    source: BinaryIO | bytes,
    uploads_dir: Path,
    options: ImportOptions | None = None,
    limits: UploadLimits | None = None,
) -> ImportResult:
    """Store the file's rows as a new dataset, committed; raises ImportRefused.

    The session is committed batch by batch (and rolled back and cleaned up on failure): give
    it nothing else pending. ``limits``: None reads them from the settings.
    """
    options = options or ImportOptions()
    limits = limits or UploadLimits.configured()
    check_choices(options.kind, options.format)
    mapping = parse_mapping(options.mapping, options.kind)
    info = FileInfo(file_type(filename), compressed=False)
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    if stream.seekable():
        stream.seek(0)
    with stored_upload(stream, uploads_dir) as upload:
        info.compressed = is_gzip(upload.path)
        remove_abandoned_imports(session)
        staged = StagedDataset.start(session, _new_dataset(owner, filename, options, upload.sha256))
        try:
            writer = RowWriter(session, staged.dataset_id, after_flush=staged.commit_batch)
            with closing(iter_records(upload.path, info, options.encoding, limits)) as records:
                plan, errors = _convert_all(records, options, mapping, writer, limits, staged)
            _finish(staged.dataset, plan, info, writer, errors, options)
            staged.publish()
        except BaseException:
            staged.discard()
            raise
    return ImportResult(staged.dataset, errors.count, errors.listed)


def _new_dataset(owner: User, filename: str, options: ImportOptions, sha256: str) -> Dataset:
    base = Path(filename).name
    for suffix in (".gz", ".gzip"):
        base = base.removesuffix(suffix)
    dataset = Dataset(
        owner_id=owner.id,
        name=(options.name or Path(base).stem or "dataset")[:200],
        kind=options.kind or "sft",
        format="unknown",
        num_rows=0,
        source_filename=Path(filename).name[:255],
        sha256=sha256,
        mapping=options.mapping,
    )
    return dataset


def _convert_all(
    records: Iterable[Record | RowError],
    options: ImportOptions,
    mapping: Mapping | None,
    writer: RowWriter,
    limits: UploadLimits,
    staged: StagedDataset,
) -> tuple[Plan | None, ErrorLog]:
    errors = ErrorLog()
    plan: Plan | None = None
    for count, item in enumerate(records, 1):
        staged.keep_alive()
        if count > limits.max_rows:
            raise too_many_records(item.line, limits.max_rows)
        if isinstance(item, RowError):
            errors.add(item)
            continue
        if not isinstance(item.value, dict):
            errors.add(RowError(item.line, "record is not a JSON object"))
            continue
        if plan is None:
            plan = make_plan(item.value, item.line, options.kind, options.format, mapping)
        try:
            text = _row_text(plan, item.value, limits.max_row_bytes)
        except Problem as problem:
            errors.add(plan.row_error(item.line, problem))
            continue
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            errors.add(RowError(item.line, f"malformed record ({exc})"))
            continue
        except RecursionError:
            errors.add(RowError(item.line, "malformed record (nested too deeply)"))
            continue
        if errors.count == 0 or options.skip_invalid:
            writer.add_json(text)
    writer.flush()
    return plan, errors


def _row_text(plan: Plan, record: dict[str, Any], max_bytes: int) -> str:
    """The record's row as its canonical JSON, checked to be storable; raises Problem."""
    text = plan.fast_json(record)
    if text is None:
        text = canonical_json(plan.convert(record))
    _check_storable(text, max_bytes)
    return text


def _check_storable(text: str, max_bytes: int) -> None:
    """UTF-8 encodable (the standard library's JSON decoder lets ``"\\ud800"`` through as a
    lone surrogate, which no encoding stores) and within the row size limit."""
    if text.isascii():  # O(1): CPython keeps the flag
        size = len(text)
    else:
        try:
            size = len(text.encode())
        except UnicodeEncodeError as exc:
            code = ord(text[exc.start])
            raise Problem(
                f"the text holds a lone surrogate (\\u{code:04x}), which is not valid Unicode"
            ) from None
    if size > max_bytes:
        raise Problem(
            f"the row is {size:,} bytes, over the limit of {size_text(max_bytes)} for one row "
            "(FTSTUDIO_MAX_ROW_BYTES)"
        )


def _finish(
    dataset: Dataset,
    plan: Plan | None,
    info: FileInfo,
    writer: RowWriter,
    errors: ErrorLog,
    options: ImportOptions,
) -> None:
    if errors.count and not options.skip_invalid:
        raise ImportRefused(f"{errors.count} invalid record(s); nothing was stored", errors.listed)
    if plan is None or writer.count == 0:
        detail = (
            "no valid records; nothing was stored" if errors.count else "the file holds no records"
        )
        raise ImportRefused(detail, errors.listed)
    dataset.kind = plan.kind
    dataset.format = plan.layout.name
    dataset.num_rows = writer.count
    dataset.content_hash = writer.hexdigest()
    dataset.detection = f"{plan.reason}; read as {info.describe()}"
    dataset.operation = {
        "op": "import",
        "skipped": errors.count,
        "skipped_errors": [e.as_dict() for e in errors.listed],
    }
