"""The bounds of every number a route takes: one ``Annotated`` alias per kind.

SQLite and Postgres keep integers in at most 64 bits, and an id column on Postgres is a 32-bit
INTEGER, so an id past 2^31 - 1, or an offset or page past 2^63 - 1, used to reach the database
and fail there (a 500). Every integer a route reads (path, query,
header, JSON body, form) is one of these aliases, so an absurd number is refused before the
handler runs: a 422 in the one shape (``app.web.errors``) for /api/, the 422 error page for the
browser. A form whose text a handler parses itself checks each number with ``out_of_range``
and shows the problem as that form's own error. Numbers inside text (a base model "id or
name", the ``checkpoint:<id>`` of the playground, comma-separated run ids) are checked too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Header, Path, Query
from pydantic import AfterValidator, Field

from app.models import MAX_ID

MAX_INT = 2**63 - 1  # the largest integer SQLite and Postgres (bigint) store
MAX_PAGE = MAX_INT // 1000  # pages of up to 1000 rows keep their offset within MAX_INT
MAX_ROWS_PER_REQUEST = 500
MAX_TOKEN_LENGTH = 1_048_576  # app.data.stats refuses a longer max_length, too


def out_of_range(number: str | int, low: int = 0, high: int = MAX_INT) -> str | None:
    """Why ``number`` (digits or an int) is no good as a stored integer; None when it is."""
    if isinstance(number, str) and not (number.isascii() and number.isdigit()):
        return "must be a whole number written in the digits 0-9"
    if not low <= int(number) <= high:
        return f"must be between {low} and {high}"
    return None


def _numbers_fit(text: str) -> str:
    """A reference that is a name or a number (a base model "id or name", ``checkpoint:<id>``):
    a number in it must fit the database, so it is never sent there too large."""
    tail = text.strip().rpartition(":")[2]
    if tail.isdigit() and (problem := out_of_range(tail, 0, MAX_ID)):
        raise ValueError(f"the number {tail[:40]} {problem}")
    return text


def _ids_fit(text: str) -> str:
    """Comma-separated ids (``ids=1,2``): each number must fit; app.runs judges the rest."""
    for part in text.split(","):
        part = part.strip()
        if part.isdigit() and (problem := out_of_range(part, 1, MAX_ID)):
            raise ValueError(f"id {part[:40]} {problem}")
    return text


# -- path ---------------------------------------------------------------------------------------

ObjectId = Annotated[int, Path(ge=1, le=MAX_ID, description="an id (1 to 2^31 - 1)")]
RowIndex = Annotated[int, Path(ge=0, le=MAX_ID, description="a row's index in its dataset")]
VersionNumber = Annotated[int, Path(ge=1, le=MAX_ID, description="a template version number")]

# -- query --------------------------------------------------------------------------------------

IdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID, description="an id (1 to 2^31 - 1)")]
VersionQuery = Annotated[int | None, Query(ge=1, le=MAX_ID, description="a version number")]
Offset = Annotated[int, Query(ge=0, le=MAX_INT, description="how many to skip (bytes or rows)")]
# Metric ids are BIGINT (a metric row per logged step adds up); job event ids are INTEGER.
After = Annotated[int, Query(ge=0, le=MAX_INT, description="the last metric id the client has")]
EventsAfter = Annotated[int, Query(ge=0, le=MAX_ID, description="the last event id it has")]
Limit = Annotated[int, Query(ge=1, le=MAX_ROWS_PER_REQUEST, description="at most this many")]
Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="the page, from 1")]
TokenLength = Annotated[
    int | None, Query(ge=1, le=MAX_TOKEN_LENGTH, description="tokens per sequence")
]
# Text that may be a number (an id filter, a base model's id or name): a number must fit.
RefQuery = Annotated[str, Query(max_length=200), AfterValidator(_numbers_fit)]
OptionalRefQuery = Annotated[str | None, Query(max_length=200), AfterValidator(_numbers_fit)]
IdsQuery = Annotated[str, Query(max_length=2000), AfterValidator(_ids_fit)]
IdsListQuery = Annotated[list[Annotated[str, AfterValidator(_ids_fit)]] | None, Query()]

# -- header -------------------------------------------------------------------------------------

# What a reconnecting EventSource sends back: the SSE id of the last event it received.
LastEventId = Annotated[
    int | None, Header(ge=0, le=MAX_INT, description="the SSE id of the last event received")
]

# -- JSON bodies (pydantic fields) and forms ----------------------------------------------------

IdField = Annotated[int, Field(ge=1, le=MAX_ID)]
CountField = Annotated[int, Field(ge=0, le=MAX_INT)]
SeedField = Annotated[int, Field(ge=0, le=2**32 - 1)]
TokenLengthField = Annotated[int, Field(ge=1, le=MAX_TOKEN_LENGTH)]
RefText = Annotated[str, Field(max_length=200), AfterValidator(_numbers_fit)]
# A base model by id or by name (JSON bodies take either).
RefField = IdField | RefText
FormId = Annotated[int, Form(ge=1, le=MAX_ID)]
