"""Studio settings, read once from the environment (prefix ``FTSTUDIO_``).

The embedded default needs no server: a SQLite file and a filesystem broker, both under
``data_dir``. Production points ``database_url`` at Postgres and ``broker_url`` at Redis.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FTSTUDIO_", extra="ignore")

    data_dir: Path = Field(default=Path(".data"), description="Everything the studio writes.")
    database_url: str = Field(default="", description="Empty: SQLite file in data_dir.")
    broker_url: str = Field(default="", description="Empty: filesystem broker in data_dir.")
    redis_url: str = Field(default="", description="Optional Redis for live pub/sub.")
    secret_key: str = Field(
        default="", description="Signs browser sessions; empty: one per data_dir."
    )
    queue: str = Field(default="gpu", description="Celery queue the worker consumes.")
    worker_devices: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|\d+(,\d+)*)$",
        description="The devices a worker owns: 'auto' (every GPU it sees, else the CPU), 'cpu', "
        "or CUDA indices such as '0' or '0,1'; its training processes see only those.",
    )
    gpus_per_worker: int = Field(
        default=0,
        ge=0,
        le=64,
        description="How `ftstudio up` shares the host's GPUs out: 0 starts one worker owning "
        "FTSTUDIO_WORKER_DEVICES; N starts one worker per group of N GPUs (1: one per GPU).",
    )
    worker_device_class: str = Field(
        default="",
        max_length=200,
        description="The worker's device class (empty: the detected device name, e.g. "
        "'NVIDIA H100 80GB HBM3' or 'cpu').",
    )
    max_upload_bytes: int = Field(default=512 * 1024 * 1024)
    max_inflated_bytes: int = Field(
        default=4 * 1024**3,
        gt=0,
        description="An upload whose content (after gzip) passes this many bytes is refused "
        "(413) as soon as it does.",
    )
    max_inflate_ratio: float = Field(
        default=200.0,
        ge=0,
        description="A gzip upload inflating to more than this many times the compressed bytes "
        "read so far is refused (413) once past inflate_ratio_min_bytes (0: no ratio limit).",
    )
    inflate_ratio_min_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Inflated bytes that max_inflate_ratio lets through whatever the ratio.",
    )
    max_upload_rows: int = Field(
        default=5_000_000,
        gt=0,
        description="An upload holding more records than this is refused (422) at the first "
        "record over it.",
    )
    max_row_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description="The largest line of an upload, and the largest stored row (UTF-8 bytes).",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        gt=0,
        description="The largest request body of every route but the uploads (which have "
        "max_upload_bytes), refused with 413 before anything reads it.",
    )
    secure_cookies: bool = Field(
        default=False,
        description="Send the session cookie with the Secure flag (the studio is served over "
        "https, e.g. behind a TLS proxy).",
    )
    login_attempts: int = Field(
        default=5,
        ge=1,
        description="Failed logins allowed per name and per address before each next try "
        "waits, doubling from 1 s up to 15 minutes.",
    )
    web_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Worker threads for the web process's blocking handlers, and its database "
        "pool size (0: anyio's default, 40).",
    )
    database_busy_timeout: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds a write waits for SQLite's write lock before the request is "
        "answered 503 with Retry-After (the embedded database).",
    )
    models_dir: Path | None = Field(default=None, description="Default: data_dir/models.")
    heartbeat_seconds: float = 5.0
    device_memory_bytes: int = Field(
        default=0,
        ge=0,
        description="Memory of the workers' training device, for the pre-launch estimate's "
        "'fits' (0: unknown).",
    )
    cancel_grace_seconds: float = 20.0
    export_max_shard_bytes: int = Field(
        default=5_000_000_000,
        gt=0,
        description="Merged exports split their safetensors weights into shards of at most "
        "this many bytes (a single tensor larger than that keeps a shard of its own).",
    )

    def model_post_init(self, __context: object) -> None:
        self.data_dir = self.data_dir.resolve()

    @property
    def worker_offline_seconds(self) -> float:
        """A worker that has not beaten for this long (12 missed beats) counts as offline."""
        return self.heartbeat_seconds * 12

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'studio.db'}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def is_embedded_broker(self) -> bool:
        return not self.broker_url

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def bundled_models_dir(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    @property
    def bundled_model_dir(self) -> Path:
        """Where `ftstudio setup` converts SmolLM2-135M-Instruct (worker.bundled_model)."""
        return self.bundled_models_dir / "smollm2-135m-instruct"

    def session_secret(self) -> str:
        """The configured key, else one generated once and kept in data_dir."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):  # another process made it first
                # Created with its mode: the key is never readable by others, not even briefly.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def ensure_dirs(self) -> None:
        """The data dir and its folders, readable by the studio's user alone (0700); files the
        studio creates there are 0600 (``private_umask``)."""
        for path in (self.data_dir, self.uploads_dir, self.jobs_dir, self.exports_dir):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if self.is_embedded_broker:
            for sub in ("in", "processed", "control"):
                (self.broker_dir / sub).mkdir(parents=True, exist_ok=True)


def private_umask() -> None:
    """Files and folders the studio's processes create are its user's alone (database, logs,
    uploads, checkpoints): 0600 / 0700. Called once by each entry point."""
    os.umask(0o077)


@lru_cache
def get_settings() -> Settings:
    return Settings()
