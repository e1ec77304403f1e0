"""The render budget and the per-value limits: the limits themselves (``MAX_*``) and what
building costs in bytes, the errors a broken limit raises, the ``RenderBudget`` that charges one
render for the values it keeps alive and counts its loop iterations, and the checks that refuse a
single value (a str, a container, an int) past its limit."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

MAX_VALUE_CHARS = 4_000_000
MAX_VALUE_ITEMS = 1_000_000
MAX_RENDER_BYTES = 32 * 2**20
MAX_COMPILE_BYTES = 2**20  # constants Jinja folds while compiling stay in the cached code
MAX_LOOP_ITERATIONS = 1_000_000
MAX_RANGE = 100_000  # Jinja's own sandbox limit, so legitimate templates behave the same
MAX_INT_BITS = 10_000
MAX_NESTING = 100

# What building costs, in bytes (CPython, 64-bit): upper bounds rather than exact sizes.
STR_BYTES = 80  # a str's header; the characters come on top, 1, 2 or 4 bytes each
OBJECT_BYTES = 64  # any other small object (a number, a tuple, a generator...)
SLOT_BYTES = 8  # one reference in a list or tuple
DICT_ENTRY_BYTES = 100  # one dict entry, with the table's spare room
PER_CHAR_OBJECT_BYTES = 64  # filters (textwrap, pprint, urlize) that may make an object per char

ESCAPE_FACTOR = 5  # the longest HTML escape: '&' -> '&amp;'
_NON_ASCII_HEADER = sys.getsizeof("é") - 2  # see char_width

T = TypeVar("T")


class TemplateError(ValueError):
    """The template does not compile, raised an exception, or broke a limit."""


class RenderLimitExceeded(TemplateError):
    """The template ran too long, recursed too deep or tried to build too much."""


# -- the budget ----------------------------------------------------------------------------------


class RenderBudget:
    """The bytes of template-built values still alive, and the loop iterations, of one render."""

    def __init__(self, max_bytes: int, *, reclaim: bool) -> None:
        self.max_bytes = max_bytes
        self.reclaim = reclaim
        self.live_bytes = 0
        self.iterations = 0
        self._tracked: dict[int, tuple[Any, int]] = {}

    def reserve(self, nbytes: int, what: str) -> None:
        """Refuse ``what`` unless ``nbytes`` more fit in the budget."""
        if self.live_bytes + nbytes <= self.max_bytes:
            return
        if self.reclaim:
            self._give_back_dead_values()
        if self.live_bytes + nbytes > self.max_bytes:
            raise RenderLimitExceeded(
                f"{what} would exceed the {_mib(self.max_bytes)} a render may build"
            )

    def track(self, value: Any, nbytes: int) -> None:
        """Count ``value`` (built for ``nbytes``) until nothing but the budget references it."""
        if not self.reclaim:
            self.live_bytes += nbytes
            return
        earlier = self._tracked.get(id(value))
        if earlier is not None:
            if earlier[1] >= nbytes:
                return
            self.live_bytes -= earlier[1]
        self._tracked[id(value)] = (value, nbytes)
        self.live_bytes += nbytes

    def count_iterations(self, count: int = 1) -> None:
        self.iterations += count
        if self.iterations > MAX_LOOP_ITERATIONS:
            raise RenderLimitExceeded(
                f"the template's loops would exceed {MAX_LOOP_ITERATIONS} iterations"
            )

    def _give_back_dead_values(self) -> None:
        # A tracked value whose refcount is 2 (the tracking tuple, getrefcount's argument) is
        # referenced by nothing the template can reach: drop it and give its bytes back. Values
        # held by a dropped container become free on the next pass.
        while True:
            dead = [key for key, entry in self._tracked.items() if sys.getrefcount(entry[0]) <= 2]
            if not dead:
                return
            for key in dead:
                self.live_bytes -= self._tracked.pop(key)[1]


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:g} MiB"


_budget: ContextVar[RenderBudget | None] = ContextVar("chat_template_budget", default=None)


@contextmanager
def render_budget(max_bytes: int, *, reclaim: bool = True) -> Iterator[RenderBudget]:
    """Charge what is built inside the block to a fresh budget (``reclaim=False``: never give
    bytes back, for compiling, where folded constants end up in the cached code)."""
    budget = RenderBudget(max_bytes, reclaim=reclaim)
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def reserve(nbytes: int, what: str) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.reserve(nbytes, what)


def track(value: T, nbytes: int) -> T:
    budget = _budget.get()
    if budget is not None:
        budget.track(value, nbytes)
    return value


def built(what: str, nbytes: int, make: Callable[[], T]) -> T:
    """``make()``, once ``nbytes`` fit in the budget, charged until the result is dropped."""
    reserve(nbytes, what)
    return track(make(), nbytes)


def count_iterations(count: int = 1) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.count_iterations(count)


# -- per-value limits ----------------------------------------------------------------------------


def text_cost(what: str, chars: int, width: int = 1) -> int:
    """The bytes of a ``chars``-long str; refused beyond the per-value limit."""
    if chars > MAX_VALUE_CHARS:
        raise RenderLimitExceeded(
            f"{what} would exceed {MAX_VALUE_CHARS} characters (it would make {chars})"
        )
    return STR_BYTES + max(chars, 0) * width


def items_cost(what: str, count: int, per_item: int = SLOT_BYTES) -> int:
    """The bytes of a ``count``-item container; refused beyond the per-value limit."""
    if count > MAX_VALUE_ITEMS:
        raise RenderLimitExceeded(
            f"{what} would exceed {MAX_VALUE_ITEMS} items (it would make {count})"
        )
    return OBJECT_BYTES + max(count, 0) * per_item


def refuse_big_int(what: str, bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise RenderLimitExceeded(f"{what} would exceed {MAX_INT_BITS} bits")


def char_width(text: Any) -> int:
    """Bytes per character of ``text`` (1, 2 or 4, as CPython stores it), read in O(1) from the
    object's size; 4 when that is not possible (str subclasses, non-strings)."""
    if isinstance(text, str | bytes) and text.isascii():
        return 1
    if type(text) is not str:
        return 1 if isinstance(text, int | float | bytes) or text is None else 4
    width = (sys.getsizeof(text) - _NON_ASCII_HEADER) // (len(text) + 1)
    return width if width in (1, 2, 4) else 4


def widest(values: Iterable[Any]) -> int:
    return max((char_width(value) for value in values), default=1)


def as_int(value: Any) -> int | None:
    """``value`` when it is an int (the only widths and counts Python accepts), else None."""
    return value if isinstance(value, int) else None
