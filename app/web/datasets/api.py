"""REST routes for datasets (owner-scoped): upload, list, rows with search, statistics,
governance operations, versions and export."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.access import get_owned
from app.data.browse import page_rows
from app.data.errors import ImportRefused
from app.data.rows import row_bytes
from app.data.stats import StatsRequestError, dataset_stats
from app.data.versions import ancestors, children, ensure_content_hash, iter_rows
from app.db import get_sessionmaker
from app.models import Dataset
from app.queries import list_datasets
from app.serialize import dataset_json
from app.web.datasets.actions import (
    ContaminationIn,
    DedupIn,
    FilterIn,
    OperationError,
    SplitIn,
    run_contamination,
    run_dedup,
    run_filter,
    run_split,
    version_json,
)
from app.web.deps import CurrentUser, SessionDep, SettingsDep
from app.web.errors import import_refused, unprocessable
from app.web.params import Limit, ObjectId, Offset, OptionalRefQuery, TokenLength
from app.web.rendering import json_response
from app.web.uploads import import_upload

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


def _refused(exc: OperationError) -> JSONResponse:
    return unprocessable(str(exc))


@router.post("", status_code=201)
def post_dataset(
    file: UploadFile,
    session: SessionDep,
    settings: SettingsDep,
    user: CurrentUser,
    name: Annotated[str | None, Form()] = None,
    kind: Annotated[str | None, Form()] = None,
    format: Annotated[str | None, Form()] = None,
    skip_invalid: Annotated[bool, Form()] = False,
    encoding: Annotated[str | None, Form()] = None,
    mapping: Annotated[str | None, Form()] = None,
) -> Any:
    """Import a file (JSONL, JSON, CSV, Parquet...); a 422 lists the bad lines and stores
    nothing (unless ``skip_invalid``)."""
    try:
        result = import_upload(
            session,
            user,
            settings,
            file,
            name=name,
            kind=kind,
            format=format,
            skip_invalid=skip_invalid,
            encoding=encoding,
            mapping=mapping,
        )
    except ImportRefused as exc:
        session.rollback()
        return import_refused(exc)
    session.commit()  # before the 201, so the new id is readable as soon as the client has it
    return {
        **dataset_json(result.dataset),
        "skipped": result.skipped,
        "skipped_errors": [e.as_dict() for e in result.skipped_errors],
    }


@router.get("")
def get_datasets(session: SessionDep, user: CurrentUser) -> list[dict]:
    return [dataset_json(d) for d in list_datasets(session, user)]


@router.get("/{dataset_id}")
def get_dataset(dataset_id: ObjectId, session: SessionDep, user: CurrentUser) -> dict:
    return dataset_json(get_owned(session, Dataset, dataset_id, user))


@router.get("/{dataset_id}/rows", response_model=dict[str, Any])
def get_rows(
    dataset_id: ObjectId,
    session: SessionDep,
    user: CurrentUser,
    offset: Offset = 0,
    limit: Limit = 50,
    search: Annotated[str, Query(max_length=1000)] = "",
) -> Response:
    """Rows in order; with ``search``, only rows whose text contains it (case-insensitive)."""
    dataset = get_owned(session, Dataset, dataset_id, user)
    total, rows = page_rows(session, dataset, offset, limit, search)
    return json_response(
        {
            "total": total,
            "offset": offset,
            "search": search,
            "indexes": [i for i, _ in rows],
            "rows": [r for _, r in rows],
        }
    )


@router.get("/{dataset_id}/stats")
def get_stats(
    dataset_id: ObjectId,
    session: SessionDep,
    user: CurrentUser,
    model: OptionalRefQuery = None,
    max_length: TokenLength = None,
) -> dict:
    dataset = get_owned(session, Dataset, dataset_id, user)
    try:
        return dataset_stats(session, dataset, model, max_length)
    except StatsRequestError as exc:
        raise HTTPException(422, detail=str(exc)) from exc


@router.get("/{dataset_id}/versions")
def get_versions(dataset_id: ObjectId, session: SessionDep, user: CurrentUser) -> dict:
    dataset = get_owned(session, Dataset, dataset_id, user)
    ensure_content_hash(session, dataset)
    return {
        "dataset": version_json(dataset),
        "ancestors": [version_json(d) for d in ancestors(session, dataset)],
        "children": [version_json(d) for d in children(session, dataset)],
    }


@router.post("/{dataset_id}/dedup")
def post_dedup(dataset_id: ObjectId, body: DedupIn, session: SessionDep, user: CurrentUser) -> Any:
    dataset = get_owned(session, Dataset, dataset_id, user)
    try:
        report, version = run_dedup(session, dataset, body)
    except OperationError as exc:
        session.rollback()
        return _refused(exc)
    data = {"report": report.as_json(), "dataset": version_json(version) if version else None}
    session.commit()  # before the response: a client may ask for the new version at once
    return JSONResponse(data, status_code=201 if version else 200)


@router.post("/{dataset_id}/split", status_code=201)
def post_split(dataset_id: ObjectId, body: SplitIn, session: SessionDep, user: CurrentUser) -> Any:
    dataset = get_owned(session, Dataset, dataset_id, user)
    try:
        train, held_out = run_split(session, dataset, body)
    except OperationError as exc:
        session.rollback()
        return _refused(exc)
    session.commit()
    return {"train": version_json(train), "eval": version_json(held_out)}


@router.post("/{dataset_id}/filter", status_code=201)
def post_filter(
    dataset_id: ObjectId, body: FilterIn, session: SessionDep, user: CurrentUser
) -> Any:
    dataset = get_owned(session, Dataset, dataset_id, user)
    try:
        version = run_filter(session, dataset, body)
    except OperationError as exc:
        session.rollback()
        return _refused(exc)
    session.commit()
    return {"dataset": version_json(version)}


@router.post("/{dataset_id}/contamination")
def post_contamination(
    dataset_id: ObjectId, body: ContaminationIn, session: SessionDep, user: CurrentUser
) -> Any:
    dataset = get_owned(session, Dataset, dataset_id, user)
    try:
        report, _, version = run_contamination(session, dataset, body, user)
    except OperationError as exc:
        session.rollback()
        return _refused(exc)
    data = {"report": report.as_json(), "dataset": version_json(version) if version else None}
    session.commit()
    return JSONResponse(data, status_code=201 if version else 200)


def _export_lines(dataset_id: int) -> Iterator[bytes]:
    # Its own session: the request's is closed before a streamed body is sent.
    with get_sessionmaker()() as session:
        for _, row in iter_rows(session, dataset_id):
            yield row_bytes(row)


@router.get("/{dataset_id}/export")
def get_export(dataset_id: ObjectId, session: SessionDep, user: CurrentUser) -> StreamingResponse:
    """The canonical rows as JSONL (sorted keys: its sha256 is the version's content hash)."""
    dataset = get_owned(session, Dataset, dataset_id, user)
    filename = f"dataset-{dataset.id}.jsonl"
    session.commit()
    return StreamingResponse(
        _export_lines(dataset.id),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
