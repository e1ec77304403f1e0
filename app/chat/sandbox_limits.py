"""Size arithmetic for the chat-template sandbox (``sandbox.py`` wires it in).

Every operation a template can use to build a value (operators, filters, str methods, joins,
slices, loops) is sized here from its operands *before* it runs, and refused with
``RenderLimitExceeded`` when the result would pass a limit:

- a value may hold ``MAX_VALUE_CHARS`` characters (the output cap: a longer value could not be
  rendered anyway) or ``MAX_VALUE_ITEMS`` items;
- what a render builds is charged to a ``RenderBudget`` of ``MAX_RENDER_BYTES``. Built values are
  tracked, and the ones only the budget still references are given back when it runs short, so
  a template is charged for what it keeps alive, not for every string it ever rebuilt in a loop;
- loops may run ``MAX_LOOP_ITERATIONS`` times per render, ``range()`` has ``MAX_RANGE`` items.

The sizes are upper bounds; none of them consumes an iterator a template goes on to use.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pprint import PrettyPrinter
from string import Formatter
from typing import Any, TypeVar

from jinja2.filters import make_attrgetter
from jinja2.runtime import Undefined
from jinja2.utils import Namespace
from markupsafe import Markup

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

_CHUNK = 1 << 16
_ESCAPE_FACTOR = 5  # the longest HTML escape: '&' -> '&amp;'
_CASE_FACTOR = 3  # str.upper() and friends can turn one character into three ('ß' -> 'SS')
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_NON_ASCII_HEADER = sys.getsizeof("é") - 2  # see char_width
_FORMATTER = Formatter()
_FORMAT_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?(?P<type>[a-zA-Z%])?",
    re.S,
)

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


# -- how long a value's text is ------------------------------------------------------------------


class _Sizer:
    """Upper bounds on ``len(str(value))`` and ``len(repr(value))`` (which also bounds
    ``json.dumps``), worked out without building either. Shared sub-values are sized once; the
    walk stops as soon as the total passes the per-value limit."""

    def __init__(self, ascii_only: bool = False) -> None:
        self.ascii_only = ascii_only
        self._sizes: dict[int, int] = {}
        self._open: set[int] = set()

    def text(self, value: Any) -> int:
        if isinstance(value, str):
            return len(value)
        if isinstance(value, Undefined):
            return 0
        return self.literal(value, 0)

    def literal(self, value: Any, depth: int) -> int:
        if isinstance(value, str):
            return self._quoted(value) + (10 if isinstance(value, Markup) else 0)
        if value is None or isinstance(value, bool):
            return 5
        if isinstance(value, int):
            return _int_chars(value)
        if isinstance(value, float):
            return 24
        if isinstance(value, bytes | bytearray):
            return 4 * len(value) + 14
        if isinstance(value, Namespace):
            attrs = value._Namespace__attrs  # type: ignore[attr-defined]
            return 13 + self._container(attrs, depth)
        if isinstance(value, list | tuple | set | frozenset | dict):
            return self._container(value, depth)
        if type(value).__name__ in ("dict_keys", "dict_values", "dict_items"):
            return 14 + self._container(value, depth)
        return 128

    def _container(self, value: Any, depth: int) -> int:
        key = id(value)
        if key in self._sizes:
            return self._sizes[key]
        if key in self._open:
            return 5  # Python prints a cycle as [...]
        if depth >= MAX_NESTING:
            raise RenderLimitExceeded(f"the value is nested deeper than {MAX_NESTING} levels")
        self._open.add(key)
        total = 12
        if isinstance(value, dict):
            for item_key, item in value.items():
                total += self.literal(item_key, depth + 1) + self.literal(item, depth + 1) + 6
                if total > MAX_VALUE_CHARS:
                    break
        else:
            for item in value:
                total += self.literal(item, depth + 1) + 2
                if total > MAX_VALUE_CHARS:
                    break
        self._open.discard(key)
        self._sizes[key] = total
        return total

    def _quoted(self, text: str) -> int:
        if text.isascii() and text.isprintable():
            return len(text) + 2 + text.count("\\") + text.count("'") + text.count('"')
        # repr and json escape control and (repr) unprintable characters differently: measure
        # both, a chunk at a time so the measuring copies stay small.
        total = 2 + text.count("'")
        for start in range(0, len(text), _CHUNK):
            piece = text[start : start + _CHUNK]
            shown = ascii(piece) if self.ascii_only else repr(piece)
            encoded = json.dumps(piece, ensure_ascii=self.ascii_only)
            total += max(len(shown), len(encoded)) - 2
            if total > MAX_VALUE_CHARS:
                break
        return total


def text_size(value: Any) -> int:
    """An upper bound on ``len(str(value))``."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int | float) or value is None:
        return 24 if isinstance(value, float | bool) or value is None else _int_chars(value)
    return _Sizer().text(value)


def _int_chars(value: int) -> int:
    return value.bit_length() * 31 // 100 + 2  # log10(2) < 0.31, and a sign


def literal_size(value: Any, *, ascii_only: bool = False) -> int:
    """An upper bound on ``len(repr(value))`` and on ``len(json.dumps(value))``."""
    return _Sizer(ascii_only).literal(value, 0)


def escaped_size(text: str) -> int:
    """``len(markupsafe.escape(text))``."""
    quotes = text.count("&") + text.count('"') + text.count("'")
    return len(text) + 4 * quotes + 3 * (text.count("<") + text.count(">"))


def line_breaks(text: str) -> int:
    """How many places ``str.splitlines`` splits ``text`` at (at most)."""
    if text.isascii() and text.isprintable():
        return 0
    return sum(text.count(mark) for mark in _LINE_BREAKS)


def _number_chars(value: Any, kind: str | None, precision: int | None) -> int:
    """How long ``value`` formatted as a number of type ``kind`` can be."""
    extra = precision or 0
    if isinstance(value, int) and kind in (None, "", "d", "i", "u", "n", "b", "o", "x", "X", "c"):
        bits = value.bit_length()
        digits = {"b": bits, "o": bits // 3 + 1, "x": bits // 4 + 1, "X": bits // 4 + 1}
        # digits, sign, base prefix, and a separator every three digits
        return (digits.get(kind or "", bits * 31 // 100 + 1) + 4) * 4 // 3 + extra
    if isinstance(value, int | float):
        return 450 + (6 if precision is None else precision)  # 1e308 in full, grouped
    return 0


# -- printf-style formatting: 'x' % y, the format filter -----------------------------------------


def printf_size(fmt: str, args: Any) -> int:
    """An upper bound on ``len(fmt % args)``, or on what Python builds before it raises."""
    positional = list(args) if isinstance(args, tuple) else [args]
    mapping = args if hasattr(args, "__getitem__") and not isinstance(args, tuple | str) else None
    size, pos, index = 0, 0, 0
    while True:
        at = fmt.find("%", pos)
        if at < 0:
            return size + len(fmt) - pos
        size += at - pos
        spec = _parse_printf(fmt, at + 1)
        if spec is None:
            return size  # Python raises here
        key, width, precision, kind, pos = spec
        if kind == "%":
            size += 1
            continue
        if width == "*":
            if index >= len(positional) or not isinstance(positional[index], int):
                return size
            width, index = abs(positional[index]), index + 1
        if precision == "*":
            if index >= len(positional) or not isinstance(positional[index], int):
                return size
            precision, index = max(positional[index], 0), index + 1
        if key is not None:
            if mapping is None:
                return size
            try:
                value = mapping[key]
            except (LookupError, TypeError):
                return size
        elif index < len(positional):
            value = positional[index]
            index += 1
        else:
            return size
        size += max(width or 0, _printf_field_size(value, kind, precision))


def _printf_field_size(value: Any, kind: str, precision: int | None) -> int:
    if kind == "s":
        chars = text_size(value)
    elif kind in "ra":
        chars = literal_size(value, ascii_only=kind == "a")
    elif kind == "c":
        return 1
    else:
        return _number_chars(value, "d" if kind in "iu" else kind, precision)
    return chars if precision is None else min(chars, precision)


def _parse_printf(fmt: str, i: int) -> tuple[str | None, Any, Any, str, int] | None:
    """(key, width, precision, type, end) of the conversion after a '%', as CPython parses it;
    None where CPython raises."""
    end = len(fmt)
    key = None
    if i < end and fmt[i] == "(":
        depth, j = 1, i + 1
        while j < end and depth:
            depth += {"(": 1, ")": -1}.get(fmt[j], 0)
            j += 1
        if depth:
            return None
        key, i = fmt[i + 1 : j - 1], j
    while i < end and fmt[i] in "-+ #0":
        i += 1
    width, i = _printf_number(fmt, i)
    precision = None
    if i < end and fmt[i] == ".":
        precision, i = _printf_number(fmt, i + 1)
        precision = 0 if precision is None else precision
    if i < end and fmt[i] in "hlL":
        i += 1
    if i >= end or fmt[i] not in "diouxXeEfFgGcrsa%":
        return None
    if width == -1 or precision == -1:
        return None
    return key, width, precision, fmt[i], i + 1


def _printf_number(fmt: str, i: int) -> tuple[Any, int]:
    if i < len(fmt) and fmt[i] == "*":
        return "*", i + 1
    j = i
    while j < len(fmt) and fmt[j].isdigit():
        j += 1
    if j == i:
        return None, i
    return (int(fmt[i:j]) if j - i < 20 else -1), j  # -1: CPython says "width too big"


# -- str.format ----------------------------------------------------------------------------------


def format_size(template: str, args: tuple, kwargs: Mapping[str, Any], formatter: Any) -> int:
    """An upper bound on ``template.format(*args, **kwargs)`` through the sandbox's
    ``formatter``, or on what it builds before it raises. Fields are looked up with the
    formatter, so the sandbox's attribute rules hold here too."""
    size, _ = _format_size(template, args, kwargs, formatter, 2, 0)
    return size


def _format_size(
    template: str, args: tuple, kwargs: Mapping[str, Any], formatter: Any, depth: int, auto: Any
) -> tuple[int, Any]:
    # Follows string.Formatter._vformat step by step, so it stops where that raises.
    size = 0
    if depth < 0:
        return size, auto
    try:
        for literal, field_name, spec, conversion in _FORMATTER.parse(template):
            size += len(literal)
            if field_name is None:
                continue
            if field_name == "":
                if auto is False:
                    return size, auto
                field_name, auto = str(auto), auto + 1
            elif field_name.isdigit():
                if auto:
                    return size, auto
                auto = False
            try:
                value = formatter.get_field(field_name, args, kwargs)[0]
            except (LookupError, AttributeError, TypeError, ValueError):
                return size, auto
            if "{" in spec:
                spec_size, _ = _format_size(spec, args, kwargs, formatter, depth - 1, auto)
                if spec_size > 100:  # no valid spec is that long: Python builds it, then raises
                    return size + spec_size, auto
                spec, auto = formatter._vformat(spec, args, kwargs, set(), depth - 1, auto)
            field_size = _format_field_size(value, conversion, spec)
            if field_size is None:
                return size, auto
            size += field_size
    except ValueError:
        pass
    return size, auto


def _format_field_size(value: Any, conversion: str | None, spec: str) -> int | None:
    """How long one replacement field can be; None where Python raises."""
    text_chars: int | None = None  # set when the field formats a str
    if conversion == "s":
        text_chars = text_size(value)
    elif conversion in ("r", "a"):
        text_chars = literal_size(value, ascii_only=conversion == "a")
    elif isinstance(value, str):
        text_chars = len(value)
    elif not spec:
        return text_size(value)
    elif not isinstance(value, int | float):
        return None  # object.__format__ refuses a non-empty spec
    match = _FORMAT_SPEC.fullmatch(spec)
    if match is None:  # a spec Python will refuse; bound it by any width it spells out
        widths = [int(run) for run in re.findall(r"\d{1,19}", spec)]
        content = text_chars if text_chars is not None else _number_chars(value, "f", 0)
        return max([*widths, 0]) + content
    width = int(match["width"] or 0)
    precision = int(match["precision"]) if match["precision"] else None
    if text_chars is not None:
        content = text_chars if precision is None else min(text_chars, precision)
    else:
        content = _number_chars(value, match["type"], precision)
    return max(width, content)


def replace_size(text: str, old: str, new: str, count: Any = -1) -> int:
    """``len(text.replace(old, new, count))``, counted rather than built."""
    hits = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


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
            chars = (len(left) + len(right)) * (_ESCAPE_FACTOR if escaped else 1)
            return text_cost(what, chars, widest((left, right)))
        if isinstance(left, bytes) and isinstance(right, bytes):
            return text_cost(what, len(left) + len(right))
        if isinstance(left, list | tuple) and isinstance(right, list | tuple):
            return items_cost(what, len(left) + len(right))
    elif operator == "%":
        if isinstance(left, str):
            factor = _ESCAPE_FACTOR if isinstance(left, Markup) else 1
            return text_cost(what, printf_size(left, right) * factor, 4)
        if isinstance(left, bytes):
            return text_cost(what, printf_size(left.decode("latin-1"), right))
    elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
        refuse_big_int(what, max(right, 0) * left.bit_length())
    return OBJECT_BYTES


def concat_cost(values: Iterable[Any], *, escaped: bool) -> int:
    """The bytes ``a ~ b ~ ...`` builds: each operand's text (escaped, in autoescape blocks)."""
    sizer = _Sizer()
    chars = sum(sizer.text(value) for value in values)
    return text_cost("the ~ operator", chars * (_ESCAPE_FACTOR if escaped else 1), widest(values))


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
        chars = escaped_size(value) if isinstance(value, str) else _ESCAPE_FACTOR * text_size(value)
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


# -- filters -------------------------------------------------------------------------------------


FilterGuard = Callable[[dict[str, Any], Any], int]
"""Checks one filter call's bound arguments (and may swap an iterator for a list); returns the
bytes its result may take. Also gets what Jinja passes the filter first, if anything (its
context, eval context or environment)."""


def environment_of(passed: Any) -> Any:
    """The environment, from what Jinja passes a filter first."""
    eval_ctx = getattr(passed, "eval_ctx", passed)
    return getattr(eval_ctx, "environment", eval_ctx)


def is_escaping(passed: Any) -> bool:
    """Whether output is being HTML-escaped (``{% autoescape true %}``), from the same."""
    autoescape = getattr(getattr(passed, "eval_ctx", passed), "autoescape", False)
    return autoescape is True


def _text_arg(arguments: dict[str, Any], name: str, what: str) -> str:
    """The argument as the str the filter makes of it (``str()``), refused first if too long."""
    value = arguments.get(name, "")
    if isinstance(value, str):
        return value
    text_cost(what, text_size(value))
    arguments[name] = text = str(value)
    return text


def _mapped(values: Iterable[Any], getter: Callable[[Any], Any], what: str) -> list[Any]:
    """``[getter(v) for v in values]``: what ``attribute=`` makes of a filter's input."""
    return built(what, items_cost(what, count_of(values)), lambda: [getter(v) for v in values])


def _reversible(value: Any) -> bool:
    try:
        reversed(value)
    except TypeError:
        return False
    return True


def _guard_center(a: dict[str, Any], passed: Any) -> int:
    text = _text_arg(a, "value", "the center filter")
    width = as_int(a.get("width", 80)) or 0
    return text_cost("the center filter", max(len(text), width), char_width(text))


def _guard_indent(a: dict[str, Any], passed: Any) -> int:
    what = "the indent filter"
    text = a.get("s")
    if not isinstance(text, str):
        return OBJECT_BYTES  # the filter raises
    width = a.get("width", 4)
    indention = len(width) if isinstance(width, str) else as_int(width) or 0
    text_cost(what, indention)
    lines = line_breaks(text) + 2
    chars = len(text) + 1 + lines * indention
    return 2 * text_cost(what, chars, 4) + items_cost(what, lines, STR_BYTES)


def _guard_format(a: dict[str, Any], passed: Any) -> int:
    text = _text_arg(a, "value", "the format filter")
    values = a.get("kwargs") or a.get("args", ())
    return text_cost("the format filter", printf_size(text, values), 4)


def _guard_replace(a: dict[str, Any], passed: Any) -> int:
    what = "the replace filter"
    text, old, new = (_text_arg(a, name, what) for name in ("s", "old", "new"))
    count = a.get("count")
    size = replace_size(text, old, new, -1 if count is None else count)
    factor = _ESCAPE_FACTOR if is_escaping(passed) else 1
    return text_cost(what, size * factor, widest((text, new)))


def _guard_join(a: dict[str, Any], passed: Any) -> int:
    what = "the join filter"
    separator = a.get("d", "")
    value = a.get("value")
    if isinstance(value, str):
        pieces = len(value)
        chars = len(value)
    else:
        value = sequence_arg(a, "value", what)
        if a.get("attribute") is not None:
            getter = make_attrgetter(environment_of(passed), a["attribute"])
            value = a["value"] = _mapped(value, getter, what)
            a["attribute"] = None
        if not isinstance(value, Iterable):
            return OBJECT_BYTES  # the filter raises
        sizer = _Sizer()
        pieces = chars = 0
        for item in value:
            pieces += 1
            chars += sizer.text(item)
            if chars > MAX_VALUE_CHARS:
                break
    chars += max(pieces - 1, 0) * text_size(separator)
    factor = _ESCAPE_FACTOR if is_escaping(passed) else 1
    return text_cost(what, chars * factor, 4) + items_cost(what, pieces, STR_BYTES)


def _guard_list(a: dict[str, Any], passed: Any) -> int:
    value = sequence_arg(a, "value", "the list filter")
    return items_cost("the list filter", count_of(value))


def _collection_guard(name: str, value_arg: str, key_arg: str | None = None) -> FilterGuard:
    """Filters that copy their input into a list (sort, groupby...): one slot per item, plus the
    lower-cased copy of each str key they hold while comparing case-insensitively."""
    what = f"the {name} filter"

    def guard(a: dict[str, Any], passed: Any) -> int:
        value = sequence_arg(a, value_arg, what)
        cost = items_cost(what, count_of(value), 2 * SLOT_BYTES + OBJECT_BYTES)
        if a.get("case_sensitive") or not isinstance(value, Iterable):
            return cost
        if isinstance(value, Mapping):
            keys: Iterable[Any] = value.values() if a.get("by") == "value" else value.keys()
        elif key_arg is not None and a.get(key_arg) is not None:
            getter = make_attrgetter(environment_of(passed), a[key_arg])
            keys = (getter(item) for item in value)
        else:
            keys = value
        key_chars = sum(len(key) * char_width(key) for key in keys if isinstance(key, str))
        reserve(cost + key_chars, what)
        return cost

    return guard


def _guard_reverse(a: dict[str, Any], passed: Any) -> int:
    what = "the reverse filter"
    value = a.get("value")
    if isinstance(value, str):
        return text_cost(what, len(value), char_width(value))
    if _reversible(value) or not isinstance(value, Iterable):
        return OBJECT_BYTES  # a reverse iterator: nothing is copied
    # The filter copies the rest into a list; it still gets an iterator, so it returns a list
    # (not a reverse iterator) as it would have.
    items = materialize(value, what)
    a["value"] = iter(items)
    return items_cost(what, len(items))


def _guard_batch(a: dict[str, Any], passed: Any) -> int:
    what = "the batch filter"
    value = sequence_arg(a, "value", what)
    linecount = as_int(a.get("linecount")) or 1
    padding = max(linecount, 0) if a.get("fill_with") is not None else 0
    count = count_of(value)
    batches = count // max(linecount, 1) + 1
    return items_cost(what, count + padding) + items_cost(what, batches, OBJECT_BYTES)


def _guard_slice(a: dict[str, Any], passed: Any) -> int:
    what = "the slice filter"
    value = sequence_arg(a, "value", what)
    slices = max(as_int(a.get("slices")) or 0, 0)
    return items_cost(what, count_of(value) * 2 + slices) + items_cost(what, slices, OBJECT_BYTES)


def _guard_sum(a: dict[str, Any], passed: Any) -> int:
    what = "the sum filter"
    start = a.get("start", 0)
    if not isinstance(start, list | tuple):
        return OBJECT_BYTES
    values = sequence_arg(a, "iterable", what)
    if not isinstance(values, Iterable):
        return OBJECT_BYTES
    if a.get("attribute") is not None:
        getter = make_attrgetter(environment_of(passed), a["attribute"])
        values = a["iterable"] = _mapped(values, getter, what)
        a["attribute"] = None
    count = len(start) + sum(count_of(item) for item in values)
    return 2 * items_cost(what, count)  # each step of sum() builds a new list


def _text_guard(name: str, arg: str, grow: Callable[[str], int], pieces: Callable[[str], int]):
    """Filters whose result is ``grow(text)`` characters long and that may hold
    ``pieces(text)`` intermediate strings while working."""
    what = f"the {name} filter"

    def guard(a: dict[str, Any], passed: Any) -> int:
        text = _text_arg(a, arg, what)
        cost = text_cost(what, grow(text), 1 if text.isascii() else 4)
        return cost + items_cost(what, pieces(text), STR_BYTES)

    return guard


def _same(text: str) -> int:
    return len(text)


def _case(text: str) -> int:
    return len(text) if text.isascii() else _CASE_FACTOR * len(text)


def _none(text: str) -> int:
    return 0


def _words(text: str) -> int:
    """At most how many words or whitespace runs ``text`` splits into."""
    if not text.isascii():
        return len(text) + 1
    return 2 * (sum(text.count(c) for c in " \t\n\r\x0b\x0c-([{<") + 1)


def _guard_truncate(a: dict[str, Any], passed: Any) -> int:
    text, end = a.get("s"), a.get("end", "...")
    if not isinstance(text, str) or not isinstance(end, str):
        return OBJECT_BYTES
    length = as_int(a.get("length", 255)) or 0
    return text_cost("the truncate filter", min(len(text), max(length, 0)) + len(end), 4)


def _guard_urlencode(a: dict[str, Any], passed: Any) -> int:
    value = a.get("value")
    if isinstance(value, str):
        chars = len(value)
    elif isinstance(value, Mapping):
        chars = sum(text_size(key) + text_size(item) + 2 for key, item in value.items())
    else:
        value = sequence_arg(a, "value", "the urlencode filter")
        pairs = value if isinstance(value, Iterable) else ()
        chars = sum(literal_size(pair) for pair in pairs)
    return text_cost("the urlencode filter", 12 * chars)  # 4 UTF-8 bytes a char, %XX each


def _guard_urlize(a: dict[str, Any], passed: Any) -> int:
    what = "the urlize filter"
    text = _text_arg(a, "value", what)
    extra = sum(text_size(a.get(name) or "") for name in ("target", "rel")) + 64
    chars = 11 * len(text) + _words(text) * extra
    reserve(PER_CHAR_OBJECT_BYTES * (len(text) + 1), what)
    return text_cost(what, chars, 4)


def _guard_wordwrap(a: dict[str, Any], passed: Any) -> int:
    what = "the wordwrap filter"
    text = a.get("s")
    if not isinstance(text, str):
        return OBJECT_BYTES  # the filter raises
    wrap = a.get("wrapstring") or environment_of(passed).newline_sequence
    width = max(as_int(a.get("width", 79)) or 1, 1)
    paragraphs = line_breaks(text) + 1
    # two consecutive wrapped lines hold more than `width` characters between them
    lines = min(len(text) + 1, 2 * len(text) // width + 2 * paragraphs) + paragraphs
    reserve(PER_CHAR_OBJECT_BYTES * (len(text) + 1), what)
    return text_cost(what, len(text) + lines * text_size(wrap), 4)


def _guard_wordcount(a: dict[str, Any], passed: Any) -> int:
    what = "the wordcount filter"
    text = _text_arg(a, "s", what)
    reserve(items_cost(what, len(text) // 2 + 1, STR_BYTES), what)  # the list of words
    return OBJECT_BYTES


def _guard_escape(name: str, arg: str) -> FilterGuard:
    what = f"the {name} filter"

    def guard(a: dict[str, Any], passed: Any) -> int:
        text = _text_arg(a, arg, what)
        return text_cost(what, escaped_size(text), char_width(text))

    return guard


def _guard_xmlattr(a: dict[str, Any], passed: Any) -> int:
    value = a.get("d")
    if not isinstance(value, Mapping):
        return OBJECT_BYTES
    chars = sum(_ESCAPE_FACTOR * (text_size(k) + text_size(v)) + 4 for k, v in value.items())
    return text_cost("the xmlattr filter", chars + 1, 4)


def _guard_round(a: dict[str, Any], passed: Any) -> int:
    precision = as_int(a.get("precision", 0)) or 0
    if a.get("method", "common") != "common":  # these compute value * 10**precision
        refuse_big_int("the round filter's precision", abs(precision) * 4)
    return OBJECT_BYTES


def _guard_string(a: dict[str, Any], passed: Any) -> int:
    value = a.get("s", a.get("value"))
    return text_cost("the string filter", text_size(value), char_width(value))


FILTER_GUARDS: dict[str, FilterGuard] = {
    "batch": _guard_batch,
    "capitalize": _text_guard("capitalize", "s", _case, _none),
    "center": _guard_center,
    "dictsort": _collection_guard("dictsort", "value"),
    "e": _guard_escape("e", "s"),
    "escape": _guard_escape("escape", "s"),
    "forceescape": _guard_escape("forceescape", "value"),
    "format": _guard_format,
    "groupby": _collection_guard("groupby", "value", "attribute"),
    "indent": _guard_indent,
    "join": _guard_join,
    "list": _guard_list,
    "lower": _text_guard("lower", "s", _case, _none),
    "max": _collection_guard("max", "value", "attribute"),
    "min": _collection_guard("min", "value", "attribute"),
    "replace": _guard_replace,
    "reverse": _guard_reverse,
    "round": _guard_round,
    "safe": _text_guard("safe", "value", _same, _none),
    "slice": _guard_slice,
    "sort": _collection_guard("sort", "value", "attribute"),
    "string": _guard_string,
    "striptags": _text_guard("striptags", "value", lambda t: 3 * len(t), _words),
    "sum": _guard_sum,
    "title": _text_guard("title", "s", _case, _words),
    "trim": _text_guard("trim", "value", _same, _none),
    "truncate": _guard_truncate,
    "unique": _collection_guard("unique", "value", "attribute"),
    "upper": _text_guard("upper", "s", _case, _none),
    "urlencode": _guard_urlencode,
    "urlize": _guard_urlize,
    "wordcount": _guard_wordcount,
    "wordwrap": _guard_wordwrap,
    "xmlattr": _guard_xmlattr,
}

LIST_YIELDING_FILTERS = frozenset({"batch", "slice"})


def tracked_lists(lists: Iterable[list[Any]], what: str) -> Iterator[list[Any]]:
    """Charges each list a batch/slice generator yields before handing it on."""
    for item in lists:
        yield built(what, items_cost(what, len(item)), lambda item=item: item)


# -- str methods and other calls -----------------------------------------------------------------


def _arg(args: tuple, kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def call_cost(
    target: Any, args: tuple, kwargs: dict[str, Any], formatter: Any
) -> tuple[int, tuple]:
    """The bytes calling ``target`` may build (refusing what passes a limit), and the arguments
    to call it with (an iterator ``join`` or ``fromkeys`` is given becomes a list first)."""
    owner = getattr(target, "__self__", None)
    name = getattr(target, "__name__", "")
    if isinstance(owner, str | bytes):
        guard = _TEXT_METHODS.get(name)
        if guard is not None:
            what = f"{type(owner).__name__}.{name}()"
            cost, args = guard(owner, args, kwargs, formatter, what)
            return cost * (_ESCAPE_FACTOR if isinstance(owner, Markup) else 1), args
        return OBJECT_BYTES, args
    qualname = getattr(target, "__qualname__", "")
    if target is dict or qualname == "dict.fromkeys":
        return _dict_cost(args, kwargs, f"{qualname}()")
    if qualname in ("str.maketrans", "bytes.maketrans"):
        sizes = [count_of(arg) for arg in args]
        return items_cost(f"{qualname}()", sum(sizes), DICT_ENTRY_BYTES), args
    if isinstance(owner, list | tuple | dict) and name == "copy":
        per_item = DICT_ENTRY_BYTES if isinstance(owner, dict) else SLOT_BYTES
        return items_cost(f"{type(owner).__name__}.copy()", len(owner), per_item), args
    if isinstance(owner, int) and name == "to_bytes":
        length = as_int(_arg(args, kwargs, 0, "length", 1)) or 0
        return text_cost("int.to_bytes()", length), args
    if owner is int and name == "from_bytes":
        refuse_big_int("int.from_bytes()", 8 * count_of(_arg(args, kwargs, 0, "bytes", b"")))
    return OBJECT_BYTES, args


def _dict_cost(args: tuple, kwargs: dict[str, Any], what: str) -> tuple[int, tuple]:
    """``dict(...)`` and ``dict.fromkeys(...)``: an entry per item of the first argument."""
    if args and not is_sized(args[0]) and isinstance(args[0], Iterable):
        args = (materialize(args[0], what), *args[1:])
    count = (count_of(args[0]) if args else 0) + len(kwargs)
    return items_cost(what, count, DICT_ENTRY_BYTES), args


TextMethodGuard = Callable[[Any, tuple, dict[str, Any], Any, str], tuple[int, tuple]]


def _padding(text: Any, args: tuple, kwargs: dict, formatter: Any, what: str) -> tuple[int, tuple]:
    width = as_int(_arg(args, kwargs, 0, "width", 0)) or 0
    fill = _arg(args, kwargs, 1, "fillchar", " ")
    return text_cost(what, max(len(text), width), widest((text, fill))), args


def _expandtabs(
    text: Any, args: tuple, kwargs: dict, formatter: Any, what: str
) -> tuple[int, tuple]:
    tabsize = as_int(_arg(args, kwargs, 0, "tabsize", 8)) or 0
    tab = "\t" if isinstance(text, str) else b"\t"
    return text_cost(what, len(text) + text.count(tab) * max(tabsize, 0), char_width(text)), args


def _replace(text: Any, args: tuple, kwargs: dict, formatter: Any, what: str) -> tuple[int, tuple]:
    if len(args) < 2 or not all(isinstance(arg, type(text)) for arg in args[:2]):
        return OBJECT_BYTES, args  # Python raises
    count = _arg(args, kwargs, 2, "count", -1)
    size = replace_size(text, args[0], args[1], count)  # type: ignore[arg-type]
    return text_cost(what, size, widest((text, args[1]))), args


def _join(text: Any, args: tuple, kwargs: dict, formatter: Any, what: str) -> tuple[int, tuple]:
    if not args:
        return OBJECT_BYTES, args
    items = args[0]
    if not is_sized(items) and isinstance(items, Iterable):
        items = materialize(items, what)
        args = (items, *args[1:])
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        count, chars = count_of(items), count_of(items)
    else:
        count = chars = 0
        for item in items:
            count += 1
            chars += count_of(item)
            if chars > MAX_VALUE_CHARS:
                break
    chars += max(count - 1, 0) * len(text)
    return text_cost(what, chars, 4), args


def _format(text: Any, args: tuple, kwargs: dict, formatter: Any, what: str) -> tuple[int, tuple]:
    return text_cost(what, format_size(text, args, kwargs, formatter), 4), args


def _format_map(
    text: Any, args: tuple, kwargs: dict, formatter: Any, what: str
) -> tuple[int, tuple]:
    mapping = args[0] if len(args) == 1 and not kwargs else {}
    return text_cost(what, format_size(text, (), mapping, formatter), 4), args


def _scaled(factor: Callable[[Any], int]) -> TextMethodGuard:
    def guard(text: Any, args: tuple, kwargs: dict, formatter: Any, what: str) -> tuple[int, tuple]:
        return text_cost(what, factor(text), 4), args

    return guard


def _split(text: Any, args: tuple, kwargs: dict, formatter: Any, what: str) -> tuple[int, tuple]:
    sep = _arg(args, kwargs, 0, "sep", None)
    maxsplit = as_int(_arg(args, kwargs, 1, "maxsplit", -1))
    if what.endswith("splitlines()"):
        pieces, maxsplit = count_of(text) + 1, None
        if isinstance(text, str):
            pieces = line_breaks(text) + 1
    elif isinstance(sep, type(text)) and sep:
        pieces = text.count(sep) + 1
    else:
        pieces = len(text) // 2 + 1
    if maxsplit is not None and maxsplit >= 0:
        pieces = min(pieces, maxsplit + 1)
    return items_cost(what, pieces, STR_BYTES + SLOT_BYTES) + len(text) * char_width(text), args


def _translate(
    text: Any, args: tuple, kwargs: dict, formatter: Any, what: str
) -> tuple[int, tuple]:
    table = args[0] if args else None
    values: Iterable[Any] = table.values() if isinstance(table, Mapping) else (table or ())
    if isinstance(table, str | bytes):
        values = ()
    longest = max((count_of(v) for v in values if isinstance(v, str | bytes)), default=1)
    return text_cost(what, len(text) * max(longest, 1), 4), args


_TEXT_METHODS: dict[str, TextMethodGuard] = {
    "center": _padding,
    "ljust": _padding,
    "rjust": _padding,
    "zfill": _padding,
    "expandtabs": _expandtabs,
    "replace": _replace,
    "join": _join,
    "format": _format,
    "format_map": _format_map,
    "upper": _scaled(_case),
    "lower": _scaled(_case),
    "casefold": _scaled(_case),
    "swapcase": _scaled(_case),
    "title": _scaled(_case),
    "capitalize": _scaled(_case),
    "encode": _scaled(lambda text: 10 * len(text) + 8),
    "decode": _scaled(len),
    "hex": _scaled(lambda text: 3 * len(text)),
    "strip": _scaled(len),
    "lstrip": _scaled(len),
    "rstrip": _scaled(len),
    "removeprefix": _scaled(len),
    "removesuffix": _scaled(len),
    "partition": _scaled(len),
    "rpartition": _scaled(len),
    "split": _split,
    "rsplit": _split,
    "splitlines": _split,
    "translate": _translate,
}


def guarded_range(*args: Any) -> range:
    """``range()`` with Jinja's sandbox limit, refused with the sandbox's error."""
    numbers = range(*args)
    try:
        count = len(numbers)
    except OverflowError:
        count = MAX_RANGE + 1
    if count > MAX_RANGE:
        raise RenderLimitExceeded(f"range() would exceed {MAX_RANGE} items (it would make {count})")
    return numbers


def lipsum_cost(n: Any = 5, html: Any = True, min: Any = 20, max: Any = 100) -> int:
    """The bytes ``lipsum(n, html, min, max)`` may build: n paragraphs of up to ``max`` words."""
    paragraphs = as_int(n) or 0
    words = as_int(max) or 0
    items_cost("lipsum()", paragraphs * words, 0)
    return text_cost("lipsum()", paragraphs * (16 * words + 16))
