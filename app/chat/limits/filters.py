"""The size guards of Jinja's filters: ``FILTER_GUARDS`` maps a filter's name to a check of its
bound arguments that refuses a result past a limit and returns the bytes the result may take;
``tracked_lists`` charges the lists the batch and slice filters yield."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from jinja2.filters import make_attrgetter

from app.chat.limits.budget import (
    ESCAPE_FACTOR,
    MAX_VALUE_CHARS,
    OBJECT_BYTES,
    PER_CHAR_OBJECT_BYTES,
    SLOT_BYTES,
    STR_BYTES,
    as_int,
    built,
    char_width,
    items_cost,
    refuse_big_int,
    reserve,
    text_cost,
    widest,
)
from app.chat.limits.sizes import (
    Sizer,
    case,
    escaped_size,
    line_breaks,
    literal_size,
    printf_size,
    replace_size,
    text_size,
)
from app.chat.limits.values import count_of, materialize, sequence_arg

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
    factor = ESCAPE_FACTOR if is_escaping(passed) else 1
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
        sizer = Sizer()
        pieces = chars = 0
        for item in value:
            pieces += 1
            chars += sizer.text(item)
            if chars > MAX_VALUE_CHARS:
                break
    chars += max(pieces - 1, 0) * text_size(separator)
    factor = ESCAPE_FACTOR if is_escaping(passed) else 1
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
    chars = sum(ESCAPE_FACTOR * (text_size(k) + text_size(v)) + 4 for k, v in value.items())
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
    "capitalize": _text_guard("capitalize", "s", case, _none),
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
    "lower": _text_guard("lower", "s", case, _none),
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
    "title": _text_guard("title", "s", case, _words),
    "trim": _text_guard("trim", "value", _same, _none),
    "truncate": _guard_truncate,
    "unique": _collection_guard("unique", "value", "attribute"),
    "upper": _text_guard("upper", "s", case, _none),
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
