"""Import an uploaded file as a dataset: all rows valid, or nothing stored."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy.orm import Session

from app.data.errors import ImportRefused, RowError
from app.data.layouts import CONVERTERS, detect_layout
from app.data.reading import Record, iter_records
from app.models import Dataset, DatasetRow, User

SUPPORTED_SUFFIXES = (".json", ".jsonl")
MAX_LISTED_ERRORS = 100


def import_dataset(
    session: Session,
    owner: User,
    *,
    filename: str,
    raw: bytes,
    name: str | None = None,
    kind: str = "sft",
    uploads_dir: Path,
) -> Dataset:
    if kind != "sft":
        raise ImportRefused(f"dataset kind '{kind}' is not supported yet (supported: sft)")
    if not filename.lower().endswith(SUPPORTED_SUFFIXES):
        raise ImportRefused(f"unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    layout, rows = _convert_all(raw, filename)
    digest = hashlib.sha256(raw).hexdigest()
    _keep_original(uploads_dir, digest, raw)
    dataset = Dataset(
        owner_id=owner.id,
        name=(name or Path(filename).stem)[:200],
        kind=kind,
        format=layout,
        num_rows=len(rows),
        source_filename=Path(filename).name[:255],
        sha256=digest,
    )
    session.add(dataset)
    session.flush()
    session.bulk_insert_mappings(  # type: ignore[arg-type]
        DatasetRow, [{"dataset_id": dataset.id, "index": i, "data": r} for i, r in enumerate(rows)]
    )
    return dataset


def _convert_all(raw: bytes, filename: str) -> tuple[str, list[dict]]:
    errors: list[RowError] = []
    rows: list[dict] = []
    layout: str | None = None
    try:
        for item in iter_records(raw, filename):
            if isinstance(item, RowError):
                errors.append(item)
                continue
            layout = layout or detect_layout(item.value)
            if layout is None:
                errors.append(RowError(item.line, "unrecognised record layout"))
                continue
            row = _convert(item, layout)
            if isinstance(row, RowError):
                errors.append(row)
            else:
                rows.append(row)
    except RowError as exc:
        errors.append(exc)
    if errors:
        raise ImportRefused(
            f"{len(errors)} invalid record(s); nothing was stored", errors[:MAX_LISTED_ERRORS]
        )
    if not rows:
        raise ImportRefused("the file holds no records")
    return layout or "unknown", rows


def _convert(item: Record, layout: str) -> dict | RowError:
    if not isinstance(item.value, dict):
        return RowError(item.line, "record is not a JSON object")
    try:
        return {"messages": CONVERTERS[layout](item.value)}
    except (ValueError, KeyError, TypeError) as exc:
        return RowError(item.line, str(exc))


def _keep_original(uploads_dir: Path, digest: str, raw: bytes) -> None:
    uploads_dir.mkdir(parents=True, exist_ok=True)
    target = uploads_dir / digest
    if not target.exists():
        tmp = target.with_suffix(".part")
        tmp.write_bytes(raw)
        tmp.replace(target)
