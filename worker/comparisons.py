"""The generation process: ``python -m worker.comparisons (comparison|generation) ID ERROR_FILE``.

For a comparison it loads each model once and answers every prompt with it; for a playground turn
it answers one conversation. Text is written to the generation's row as it is produced (a few
times a second), so pages streaming from the database show it growing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select

from app.db import session_scope
from app.models import Comparison, Generation, JobStatus
from app.states import ACTIVE, move
from worker.child import run_child_main
from worker.inference import Decoding, generate, loaded, model_source

WRITE_EVERY_SECONDS = 0.25


def _move(
    generation_id: int, to: JobStatus | None, from_: JobStatus | Iterable[JobStatus], **values: Any
) -> bool:
    """A guarded write (``app.states.move``): a generation that ended meanwhile stays ended."""
    with session_scope() as session:
        return move(session, Generation, generation_id, to=to, from_=from_, **values)


def _throttled_writer(generation_id: int) -> Callable[[str], None]:
    last = 0.0

    def write(text: str) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= WRITE_EVERY_SECONDS:
            last = now
            _move(generation_id, None, JobStatus.running, text=text)

    return write


def answer(model: object, generation_id: int, messages: list, decoding: Decoding) -> None:
    """Answer one generation: a comparison's cell is queued, a playground turn already running
    (its task took it); one that has ended meanwhile is left alone."""
    if not _move(generation_id, JobStatus.running, ACTIVE):
        return
    try:
        text, stopped = generate(model, messages, decoding, _throttled_writer(generation_id))  # type: ignore[arg-type]
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        _move(generation_id, JobStatus.failed, JobStatus.running, error=error)
        raise
    _move(generation_id, JobStatus.succeeded, JobStatus.running, text=text, stopped=stopped)


def run_comparison(comparison_id: int) -> None:
    with session_scope() as session:
        comparison = session.get(Comparison, comparison_id)
        assert comparison is not None
        keys = [m["key"] for m in comparison.models]
        decoding = Decoding.from_dict(comparison.decoding)
        cells = session.execute(
            select(Generation.id, Generation.model_key, Generation.messages)
            .where(Generation.comparison_id == comparison_id)
            .order_by(Generation.prompt_index)
        ).all()
        sources = [model_source(session, key) for key in keys]
    for source in sources:
        with loaded(source) as model:
            for generation_id, key, messages in cells:
                if key == source.key:
                    answer(model, generation_id, messages, decoding)


def run_generation(generation_id: int) -> None:
    with session_scope() as session:
        generation = session.get(Generation, generation_id)
        assert generation is not None
        source = model_source(session, generation.model_key)
        messages, decoding = generation.messages, Decoding.from_dict(generation.decoding)
    with loaded(source) as model:
        answer(model, generation_id, messages, decoding)


RUNNERS = {"comparison": run_comparison, "generation": run_generation}


def main() -> None:
    run_child_main(lambda kind, ident: RUNNERS[kind](int(ident)))


if __name__ == "__main__":
    main()
