"""One dataset upload path for the API and the browser form."""

from __future__ import annotations

from fastapi import UploadFile
from sqlalchemy.orm import Session

from app.data.importer import ImportOptions, ImportResult, import_dataset
from app.data.mapping import mapping_from_json
from app.models import User
from app.settings import Settings


def import_upload(
    session: Session,
    user: User,
    settings: Settings,
    file: UploadFile,
    *,
    name: str | None,
    kind: str | None,
    format: str | None,
    skip_invalid: bool,
    encoding: str | None,
    mapping: str | None,
) -> ImportResult:
    """Stream ``file`` into a new dataset; raises ImportRefused (nothing stored) on bad input.

    Call it from a plain ``def`` route: the import reads the spooled upload (``file.file``)
    synchronously, which FastAPI then runs in a worker thread.
    """
    options = ImportOptions(
        name=name or None,
        kind=kind or None,
        format=format or None,
        mapping=mapping_from_json(mapping),
        encoding=encoding or None,
        skip_invalid=skip_invalid,
    )
    return import_dataset(
        session,
        user,
        filename=file.filename or "upload.json",
        source=file.file,
        uploads_dir=settings.uploads_dir,
        options=options,
    )
