"""How long a value's text is, worked out without building it: upper bounds on
``len(str(value))`` and ``len(repr(value))`` (``Sizer``, ``text_size``, ``literal_size``), on
escaped, case-changed and number text, on printf-style formatting (``printf_size``), on
``str.format`` (``format_size``) and on ``str.replace`` (``replace_size``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from string import Formatter
from typing import Any

from jinja2.runtime import Undefined
from jinja2.utils import Namespace
from markupsafe import Markup

from app.chat.limits.budget import MAX_NESTING, MAX_VALUE_CHARS, RenderLimitExceeded

_CHUNK = 1 << 16
_CASE_FACTOR = 3  # str.upper() and friends can turn one character into three ('ß' -> 'SS')
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_FORMATTER = Formatter()
_FORMAT_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?(?P<type>[a-zA-Z%])?",
    re.S,
)


# -- how long a value's text is ------------------------------------------------------------------


class Sizer:
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
    return Sizer().text(value)


def _int_chars(value: int) -> int:
    return value.bit_length() * 31 // 100 + 2  # log10(2) < 0.31, and a sign


def literal_size(value: Any, *, ascii_only: bool = False) -> int:
    """An upper bound on ``len(repr(value))`` and on ``len(json.dumps(value))``."""
    return Sizer(ascii_only).literal(value, 0)


def escaped_size(text: str) -> int:
    """``len(markupsafe.escape(text))``."""
    quotes = text.count("&") + text.count('"') + text.count("'")
    return len(text) + 4 * quotes + 3 * (text.count("<") + text.count(">"))


def line_breaks(text: str) -> int:
    """How many places ``str.splitlines`` splits ``text`` at (at most)."""
    if text.isascii() and text.isprintable():
        return 0
    return sum(text.count(mark) for mark in _LINE_BREAKS)


def case(text: str) -> int:
    return len(text) if text.isascii() else _CASE_FACTOR * len(text)


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
