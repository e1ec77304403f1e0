"""Tokenized datasets cached on disk, so a second run on the same data starts training at once.

A run's train (or eval) dataset is what ``methods.build_dataset`` makes of the dataset's rows:
it depends on the rows (the dataset's id and content hash), the locked chat template, the
tokenizer's files, and the spec fields the encoding and packing read. The key hashes exactly
those, with the versions of the libraries that tokenize and pack and the source of the studio's
encoding modules (``code_digest``), so an upgrade never serves an old entry. Entries are Arrow
files (``datasets.save_to_disk``, read back memory-mapped), written to a temporary folder and
renamed, so a run never reads a half written entry; the least recently used are removed beyond
``KEEP``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from functools import cache
from importlib import import_module
from importlib.metadata import version
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
ENCODING_MODULES = (
    "app.chat.encoding",
    "app.chat.rows",
    "worker.training.methods",
    "worker.training.packing",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tokenizer_digest(model_path: Path) -> str:
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = model_path / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b""))
    return digest.hexdigest()


@cache
def code_digest() -> str:
    """What makes rows into tokens and bins besides the key's inputs: the libraries' versions
    and the source of the studio's encoding, row builders and packing."""
    digest = hashlib.sha256()
    for package in ("tokenizers", "transformers", "trl", "datasets"):
        digest.update(f"{package}={version(package)}".encode())
    for module in ENCODING_MODULES:
        digest.update(Path(import_module(module).__file__ or "").read_bytes())
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
        code_digest(),
        dataset_id,
        content_hash,
        chat_template,
        tokenizer,
        named_rows,
        {name: getattr(spec, name) for name in ENCODING_FIELDS},
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def cached(
    cache_dir: Path, key: str | None, build: Callable[[], Dataset], *, store: bool = True
) -> tuple[Dataset, bool]:
    """The cached dataset under ``key`` (True), or ``build()``'s, stored for next time when
    ``store`` (False). One rank of a run stores; an entry another process removes meanwhile is
    treated as missing."""
    if key is None:
        return build(), False
    entry = cache_dir / key
    if (entry / COMPLETE).exists():
        try:
            os.utime(entry)  # recently used
            return load_from_disk(str(entry)), True
        except (FileNotFoundError, OSError):
            pass  # pruned by another run meanwhile: build it again
    dataset = build()
    if store:
        _store(cache_dir, key, dataset)
    return dataset, False


def _store(cache_dir: Path, key: str, dataset: Dataset) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".{key}.{os.getpid()}"
    dataset.save_to_disk(str(partial))
    (partial / COMPLETE).touch()
    try:
        partial.rename(cache_dir / key)
    except OSError:  # another run stored the same entry meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    prune(cache_dir)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # removed by another process since the listing
        return None


def prune(cache_dir: Path, keep: int = KEEP) -> None:
    """Remove the least recently used entries beyond ``keep``, and partial entries of runs that
    were killed while writing them (an hour old)."""
    entries = []
    for path in cache_dir.iterdir():
        mtime = _mtime(path)
        if mtime is None:
            continue
        if path.name.startswith("."):
            if time.time() - mtime > 3600:
                shutil.rmtree(path, ignore_errors=True)
        elif path.is_dir():
            entries.append((mtime, path))
    for _, stale in sorted(entries, reverse=True)[keep:]:
        shutil.rmtree(stale, ignore_errors=True)
