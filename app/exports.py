"""Requesting exports of a checkpoint."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.models import Checkpoint, Export, User
from app.spec import MERGEABLE_ADAPTERS

EXPORT_KINDS = ("merged",)


class ExportRequestError(ValueError):
    pass


def create_export(session: Session, user: User, checkpoint: Checkpoint, kind: str) -> Export:
    if kind not in EXPORT_KINDS:
        raise ExportRequestError(
            f"export kind '{kind}' is not supported (supported: {', '.join(EXPORT_KINDS)})"
        )
    adapter = checkpoint.job.adapter
    if kind == "merged" and adapter not in MERGEABLE_ADAPTERS:
        raise ExportRequestError(
            f"a {adapter} adapter adds learned virtual tokens, not a weight update: it cannot be "
            "merged into the base model (adapters that merge: "
            f"{', '.join(MERGEABLE_ADAPTERS)})"
        )
    export = Export(owner_id=user.id, checkpoint_id=checkpoint.id, kind=kind)
    session.add(export)
    session.flush()
    return export
