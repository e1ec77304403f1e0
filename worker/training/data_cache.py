"""Tokenized datasets cached on disk, so a second run on the same data starts training at once.

A run's train (or eval) dataset is what ``methods.build_dataset`` makes of the dataset's rows:
it depends on the rows (the dataset's id and content hash), the locked chat template, the
tokenizer's files, and the spec fields the encoding and packing read. The key hashes exactly
those; ``ENCODING_VERSION`` changes whenever the studio's encoding or packing would make
something else of the same inputs. Entries are Arrow files (``datasets.save_to_disk``, read
back memory-mapped), written to a temporary folder and renamed, so a run never reads a half
written entry; the least recently used are removed beyond ``KEEP``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from datasets import Dataset, load_from_disk

from app.spec import TrainingSpec

ENCODING_VERSION = 1
KEEP = 16
COMPLETE = ".complete"
# What a row becomes depends on these spec fields (app.chat.rows.RowEncoder.for_spec, the
# method's row builder, worker.training.packing).
ENCODING_FIELDS = (
    "method",
    "max_length",
    "assistant_only_loss",
    "completion_only_loss",
    "packing",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tokenizer_digest(model_path: Path) -> str:
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = model_path / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
    return digest.hexdigest()


def cache_key(
    spec: TrainingSpec,
    *,
    dataset_id: int,
    content_hash: str,
    chat_template: str | None,
    tokenizer: str,
    named_rows: bool,
) -> str | None:
    """The entry's name; None when the rows have no content hash (nothing to key them by)."""
    if not content_hash:
        return None
    parts = [
        ENCODING_VERSION,
        dataset_id,
        content_hash,
        chat_template,
        tokenizer,
        named_rows,
        {name: getattr(spec, name) for name in ENCODING_FIELDS},
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cached(cache_dir: Path, key: str | None, build: Callable[[], Dataset]) -> tuple[Dataset, bool]:
    """The cached dataset under ``key`` (True), or ``build()``'s, stored for next time
    (False)."""
    if key is None:
        return build(), False
    entry = cache_dir / key
    if (entry / COMPLETE).exists():
        os.utime(entry)  # recently used
        return load_from_disk(str(entry)), True
    dataset = build()
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".{key}.{os.getpid()}"
    dataset.save_to_disk(str(partial))
    (partial / COMPLETE).touch()
    try:
        partial.rename(entry)
    except OSError:  # another run stored the same entry meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    prune(cache_dir)
    return dataset, False


def prune(cache_dir: Path, keep: int = KEEP) -> None:
    entries = sorted(
        (p for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for stale in entries[keep:]:
        shutil.rmtree(stale, ignore_errors=True)
    for partial in cache_dir.glob(".*"):  # a run killed while writing its entry
        if time.time() - partial.stat().st_mtime > 3600:
            shutil.rmtree(partial, ignore_errors=True)
