"""The chat-template sandbox sizes what a template builds before building it: hostile templates
are refused with bounded memory, and legitimate ones render exactly as plain Jinja renders them."""

from __future__ import annotations

import json
import random
import tracemalloc
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter

from app.base_models import read_chat_template
from app.chat import limits
from app.chat.builtins import BUILTINS
from app.chat.limits import budget as limits_budget
from app.chat.sandbox import (
    GenerationMarkers,
    RenderLimitExceeded,
    TemplateError,
    compile_template,
    render_chat,
    render_with_spans,
)

PEAK_BYTES = 50 * 2**20

MESSAGES = [
    {"role": "system", "content": "You are terse.\nAnswer in one line."},
    {"role": "user", "content": "Hello there, what's 2+2? <b>&</b>"},
    {"role": "assistant", "content": "4 — ça va. 你好 🙂"},
    {"role": "tool", "content": '{"result": 4}'},
    {"role": "user", "content": "thanks\n\tbye"},
    {"role": "assistant", "content": "Bye!"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Adds two numbers",
            "parameters": {"type": "object", "properties": {"a": {"type": "number"}}},
        },
    }
]
TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}

BIG = "{% set big = 'x' * 3000000 %}"
WIDE_LIST = "{% set l = ['x' * 1000] * 10000 %}"

# name: (template, what the refusal says)
ATTACKS: dict[str, tuple[str, str]] = {
    "str times huge": ("{{ 'a' * 10**9 }}", "the \\* operator would exceed 4000000 characters"),
    "huge times str": ("{{ 10**9 * 'a' }}", "the \\* operator would exceed"),
    "list times huge": ("{{ [1] * 10**9 }}", "would exceed 1000000 items"),
    "chained repeats": ("{{ (('a' * 1000) * 1000) * 1000 }}", "the \\* operator would exceed"),
    "messages repeated": ("{{ messages[1].content * 10**6 }}", "the \\* operator would exceed"),
    "star width": ("{{ '%*s' % (10**9, 'a') }}", "the % operator would exceed"),
    "star precision": ("{{ '%.*f' % (10**7, 1.0) }}", "the % operator would exceed"),
    "literal width": ("{{ '%10000000s' % 'a' }}", "the % operator would exceed"),
    "percent s of huge": (BIG + "{{ '%s%s' % (big, big) }}", "the % operator would exceed"),
    "percent s of a list": (WIDE_LIST + "{{ '%s' % (l,) }}", "the % operator would exceed"),
    "mapping key width": ("{{ '%(a)1000000000s' % {'a': 'x'} }}", "the % operator would exceed"),
    "parenthesised key": (
        "{{ '%(a(b))1000000000s' % {'a(b)': 'x'} }}",
        "the % operator would exceed",
    ),
    "format filter": ("{{ '%*s'|format(10**9, 'a') }}", "the format filter would exceed"),
    "str.format width": ("{{ '{:>1000000000}'.format('a') }}", "str.format\\(\\) would exceed"),
    "str.format nested width": ("{{ '{0:{1}}'.format('a', 10**9) }}", "str.format\\(\\) would"),
    "str.format auto nested": ("{{ '{:{}}'.format('a', 10**9) }}", "str.format\\(\\) would"),
    "str.format precision": ("{{ '{:.100000000f}'.format(1.0) }}", "str.format\\(\\) would"),
    "str.format of a list": (WIDE_LIST + "{{ '{}'.format(l) }}", "str.format\\(\\) would"),
    "format_map": ("{{ '{a:>1000000000}'.format_map({'a': 1}) }}", "str.format_map\\(\\) would"),
    "replace filter": (
        "{% set s = 'a' * 100000 %}{{ s|replace('a', 'b' * 1000) }}",
        "the replace filter would exceed",
    ),
    "str.replace": ("{{ ('a' * 100000).replace('a', 'b' * 1000) }}", "str.replace\\(\\) would"),
    "replace empty": ("{{ ('a' * 10000).replace('', 'x' * 1000) }}", "str.replace\\(\\) would"),
    "center filter": ("{{ 'x'|center(10**9) }}", "the center filter would exceed"),
    "str.center": ("{{ 'x'.center(10**9) }}", "str.center\\(\\) would exceed"),
    "str.ljust": ("{{ 'x'.ljust(10**9) }}", "str.ljust\\(\\) would exceed"),
    "str.rjust": ("{{ 'x'.rjust(10**9, '-') }}", "str.rjust\\(\\) would exceed"),
    "str.zfill": ("{{ '1'.zfill(10**9) }}", "str.zfill\\(\\) would exceed"),
    "expandtabs": ("{{ ('\\t' * 100000).expandtabs(1000) }}", "str.expandtabs\\(\\) would"),
    "indent width": ("{{ 'a'|indent(10**9) }}", "the indent filter would exceed"),
    "indent string": (
        "{{ ('a\\n' * 100000)|indent('x' * 1000, true) }}",
        "the indent filter would exceed",
    ),
    "wordwrap": (
        "{{ ('a ' * 100000)|wordwrap(1, wrapstring='x' * 1000) }}",
        "the wordwrap filter would exceed",
    ),
    "join filter": (
        "{% set big = 'x' * 1000000 %}{{ ([big] * 10)|join }}",
        "the join filter would exceed",
    ),
    "join separator": ("{{ range(100000)|join('x' * 1000) }}", "the join filter would exceed"),
    "join a generator": (
        "{{ range(1000)|map('center', 100000)|join }}",
        "the center filter would exceed the 32 MiB",
    ),
    "str.join a generator": (
        "{{ ('x' * 100000).join(range(1000)|map('string')) }}",
        "str.join\\(\\) would exceed",
    ),
    "tojson": (BIG + "{{ [big, big]|tojson }}", "the tojson filter would exceed"),
    "tojson indent": (
        "{{ (range(100000)|list)|tojson(indent=1000) }}",
        "the tojson filter would exceed",
    ),
    "tojson deep indent": (
        "{{ [[[[[[[[1]]]]]]]]|tojson(indent='\\t' * 1000000) }}",
        "the tojson filter would exceed",
    ),
    "tojson separators": (
        "{{ (range(100000)|list)|tojson(separators=('x' * 1000, ':')) }}",
        "the tojson filter would exceed",
    ),
    "pprint": (BIG + "{{ [big, big]|pprint }}", "the pprint filter would exceed"),
    "range list": ("{{ range(10**9)|list }}", "range\\(\\) would exceed 100000 items"),
    "nested huge ranges": (
        "{% for i in range(10**6) %}{% for j in range(10**6) %}{% endfor %}{% endfor %}",
        "range\\(\\) would exceed",
    ),
    "list of a string": ("{{ ('x' * 3000000)|list }}", "the list filter would exceed 1000000"),
    "reverse then list": ("{{ ('x' * 3000000)|reverse|list }}", "the list filter would exceed"),
    "string of a list": (WIDE_LIST + "{{ l|string }}", "the string filter would exceed"),
    "output of a list": (WIDE_LIST + "{{ l }}", "the output of {{ }} would exceed"),
    "tilde": (BIG + "{{ big ~ big }}", "the ~ operator would exceed"),
    "tilde of a list": (WIDE_LIST + "{{ l ~ '' }}", "the ~ operator would exceed"),
    "doubling with tilde": (
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s }}",
        "the ~ operator would exceed",
    ),
    "doubling a list": (
        "{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}"
        "{% endfor %}",
        "the \\+ operator would exceed 1000000 items",
    ),
    "kept copies from map": (
        "{{ range(100)|map('center', 3000000)|list|length }}",
        "would exceed the 32 MiB a render may build",
    ),
    "kept slices": (
        BIG + "{% set l = [" + ", ".join(f"big[{i}:]" for i in range(1, 14)) + "] %}{{ l|length }}",
        "slicing would exceed the 32 MiB",
    ),
    "kept macro outputs": (
        "{% macro m() %}{{ 'x' * 3000000 }}{% endmacro %}{{ [" + ", ".join(["m()"] * 12) + "] }}",
        "would exceed the 32 MiB",
    ),
    "set block": (
        BIG + "{% set t %}{{ big }}{{ big }}{% endset %}",
        "the text of a macro, block or {% set %} block would exceed 4000000",
    ),
    "filter block": (
        BIG + "{% filter upper %}{{ big }}{{ big }}{% endfilter %}",
        "block would exceed 4000000",
    ),
    "batch into a dict": ("{{ dict(('x' * 3000000)|batch(2)) }}", "the batch filter would"),
    "batch of one": ("{{ ('x' * 900000)|batch(1)|list|length }}", "the batch filter would"),
    "slice filter": ("{{ [1]|slice(10**7)|list|length }}", "the slice filter would exceed"),
    "upper of non-ASCII": ("{{ ('ß' * 2000000).upper() }}", "str.upper\\(\\) would exceed"),
    "encode": ("{{ ('x' * 1000000).encode('unicode_escape') }}", "str.encode\\(\\) would"),
    "translate": (
        "{{ ('a' * 1000000).translate({97: 'xxxxxxxxxx'}) }}",
        "str.translate\\(\\) would exceed",
    ),
    "split": ("{{ ('a,' * 2000000).split(',')|length }}", "str.split\\(\\) would exceed"),
    "wordcount": ("{{ ('a ' * 1900000)|wordcount }}", "the wordcount filter would exceed"),
    "case-insensitive sort": (
        "{% set big = 'X' * 3000000 %}{{ ([big] * 20)|sort|length }}",
        "the sort filter would exceed the 32 MiB",
    ),
    "urlize": ("{{ ('www.a.com ' * 400000)|urlize }}", "the urlize filter would exceed"),
    "sum of lists": (
        "{{ ([[1] * 1000] * 2000)|sum(start=[])|length }}",
        "the sum filter would exceed",
    ),
    "power": ("{{ 2 ** (10**9) }}", "the \\*\\* operator would exceed 10000 bits"),
    "squaring": (
        "{% set ns = namespace(n=10**1000) %}{% for i in range(30) %}"
        "{% set ns.n = ns.n * ns.n %}{% endfor %}",
        "the \\* operator would exceed 10000 bits",
    ),
    "round floor": ("{{ 1.5|round(10**9, 'floor') }}", "the round filter's precision"),
    "to_bytes": ("{{ (1).to_bytes(10**9, 'big') }}", "int.to_bytes\\(\\) would exceed"),
    "lipsum": ("{{ lipsum(10**6) }}", "lipsum\\(\\) would exceed"),
    "star args": ("{{ cycler(*('x' * 3000000)) }}", "unpacking \\*args would exceed"),
    "strftime": ("{{ strftime_now('%c' * 1000000) }}", "strftime_now\\(\\) would exceed"),
    "raise a list": (WIDE_LIST + "{{ raise_exception(l) }}", "raise_exception\\(\\) would"),
    "pprint under a long key": (
        "{% set d = {'k' * 1000: [range(28)|list] * 5000} %}{{ d|pprint }}",
        "the pprint filter would exceed",
    ),
    "output cap": (
        "{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}",
        "the rendered text would exceed 4000000 characters",
    ),
    "nested loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "iterations|ran longer than",  # whichever comes first on this machine
    ),
}


@pytest.mark.parametrize("name", ATTACKS, ids=list(ATTACKS))
def test_attacks_are_refused_before_memory_grows(name: str) -> None:
    source, refusal = ATTACKS[name]
    compile_template(source)  # compiled (and cached) outside the measurement
    tracemalloc.start()
    try:
        with pytest.raises(RenderLimitExceeded, match=refusal):
            render_chat(source, MESSAGES)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"{name}: {peak / 2**20:.1f} MiB"


def test_loop_iterations_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits_budget, "MAX_LOOP_ITERATIONS", 5000)
    nested = "{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}"
    with pytest.raises(RenderLimitExceeded, match="loops would exceed 5000 iterations"):
        render_chat(nested, MESSAGES)
    recursive = (
        "{% set tree = [{'c': [{'c': []}] * 80}] * 80 %}"
        "{% for node in tree recursive %}{{ loop(node.c) }}{% endfor %}"
    )
    with pytest.raises(RenderLimitExceeded, match="iterations"):
        render_chat(recursive, MESSAGES)
    within = "{% for i in range(40) %}{% for j in range(40) %}.{% endfor %}{% endfor %}"
    assert render_chat(within, MESSAGES) == "." * 1600


def test_compiling_folds_constants_within_a_small_budget() -> None:
    # Jinja evaluates constant filters while compiling; the guards cap what that may build,
    # and whatever is refused there is computed (and charged) at render time instead
    source = "".join(f"{{% set v{i} = 'x'|center(900000) %}}" for i in range(60))
    tracemalloc.start()
    try:
        compile_template(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES
    with pytest.raises(RenderLimitExceeded, match="the center filter would exceed the 32 MiB"):
        render_chat(source, MESSAGES)
    assert render_chat(source[: source.index("{% set v20")] + "{{ v19|length }}", MESSAGES) == (
        "900000"
    )


def test_rebuilding_a_string_is_charged_for_what_is_kept() -> None:
    # ~500 MB built over the loop, never more than 1 MB alive: the budget gives bytes back
    source = (
        "{% set ns = namespace(s='') %}{% for i in range(1000) %}"
        "{% set ns.s = ns.s ~ ('x' * 1000) %}{% endfor %}{{ ns.s|length }}"
    )
    assert render_chat(source, MESSAGES) == "1000000"


def test_hostile_templates_still_fail_as_template_errors() -> None:
    with pytest.raises(TemplateError, match="not allowed to do that"):
        render_chat("{{ ''.__class__.__mro__ }}", MESSAGES)
    with pytest.raises(TemplateError, match="failed"):
        render_chat("{{ 'a'.center('x') }}", MESSAGES)
    with pytest.raises(TemplateError, match="failed"):
        render_chat("{{ '%d' % 'x' }}", MESSAGES)


# -- the size arithmetic bounds what Python builds -----------------------------------------------

_CHARS = "ab'\"\\\n\t\x01é你🙂\u200b\x7f<&> %{}"


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 12)))


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randint(0, 8 if depth < 3 else 4)
    if kind in (0, 4):
        return _random_text(rng)
    if kind == 1:
        return rng.randint(-(10**30), 10**30)
    if kind == 2:
        return rng.random() * 10 ** rng.randint(-300, 300)
    if kind == 3:
        return rng.choice([None, True, False])
    if kind == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == 6:
        return tuple(_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3)))
    if kind == 7:
        return {_random_text(rng): _random_value(rng, depth + 1) for _ in range(3)}
    return {rng.randint(0, 99): _random_value(rng, depth + 1)}


def test_value_sizes_bound_str_repr_and_json() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        value = _random_value(rng)
        assert limits.text_size(value) >= len(str(value)), value
        literal = limits.literal_size(value)
        assert literal >= len(repr(value)), value
        assert literal >= len(json.dumps(value, ensure_ascii=False)), value
        ascii_only = limits.literal_size(value, ascii_only=True)
        assert ascii_only >= max(len(ascii(value)), len(json.dumps(value))), value


def _random_args(rng: random.Random) -> tuple:
    choices = [_random_text(rng), rng.randint(-(10**20), 10**20), rng.random(), 3, [1]]
    return tuple(rng.choice(choices) for _ in range(rng.randint(0, 5)))


def _check_bound(build: Any, estimate: Any) -> bool:
    """Whether the estimate bounds what ``build()`` made; False when Python refused to build."""
    try:
        text = build()
    except (ValueError, TypeError, LookupError, OverflowError, MemoryError):
        return False
    assert estimate() >= len(text)
    return True


def test_str_format_sizes_bound_what_python_builds() -> None:
    rng = random.Random(11)
    formatter = SandboxedFormatter(UNGUARDED)
    specs = ["", ">10", "<3", "^7", "05", ".3", ".2f", "e", ",", "_d", "x", "#x", "b", "%", "+"]
    checked = 0
    for _ in range(3000):
        args = _random_args(rng)
        template = "".join(
            _random_text(rng).replace("{", "{{").replace("}", "}}")
            + "{"
            + rng.choice(["", "!r", "!s"])
            + rng.choice(["", ":" + rng.choice(specs)])
            + "}"
            for _ in range(min(len(args), 3))
        )
        checked += _check_bound(
            lambda t=template, a=args: formatter.vformat(t, a, {}),
            lambda t=template, a=args: limits.format_size(t, a, {}, formatter),
        )
    assert checked > 1000


def test_printf_sizes_bound_what_python_builds() -> None:
    rng = random.Random(13)
    numeric = ["%d", "%5d", "%x", "%o", "%e", "%.2f", "%10.4g", "%c", "%+05d"]
    any_value = ["%s", "%r", "%a", "%-8s", "%.3s"]
    checked = 0
    for _ in range(3000):
        fmt, args = "", []
        for _ in range(rng.randint(0, 4)):
            conversion = rng.choice([*numeric, *any_value, "%%", "%*s", "%.*f"])
            fmt += conversion + _random_text(rng).replace("%", "")
            if conversion.startswith("%*") or conversion.startswith("%.*"):
                args.append(rng.randint(-50, 50))
            if conversion in any_value or conversion == "%*s":
                args.append(_random_value(rng))
            elif conversion != "%%":
                args.append(rng.choice([rng.randint(0, 10**30), rng.random() * 1e300, 65]))
        operand = args[0] if len(args) == 1 and rng.random() < 0.5 else tuple(args)
        checked += _check_bound(
            lambda f=fmt, o=operand: f % o,
            lambda f=fmt, o=operand: limits.printf_size(f, o),
        )
    keyed = {"k": "v" * 20, "n": 10**20}
    for fmt in ("%(k)s", "%(k)30s|%(n)d", "%(k).3s%(n)x", "%(k)r%%"):
        checked += _check_bound(lambda f=fmt: f % keyed, lambda f=fmt: limits.printf_size(f, keyed))
    assert checked > 2000


# -- legitimate templates render as plain Jinja renders them -------------------------------------


def _hf_tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: Any = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise(message: str) -> None:
    raise ValueError(message)


def _unguarded() -> ImmutableSandboxedEnvironment:
    """The environment transformers renders chat templates with, without any guard."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, GenerationMarkers]
    )
    env.filters["tojson"] = _hf_tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


UNGUARDED = _unguarded()


def _both(source: str, messages: list[dict[str, Any]], **options: Any) -> tuple[str, str]:
    tools = options.get("tools")
    generation_prompt = options.get("add_generation_prompt", False)
    expected = UNGUARDED.from_string(source).render(
        messages=messages, tools=tools, add_generation_prompt=generation_prompt, **TOKENS
    )
    return render_chat(source, messages, special_tokens=TOKENS, **options), expected


PIPELINES = {
    "map join": "{{ messages|map(attribute='role')|join(',') }}",
    "map list": "{{ messages|map(attribute='role')|list }}",
    "map first last": (
        "{{ messages|map(attribute='role')|first }}/{{ messages|map(attribute='role')|list|last }}"
    ),
    "selectattr": (
        "{{ messages|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(' | ') }}"
    ),
    "rejectattr length": "{{ messages|rejectattr('role', 'eq', 'system')|list|length }}",
    "select reject": "{{ range(10)|select('odd')|list }}{{ range(10)|reject('odd')|join('-') }}",
    "map filters": "{{ messages|map(attribute='content')|map('upper')|map('trim')|list }}",
    "map default": "{{ messages|map(attribute='name', default='?')|join }}",
    "loop": (
        "{% for m in messages %}{{ loop.index }}/{{ loop.length }}:{{ m.role }}"
        "{% if not loop.last %}, {% endif %}{% endfor %}"
    ),
    "loop over a generator": (
        "{% for r in messages|map(attribute='role') %}{{ loop.revindex }}{{ r }}"
        "{% if loop.last %}.{% endif %}{% endfor %}"
    ),
    "loop filter and else": (
        "{% for m in messages if m.role == 'nobody' %}{{ m }}{% else %}none{% endfor %}"
        "{% for m in messages if m.role != 'tool' %}{{ m.role[0] }}{% endfor %}"
    ),
    "loop controls": (
        "{% for m in messages %}{% if m.role == 'tool' %}{% break %}{% endif %}"
        "{% if m.role == 'system' %}{% continue %}{% endif %}{{ m.role }};{% endfor %}"
    ),
    "namespace": (
        "{% set ns = namespace(text='', n=0) %}{% for m in messages %}"
        "{% set ns.text = ns.text + m.content %}{% set ns.n = ns.n + 1 %}{% endfor %}"
        "{{ ns.n }}:{{ ns.text }}"
    ),
    "tojson": "{{ messages|tojson }}|{{ messages[2]|tojson(ensure_ascii=true) }}",
    "tojson options": (
        "{{ messages|tojson(indent=2) }}{{ tools|tojson(separators=(',', ':'), sort_keys=true) }}"
    ),
    "sum lengths": "{{ messages|map(attribute='content')|map('length')|sum }}",
    "groupby sort unique": (
        "{{ messages|groupby('role')|map(attribute='grouper')|join(',') }}"
        "{{ messages|sort(attribute='role')|map(attribute='role')|unique|list }}"
    ),
    "reverse": (
        "{{ messages|reverse|map(attribute='role')|join }}"
        "{{ messages|map(attribute='role')|reverse|join(',') }}{{ 'abc'|reverse }}"
    ),
    "printf": "{{ '%s: %d%%' % ('x', 5) }}{{ '%(a)s-%(b)05d' % {'a': 1, 'b': 2} }}",
    "printf widths": "{{ '%-8s|%5.2f|%x|%r' % ('ab', 3.14159, 255, 'q') }}",
    "str.format": (
        "{{ '{}-{:>6}-{:.3}'.format('a', 'b', 'cdefg') }}{{ '{0[role]}: {0[content]}'.format("
        "messages[1]) }}{{ '{:{}}|'.format('w', 4) }}{{ '{a}'.format_map({'a': 7}) }}"
    ),
    "chained text filters": (
        "{{ messages[1].content|trim|title|replace('Hello', 'Bye')|center(50)|indent(2, true) }}"
    ),
    "batch slice": (
        "{{ messages|map(attribute='role')|batch(4, '-')|list }}"
        "{{ messages|map(attribute='role')|slice(4)|list }}"
    ),
    "recursive loop": (
        "{% set tree = [{'name': 'a', 'children': [{'name': 'b', 'children': []}]}] %}"
        "{% for item in tree recursive %}{{ item.name }}{% if item.children %}"
        "[{{ loop(item.children) }}]{% endif %}{% endfor %}"
    ),
    "slices": (
        "{{ messages[1:]|map(attribute='role')|join }}{{ messages[1].content[::-1] }}"
        "{{ messages[-2:][0].role }}{{ messages[2].content[2:5] }}"
    ),
    "dicts": "{{ dict(a=1, b=2)|dictsort }}{{ {'b': 1, 'a': 2}|items|list }}",
    "star args": (
        "{{ '{}-{}'.format(*['a', 'b']) }}"
        "{{ '{}{}{}{}{}{}'.format(*(messages|map(attribute='role'))) }}"
    ),
    "set block and macro": (
        "{% macro turn(m) %}<{{ m.role }}>{{ caller() if caller else m.content }}{% endmacro %}"
        "{% set x %}{% for m in messages %}{{ m.role }};{% endfor %}{% endset %}"
        "{{ x|length }}{{ x }}"
        "{% call turn(messages[1]) %}called{% endcall %}{{ turn(messages[2]) }}"
    ),
    "text filters": (
        "{{ messages|map(attribute='content')|map('wordcount')|list }}{{ 'a b c d'|wordwrap(3) }}"
        "{{ messages[1].content|truncate(9, true) }}{{ messages[1].content|striptags }}"
        "{{ messages[4].content|urlencode }}{{ 'www.x.org'|urlize }}"
    ),
    "autoescape": (
        "{% autoescape true %}{{ '<b>' ~ messages[1].content }}{{ messages[1].content|e }}"
        "{{ messages[1].content|replace('&', '+') }}{{ messages|map(attribute='role')|join('<') }}"
        "{% endautoescape %}{{ '<i>' ~ 1 }}"
    ),
    "pprint": "{{ messages|pprint }}{{ tools|pprint }}",
    "operators": (
        "{{ messages|length }}{{ messages|count }}{{ 'x' * 3 }}{{ 3 * [0] }}{{ [1, 2] + [3] }}"
        "{{ 'a' + 'b' }}{{ 2 ** 10 }}{{ 7 % 3 }}{{ 10 // 3 }}{{ (1, 2) + (3,) }}{{ none }}"
    ),
    "str methods": (
        "{{ messages[1].content.upper() }}{{ messages[1].content.split(',') }}"
        "{{ messages[4].content.splitlines() }}{{ 'a-b'.replace('-', '+') }}"
        "{{ ','.join(['a', 'b']) }}"
        "{{ 'x'.center(5, '*') }}{{ '7'.zfill(3) }}{{ 'a\tb'.expandtabs(4) }}{{ 'Ab'.swapcase() }}"
        "{{ 'abc'.startswith('a') }}{{ ' x '.strip() }}{{ 'a=b'.partition('=') }}"
    ),
    "min max random-free": (
        "{{ messages|map(attribute='role')|min }}{{ messages|map(attribute='role')|max }}"
        "{{ messages|map(attribute='content')|map('length')|max }}"
    ),
}


@pytest.mark.parametrize("name", PIPELINES, ids=list(PIPELINES))
def test_legitimate_pipelines_render_as_plain_jinja(name: str) -> None:
    guarded, unguarded = _both(PIPELINES[name], MESSAGES, tools=TOOLS)
    assert guarded == unguarded


def test_iterators_are_not_consumed_by_the_guards() -> None:
    roles = ",".join(m["role"] for m in MESSAGES)
    assert render_chat("{{ messages|map(attribute='role')|join(',') }}", MESSAGES) == roles
    assert render_chat("{{ messages|map(attribute='role')|list|join(',') }}", MESSAGES) == roles
    shared = (
        "{% set g = messages|map(attribute='role') %}{{ g|join(',') }}|{{ g|join(',') }}"
        "{% set h = messages|map(attribute='role') %}|{{ h|first }}|{{ h|list|length }}"
    )
    assert _both(shared, MESSAGES)[0] == _both(shared, MESSAGES)[1]


# -- the templates the project ships -------------------------------------------------------------

CONVERSATIONS = {
    "one turn": MESSAGES[1:3],
    "with system": MESSAGES[:3],
    "multi-turn with a tool": MESSAGES,
    "long": [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}: " + "word " * 600}
        for i in range(300)
    ],
    "near the output cap, 4-byte characters": [
        {"role": "user" if i % 2 == 0 else "assistant", "content": "🙂" * 38_000}
        for i in range(100)
    ],
}


def _assert_same_as_plain_jinja(source: str) -> None:
    for name, conversation in CONVERSATIONS.items():
        for generation_prompt in (False, True):
            for tools in (None, TOOLS):
                options = {"add_generation_prompt": generation_prompt, "tools": tools}
                guarded, unguarded = _both(source, conversation, **options)
                assert guarded == unguarded, (name, generation_prompt, tools)


@pytest.mark.parametrize("builtin", BUILTINS, ids=[b.key for b in BUILTINS])
def test_builtin_templates_render_as_plain_jinja(builtin: Any) -> None:
    _assert_same_as_plain_jinja(builtin.source)
    spans = render_with_spans(builtin.source, MESSAGES, special_tokens=TOKENS).generation_spans
    assert spans or builtin.key == "completion"


def test_the_bundled_models_template_renders_as_plain_jinja(bundled_model_dir: Path) -> None:
    source = read_chat_template(bundled_model_dir)
    assert source
    _assert_same_as_plain_jinja(source)
