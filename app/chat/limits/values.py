"""Collections and operators: listing an iterator once so it can be sized and still used
(``materialize``, ``sequence_arg``), text streams that stop at the per-value limit
(``CappedText``, ``pformat``), the bytes an operator, a ``~`` concatenation, a rendered block, an
output or a slice builds, and the loop and ``*args`` iterables charged to the budget."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pprint import PrettyPrinter
from typing import Any

from markupsafe import Markup

from app.chat.limits.budget import (
    ESCAPE_FACTOR,
    MAX_VALUE_CHARS,
    OBJECT_BYTES,
    PER_CHAR_OBJECT_BYTES,
    built,
    char_width,
    count_iterations,
    items_cost,
    refuse_big_int,
    reserve,
    text_cost,
    track,
    widest,
)
from app.chat.limits.sizes import Sizer, escaped_size, literal_size, printf_size, text_size

# -- collections ---------------------------------------------------------------------------------


def is_sized(value: Any) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, Iterator)


def materialize(values: Iterable[Any], what: str) -> list[Any]:
    """``list(values)``, refused as soon as it passes the item limit or the budget; for
    iterators that would otherwise be consumed twice (once to size them, once to use them)."""
    items: list[Any] = []
    for item in values:
        items.append(item)
        if len(items) % 4096 == 0:
            reserve(items_cost(what, len(items)), what)
    return track(items, items_cost(what, len(items)))


def sequence_arg(arguments: dict[str, Any], name: str, what: str) -> Any:
    """The argument ``name``, made a list first when it is an iterator (so sizing it does not
    use it up); the filter then gets the list, which it iterates exactly as the iterator."""
    value = arguments.get(name)
    if not is_sized(value) and isinstance(value, Iterable):
        value = arguments[name] = materialize(value, what)
    return value


def count_of(value: Any) -> int:
    try:
        return len(value)
    except TypeError:
        return 0


class CappedText:
    """A write-only text stream that refuses to grow past the per-value limit (for filters that
    write their result piece by piece: pprint, json with indent)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.size = 0
        self._parts: list[str] = []
        self._joined = 0  # parts[:joined] are already merged runs

    def write(self, text: str) -> int:
        self.size += len(text)
        text_cost(self.what, self.size)
        self._parts.append(text)
        if len(self._parts) - self._joined >= 4096:  # keep the list of pieces short
            self._parts[self._joined :] = ["".join(self._parts[self._joined :])]
            self._joined += 1
        return len(text)

    def getvalue(self) -> str:
        return "".join(self._parts)


def capped_join(pieces: Iterable[str], what: str) -> str:
    stream = CappedText(what)
    for piece in pieces:
        stream.write(piece)
    return stream.getvalue()


def pformat(value: Any) -> str:
    """``pprint.pformat(value)`` that stops at the per-value limit (indentation under long keys
    can make it far longer than the value's repr)."""
    chars = literal_size(value)
    text_cost("the pprint filter", chars)
    reserve(PER_CHAR_OBJECT_BYTES * chars, "the pprint filter")  # pprint splits long strings
    stream = CappedText("the pprint filter")
    PrettyPrinter(stream=stream).pprint(value)
    return stream.getvalue()[:-1]


# -- operators -----------------------------------------------------------------------------------


def binop_cost(operator: str, left: Any, right: Any) -> int:
    """The bytes ``left <operator> right`` may build; refused past a limit."""
    what = f"the {operator} operator"
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                count = len(seq) * max(times, 0)
                if isinstance(seq, str | bytes):
                    return text_cost(what, count, char_width(seq))
                return items_cost(what, count)
        if isinstance(left, int) and isinstance(right, int):
            refuse_big_int(what, left.bit_length() + right.bit_length())
    elif operator == "+":
        if isinstance(left, str) and isinstance(right, str):
            escaped = isinstance(left, Markup) or isinstance(right, Markup)
            chars = (len(left) + len(right)) * (ESCAPE_FACTOR if escaped else 1)
            return text_cost(what, chars, widest((left, right)))
        if isinstance(left, bytes) and isinstance(right, bytes):
            return text_cost(what, len(left) + len(right))
        if isinstance(left, list | tuple) and isinstance(right, list | tuple):
            return items_cost(what, len(left) + len(right))
    elif operator == "%":
        if isinstance(left, str):
            factor = ESCAPE_FACTOR if isinstance(left, Markup) else 1
            return text_cost(what, printf_size(left, right) * factor, 4)
        if isinstance(left, bytes):
            return text_cost(what, printf_size(left.decode("latin-1"), right))
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
        refuse_big_int(what, max(right, 0) * left.bit_length())
    return OBJECT_BYTES


def concat_cost(values: Iterable[Any], *, escaped: bool) -> int:
    """The bytes ``a ~ b ~ ...`` builds: each operand's text (escaped, in autoescape blocks)."""
    sizer = Sizer()
    chars = sum(sizer.text(value) for value in values)
    return text_cost("the ~ operator", chars * (ESCAPE_FACTOR if escaped else 1), widest(values))


def joined(pieces: Iterable[str], what: str) -> str:
    """``"".join(pieces)`` for the text a macro, block or ``{% set %}`` block rendered: the
    pieces are added up as they come and refused at the per-value limit."""
    parts: list[str] = []
    chars = width = 0
    for piece in pieces:
        chars += len(piece)
        if chars > MAX_VALUE_CHARS:
            text_cost(what, chars)
        parts.append(piece)
        width = max(width, char_width(piece))
    return built(what, text_cost(what, chars, width or 1), lambda: "".join(parts))


def output_cost(value: Any, *, escaped: bool) -> int:
    """The bytes of ``str(value)`` (or of its escaped text) when a template outputs ``value``."""
    if escaped:
        chars = escaped_size(value) if isinstance(value, str) else ESCAPE_FACTOR * text_size(value)
    else:
        chars = text_size(value)
    return text_cost("the output of {{ }}", chars, char_width(value))


def slice_cost(value: Any, index: Any) -> int | None:
    """The bytes ``value[index]`` builds when ``index`` is a slice of a str, bytes, list or
    tuple; None when it is anything else."""
    if not isinstance(index, slice) or not isinstance(value, str | bytes | list | tuple):
        return None
    try:
        count = len(range(len(value))[index])
    except (TypeError, ValueError):
        return None  # Python raises on this slice
    if isinstance(value, str | bytes):
        return text_cost("slicing", count, char_width(value))
    return items_cost("slicing", count)


class CountedIterable:
    """A loop's iterable that counts every iteration against the render's loop budget; keeps
    ``len()`` so ``loop.length`` and ``loop.last`` work as they would."""

    __slots__ = ("_items",)

    def __init__(self, items: Any) -> None:
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        for item in self._items:
            count_iterations()
            yield item

    def __len__(self) -> int:
        return len(self._items)


def star_args(values: Any) -> Any:
    """What ``f(*values)`` unpacks into a tuple, sized first (a generator is listed, counted)."""
    if is_sized(values):
        reserve(items_cost("unpacking *args", count_of(values)), "unpacking *args")
        return values
    return materialize(values, "unpacking *args") if isinstance(values, Iterable) else values
