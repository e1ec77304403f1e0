"""The size guards of calls: ``call_cost`` sizes a str or bytes method (``join``, ``format``,
``replace``, ``split``...) and the few other calls that can build much (``dict()``,
``dict.fromkeys``, ``maketrans``, ``copy``, ``int.to_bytes``/``from_bytes``) before they run;
``guarded_range`` and ``lipsum_cost`` bound the ``range()`` and ``lipsum()`` globals."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from markupsafe import Markup

from app.chat.limits.budget import (
    DICT_ENTRY_BYTES,
    ESCAPE_FACTOR,
    MAX_RANGE,
    MAX_VALUE_CHARS,
    OBJECT_BYTES,
    SLOT_BYTES,
    STR_BYTES,
    RenderLimitExceeded,
    as_int,
    char_width,
    items_cost,
    refuse_big_int,
    text_cost,
    widest,
)
from app.chat.limits.sizes import case, format_size, line_breaks, replace_size
from app.chat.limits.values import count_of, is_sized, materialize

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
            return cost * (ESCAPE_FACTOR if isinstance(owner, Markup) else 1), args
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
    "upper": _scaled(case),
    "lower": _scaled(case),
    "casefold": _scaled(case),
    "swapcase": _scaled(case),
    "title": _scaled(case),
    "capitalize": _scaled(case),
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
