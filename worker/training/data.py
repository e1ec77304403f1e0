"""A run's datasets: the rows read back from the database, encoded, named and packed as the
method's trainer takes them (``methods.build_dataset``), from the tokenized cache when a run
already prepared the same rows the same way (``data_cache``). Prepared on a thread beside the
model load (``start_preparing``)."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset
from sqlalchemy import select

from app.chat.rows import RowEncoder
from app.db import session_scope
from app.models import DatasetRow
from app.spec import TrainingSpec
from worker.training.data_cache import cache_key, cached, tokenizer_digest
from worker.training.methods import build_dataset
from worker.training.phases import PhaseClock


def load_rows(dataset_id: int, limit: int | None = None) -> list[dict]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(DatasetRow.data)
                .where(DatasetRow.dataset_id == dataset_id)
                .order_by(DatasetRow.index)
                .limit(limit)
            )
        )


def load_row_indices(dataset_id: int) -> list[int]:
    """The rows' ``DatasetRow.index`` values, in load_rows' order."""
    with session_scope() as session:
        return list(
            session.scalars(
                select(DatasetRow.index)
                .where(DatasetRow.dataset_id == dataset_id)
                .order_by(DatasetRow.index)
            )
        )


@dataclass(frozen=True)
class DataSource:
    """One dataset a run trains or evaluates on, and what its cache entry is keyed by."""

    dataset_id: int
    content_hash: str
    named_rows: bool  # carry each row's index (the train set: health alarms name rows)


@dataclass(frozen=True)
class Preparation:
    spec: TrainingSpec
    encoder: RowEncoder
    chat_template: str | None
    model_path: Path
    cache_dir: Path
    store: bool = True  # rank 0 of a run stores what it prepared; the others only read

    def dataset(self, source: DataSource) -> tuple[Dataset, bool]:
        """The source's dataset, and whether it came from the cache."""
        key = cache_key(
            self.spec,
            dataset_id=source.dataset_id,
            content_hash=source.content_hash,
            chat_template=self.chat_template,
            tokenizer=tokenizer_digest(self.model_path),
            named_rows=source.named_rows,
        )

        def build() -> Dataset:
            indices = load_row_indices(source.dataset_id) if source.named_rows else None
            return build_dataset(load_rows(source.dataset_id), self.spec, self.encoder, indices)

        return cached(self.cache_dir, key, build, store=self.store)

    def datasets(
        self, train: DataSource, evaluation: DataSource | None, clock: PhaseClock
    ) -> tuple[Dataset, Dataset | None]:
        with clock.phase("data preparation") as details:
            train_ds, hit = self.dataset(train)
            eval_ds = self.dataset(evaluation)[0] if evaluation else None
            details["cached"] = hit
            details["sequences"] = len(train_ds)
        return train_ds, eval_ds


def start_preparing(
    preparation: Preparation, train: DataSource, evaluation: DataSource | None, clock: PhaseClock
) -> Future[tuple[Dataset, Dataset | None]]:
    """Prepare the datasets on a thread (tokenizing and reading rows overlap the model load);
    ``.result()`` waits for them and raises what preparing raised. The thread is a daemon: a
    run that fails while loading its model exits at once, without waiting for it."""
    future: Future[tuple[Dataset, Dataset | None]] = Future()

    def prepare() -> None:
        try:
            future.set_result(preparation.datasets(train, evaluation, clock))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=prepare, name="studio-data", daemon=True).start()
    return future
