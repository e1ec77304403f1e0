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

The package, one concern a module (each importing only those above it):

- ``budget``: the limits and byte costs, the errors, the per-render ``RenderBudget`` and the
  per-value limits (``text_cost``, ``items_cost``...);
- ``sizes``: how long a value's text is (``text_size``, ``literal_size``...), printf-style
  formatting, ``str.format`` and ``str.replace``;
- ``values``: collections and operators (``materialize``, ``binop_cost``, ``joined``,
  ``CountedIterable``...);
- ``filters``: the filter guards (``FILTER_GUARDS``, ``tracked_lists``);
- ``calls``: str methods and other calls (``call_cost``, ``guarded_range``, ``lipsum_cost``).

Everything public is re-exported here, so ``limits.X`` works. The limits are read where they are
used, in their own modules: to change one (in a test, say), patch it on ``limits.budget``, not on
this package.
"""

from app.chat.limits.budget import (
    DICT_ENTRY_BYTES,
    ESCAPE_FACTOR,
    MAX_COMPILE_BYTES,
    MAX_INT_BITS,
    MAX_LOOP_ITERATIONS,
    MAX_NESTING,
    MAX_RANGE,
    MAX_RENDER_BYTES,
    MAX_VALUE_CHARS,
    MAX_VALUE_ITEMS,
    OBJECT_BYTES,
    PER_CHAR_OBJECT_BYTES,
    SLOT_BYTES,
    STR_BYTES,
    RenderBudget,
    RenderLimitExceeded,
    TemplateError,
    as_int,
    built,
    char_width,
    count_iterations,
    items_cost,
    refuse_big_int,
    render_budget,
    reserve,
    text_cost,
    track,
    widest,
)
from app.chat.limits.calls import TextMethodGuard, call_cost, guarded_range, lipsum_cost
from app.chat.limits.filters import (
    FILTER_GUARDS,
    LIST_YIELDING_FILTERS,
    FilterGuard,
    environment_of,
    is_escaping,
    tracked_lists,
)
from app.chat.limits.sizes import (
    Sizer,
    case,
    escaped_size,
    format_size,
    line_breaks,
    literal_size,
    printf_size,
    replace_size,
    text_size,
)
from app.chat.limits.values import (
    CappedText,
    CountedIterable,
    binop_cost,
    capped_join,
    concat_cost,
    count_of,
    is_sized,
    joined,
    materialize,
    output_cost,
    pformat,
    sequence_arg,
    slice_cost,
    star_args,
)

__all__ = [
    "DICT_ENTRY_BYTES",
    "ESCAPE_FACTOR",
    "FILTER_GUARDS",
    "LIST_YIELDING_FILTERS",
    "MAX_COMPILE_BYTES",
    "MAX_INT_BITS",
    "MAX_LOOP_ITERATIONS",
    "MAX_NESTING",
    "MAX_RANGE",
    "MAX_RENDER_BYTES",
    "MAX_VALUE_CHARS",
    "MAX_VALUE_ITEMS",
    "OBJECT_BYTES",
    "PER_CHAR_OBJECT_BYTES",
    "SLOT_BYTES",
    "STR_BYTES",
    "CappedText",
    "CountedIterable",
    "FilterGuard",
    "RenderBudget",
    "RenderLimitExceeded",
    "Sizer",
    "TemplateError",
    "TextMethodGuard",
    "as_int",
    "binop_cost",
    "built",
    "call_cost",
    "capped_join",
    "case",
    "char_width",
    "concat_cost",
    "count_iterations",
    "count_of",
    "environment_of",
    "escaped_size",
    "format_size",
    "guarded_range",
    "is_escaping",
    "is_sized",
    "items_cost",
    "joined",
    "line_breaks",
    "lipsum_cost",
    "literal_size",
    "materialize",
    "output_cost",
    "pformat",
    "printf_size",
    "refuse_big_int",
    "render_budget",
    "replace_size",
    "reserve",
    "sequence_arg",
    "slice_cost",
    "star_args",
    "text_cost",
    "text_size",
    "track",
    "tracked_lists",
    "widest",
]
