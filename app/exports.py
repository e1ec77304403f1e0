"""Requesting exports of a checkpoint."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.models import Checkpoint, Export, User

EXPORT_KINDS = ("merged",)


class ExportRequestError(ValueError):
    pass


def create_export(session: Session, user: User, checkpoint: Checkpoint, kind: str) -> Export:
    if kind not in EXPORT_KINDS:
        raise ExportRequestError(
            f"export kind '{kind}' is not supported (supported: {', '.join(EXPORT_KINDS)})"
        )
    export = Export(owner_id=user.id, checkpoint_id=checkpoint.id, kind=kind)
    session.add(export)
    session.flush()
    return export
