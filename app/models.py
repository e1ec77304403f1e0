"""Database tables. Every user-owned table has ``owner_id``; queries go through app.access."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base

MAX_ID = 2**31 - 1  # ids are INTEGER columns: 32 bits on Postgres


def utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(cls: type[enum.Enum]) -> SAEnum:
    return SAEnum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class ExportStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship()


class BrowserSession(Base):
    """A signed-in browser: the session cookie names it, logging out deletes it (so a copied
    cookie stops working), a new password deletes all of the user's."""

    __tablename__ = "browser_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's id
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BaseModel(Base):
    """A model a job can start from: the bundled one, or a local directory an admin registered."""

    __tablename__ = "base_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    path: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20), default="local")
    chat_template: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


DATASET_IMPORTING = "importing"
DATASET_READY = "ready"


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    format: Mapped[str] = mapped_column(String(40))
    num_rows: Mapped[int] = mapped_column(Integer, default=0)
    # DATASET_IMPORTING while an import writes its rows (hidden from every listing and lookup),
    # then DATASET_READY (app.data.importer).
    status: Mapped[str] = mapped_column(String(20), default=DATASET_READY)
    source_filename: Mapped[str] = mapped_column(String(255), default="")
    sha256: Mapped[str] = mapped_column(String(64), default="", doc="sha256 of the uploaded file")
    # Versions: a governance operation (dedup, split, filter...) makes a new immutable dataset
    # that records its parent and what was done; jobs pin one version by its id.
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasets.id", name="fk_datasets_parent_id"), index=True
    )
    operation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    content_hash: Mapped[str] = mapped_column(
        String(64), default="", server_default="", doc="sha256 of the rows"
    )
    detection: Mapped[str] = mapped_column(
        Text, default="", server_default="", doc="why this layout was chosen"
    )
    mapping: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True),
        doc="written by an import in progress as it goes; a stale one is an abandoned import",
    )


class DatasetRow(Base):
    __tablename__ = "dataset_rows"

    id: Mapped[int] = mapped_column(primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int] = mapped_column(Integer)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(20))
    adapter: Mapped[str] = mapped_column(String(20))
    base_model_id: Mapped[int] = mapped_column(ForeignKey("base_models.id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    eval_dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_version: Mapped[int] = mapped_column(Integer)
    chat_template: Mapped[str | None] = mapped_column(Text)
    chat_template_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("chat_template_versions.id", name="fk_jobs_chat_template_version_id"),
        doc="the pinned template version",
    )
    stop_check: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, doc="whether generations after training end with the end-of-turn token"
    )
    parent_checkpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("checkpoints.id", use_alter=True, name="fk_jobs_parent_checkpoint_id"),
        doc="start from this checkpoint (chaining, e.g. SFT -> DPO)",
    )
    resume_checkpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("checkpoints.id", use_alter=True, name="fk_jobs_resume_checkpoint_id"),
        doc="resume this job's own training state from this checkpoint",
    )
    status: Mapped[JobStatus] = mapped_column(
        _enum(JobStatus), default=JobStatus.queued, index=True
    )
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)
    step: Mapped[int] = mapped_column(Integer, default=0)
    max_steps: Mapped[int | None] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(200))
    device_class: Mapped[str | None] = mapped_column(
        String(200), doc="the device class it asks for (None: any worker)"
    )
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    base_model: Mapped[BaseModel] = relationship()
    dataset: Mapped[Dataset] = relationship(foreign_keys=[dataset_id])


class Metric(Base):
    """One logging step of one job; the named columns are the curves every method has."""

    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[float | None] = mapped_column(Float)
    loss: Mapped[float | None] = mapped_column(Float)
    learning_rate: Mapped[float | None] = mapped_column(Float)
    grad_norm: Mapped[float | None] = mapped_column(Float)
    num_tokens: Mapped[float | None] = mapped_column(Float)
    values: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    is_final: Mapped[bool] = mapped_column(Boolean, default=False)
    path: Mapped[str] = mapped_column(Text)
    stop_check: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    job: Mapped[Job] = relationship(foreign_keys=[job_id])


class Export(Base):
    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[ExportStatus] = mapped_column(_enum(ExportStatus), default=ExportStatus.queued)
    error: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    manifest: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, doc="files with sha256, base model, spec, metrics (also in the archive)"
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    checkpoint: Mapped[Checkpoint] = relationship()


class ChatTemplate(Base):
    """A named chat template: a base model's own (native), a shipped one (builtin) or a user's.
    Its text lives in versions; saving a change adds a version and jobs pin one."""

    __tablename__ = "chat_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, doc="None: visible to everyone"
    )
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), doc="native | builtin | user")
    base_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("base_models.id", ondelete="CASCADE"), doc="for native templates"
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    versions: Mapped[list[ChatTemplateVersion]] = relationship(
        back_populates="template", order_by="ChatTemplateVersion.version"
    )


class ChatTemplateVersion(Base):
    __tablename__ = "chat_template_versions"
    __table_args__ = (UniqueConstraint("template_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    template_id: Mapped[int] = mapped_column(
        ForeignKey("chat_templates.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    warnings: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    template: Mapped[ChatTemplate] = relationship(back_populates="versions")


class JobEvent(Base):
    """Something that happened to a job, shown on its timeline and chart: a health alarm (NaN
    loss, loss spike, overfitting, exploding grad norm), early stopping, a resume."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(10), default="warning", doc="info|warning|error")
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Evaluation(Base):
    """A checkpoint (or a base model) measured on a dataset by a worker task."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    checkpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("checkpoints.id", ondelete="CASCADE"), index=True
    )
    base_model_id: Mapped[int | None] = mapped_column(
        ForeignKey("base_models.id"), doc="set when the base model itself is evaluated"
    )
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    metrics: Mapped[list[str]] = mapped_column(JSON, default=list, doc="the metrics asked for")
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.queued)
    error: Mapped[str | None] = mapped_column(Text)
    results: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Comparison(Base):
    """Side by side: several models (the base, checkpoints across runs) answer the same prompts
    with one set of decoding parameters; blind arena pairs are drawn from the outputs."""

    __tablename__ = "comparisons"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    models: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, doc='[{"key": "base:1" | "checkpoint:7", "label": ...}]'
    )
    prompts: Mapped[list[Any]] = mapped_column(JSON, doc="each a list of messages")
    decoding: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.queued)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Generation(Base):
    """One model's answer to one conversation, streamed into ``text`` as it is generated: a cell
    of a comparison's grid, or a playground turn."""

    __tablename__ = "generations"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    comparison_id: Mapped[int | None] = mapped_column(
        ForeignKey("comparisons.id", ondelete="CASCADE"), index=True
    )
    prompt_index: Mapped[int | None] = mapped_column(Integer)
    model_key: Mapped[str] = mapped_column(String(40), doc='"base:1" or "checkpoint:7"')
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    decoding: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    text: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus), default=JobStatus.queued)
    error: Mapped[str | None] = mapped_column(Text)
    stopped: Mapped[bool | None] = mapped_column(Boolean, doc="ended with end-of-turn")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ArenaPair(Base):
    """Two outputs for one prompt, shown blind in a random order; the user's vote."""

    __tablename__ = "arena_pairs"

    id: Mapped[int] = mapped_column(primary_key=True)
    comparison_id: Mapped[int] = mapped_column(
        ForeignKey("comparisons.id", ondelete="CASCADE"), index=True
    )
    prompt_index: Mapped[int] = mapped_column(Integer)
    a_generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"))
    b_generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"))
    choice: Mapped[str | None] = mapped_column(String(10), doc="a | b | tie | both_bad")
    voted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Worker(Base):
    """A training worker as it last said (its heartbeat): where it runs, the devices it owns,
    and whether it is busy with a job. Written by the worker only (``app.workers``)."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, doc="Celery's hostname")
    host: Mapped[str] = mapped_column(String(255))
    device_class: Mapped[str] = mapped_column(String(200), doc='"NVIDIA H100 80GB HBM3" or "cpu"')
    devices: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, doc='[{"index": 0, "name": ..., "memory_bytes": ...}]'
    )
    max_devices: Mapped[int] = mapped_column(
        Integer, default=1, doc="the most devices one job may ask of it (cores on a CPU worker)"
    )
    busy: Mapped[bool] = mapped_column(Boolean, default=False)
    job_id: Mapped[int | None] = mapped_column(Integer, doc="the job it runs (no foreign key)")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="set when it shut down cleanly"
    )
