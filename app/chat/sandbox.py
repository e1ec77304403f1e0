"""Chat templates rendered in a hardened sandbox, following the Hugging Face conventions:
``messages``, ``add_generation_prompt``, ``tools``, the tokenizer's special tokens,
``raise_exception`` and ``strftime_now`` as globals, a ``tojson`` that keeps non-ASCII text, and
``{% generation %}...{% endgeneration %}`` marking the text an assistant turn generates.

Templates come from model directories and from users, so every render is bounded:
- Jinja's immutable sandbox: no attributes starting with ``_`` (no ``__globals__``,
  ``__subclasses__``, also through ``|attr``), no mutation of what the template is given;
- time: a per-render deadline checked on every call and every line of template code, so
  nested loops and runaway recursion stop (``RenderLimitExceeded``);
- memory: operators, string methods and filters that multiply sizes (``*``, ``**``, ``+``,
  ``~``, ``%``, ``format``, ``center``, ``replace``, ``join``...) refuse results beyond the output
  cap before building them, and the output itself is capped.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache, wraps
from typing import Any, NoReturn

from jinja2 import TemplateError as JinjaTemplateError
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.ext import Extension, loopcontrols
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_TEMPLATE_CHARS = 100_000
MAX_OUTPUT_CHARS = 4_000_000
RENDER_SECONDS = 2.0
TEMPLATE_FILENAME = "<chat-template>"
_FORMAT_NUMBER = re.compile(r"\d+")


class TemplateError(ValueError):
    """The template does not compile, raised an exception, or broke a limit."""


class RenderLimitExceeded(TemplateError):
    """The template ran too long, recursed too deep or tried to build too much text."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateError(str(message))


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=False)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


# -- size guards -------------------------------------------------------------------------------


def _weight(value: Any) -> int:
    """How many characters ``value`` becomes when rendered or joined (roughly, from above)."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(_weight(item) + 2 for item in value)
    return 24


def _refuse_if_too_big(size: int, what: str) -> None:
    if size > MAX_OUTPUT_CHARS:
        raise RenderLimitExceeded(f"{what} would exceed {MAX_OUTPUT_CHARS} characters")


def _refuse_big_numbers(args: tuple, kwargs: dict, what: str) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OUTPUT_CHARS:
            raise RenderLimitExceeded(f"{what}: the number {value} is beyond the sandbox's limits")


def _refuse_wide_format(fmt: Any) -> None:
    if isinstance(fmt, str) and any(int(n) > 10_000 for n in _FORMAT_NUMBER.findall(fmt)):
        raise RenderLimitExceeded("a format width or precision beyond 10000 is refused")


def _checked_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                _refuse_if_too_big(_weight(seq) * max(times, 0), "repeating a value")
    elif operator == "+" and isinstance(left, str | list | tuple):
        _refuse_if_too_big(_weight(left) + _weight(right), "joining values")
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right * max(abs(left).bit_length(), 1) > 10_000:
            raise RenderLimitExceeded("the power is too large")
    elif operator == "%":
        _refuse_wide_format(left)


def _guard_filter(name: str, function: Callable) -> Callable:
    """A filter that refuses huge numeric arguments and results beyond the output cap."""

    @wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _refuse_big_numbers(args, kwargs, f"the {name} filter")
        if name == "format" and args:
            _refuse_wide_format(args[0])
        if name == "replace" and len(args) >= 3:
            _refuse_if_too_big(_weight(args[0]) * max(_weight(args[2]), 1), "replace")
        if name == "join" and args:
            _refuse_if_too_big(_weight(list(args[1])) if len(args) > 1 else 0, "join")
        return function(*args, **kwargs)

    return guarded


def _check_str_method(method: Any, args: tuple, kwargs: dict) -> None:
    """Size checks for the str methods a template calls (the sandbox wraps ``format``)."""
    text = getattr(method, "__self__", None)
    if not isinstance(text, str):
        return
    name = getattr(method, "__name__", "")
    _refuse_big_numbers(args, kwargs, f"str.{name}")
    if name in ("format", "format_map"):
        _refuse_wide_format(text)
    elif name == "replace" and len(args) >= 2:
        _refuse_if_too_big(_weight(text) * max(_weight(args[1]), 1), "replace")
    elif name == "join" and args:
        _refuse_if_too_big(_weight(list(args[0])), "join")


# -- time guard ----------------------------------------------------------------------------------


@dataclass
class _Deadline:
    at: float

    def check(self) -> None:
        if time.monotonic() > self.at:
            raise RenderLimitExceeded(f"the template ran longer than {RENDER_SECONDS:g} s")


_deadline: ContextVar[_Deadline | None] = ContextVar("chat_template_deadline", default=None)


def _tracer(deadline: _Deadline) -> Callable:
    """A trace function that checks the deadline on every call, and on every line of template
    code (loops without calls), so a hostile template cannot run forever."""

    def on_line(frame: Any, event: str, arg: Any) -> Callable:
        deadline.check()
        return on_line

    def on_call(frame: Any, event: str, arg: Any) -> Callable | None:
        deadline.check()
        return on_line if frame.f_code.co_filename == TEMPLATE_FILENAME else None

    return on_call


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    deadline = _Deadline(time.monotonic() + seconds)
    token = _deadline.set(deadline)
    previous = sys.gettrace()
    sys.settrace(_tracer(deadline))
    try:
        yield
    finally:
        sys.settrace(previous)
        _deadline.reset(token)


# -- generation markers --------------------------------------------------------------------------


@dataclass
class _Tracking:
    """The chunks rendered so far and the character spans inside ``{% generation %}``."""

    chunks: list[str] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)


_tracking: ContextVar[_Tracking | None] = ContextVar("chat_template_tracking", default=None)


class GenerationMarkers(Extension):
    """``{% generation %}...{% endgeneration %}`` as in transformers: renders its body and, while
    tracking, records where the body lands in the output."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.CallBlock:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        call = self.call_method("_generation", [])
        return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

    def _generation(self, caller: Callable[[], str]) -> str:
        text = caller()
        tracking = _tracking.get()
        if tracking is not None:
            start = sum(len(chunk) for chunk in tracking.chunks)
            tracking.spans.append((start, start + len(text)))
        return text


# -- the environment -----------------------------------------------------------------------------


class _GuardedCodeGenerator(CodeGenerator):
    """Routes ``a ~ b`` through the environment, where its size is checked before joining."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.guarded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class ChatTemplateSandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _checked_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = _deadline.get()
        if deadline is not None:
            deadline.check()
        _check_str_method(getattr(__obj, "__wrapped__", __obj), args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    @staticmethod
    def guarded_concat(values: tuple) -> str:
        _refuse_if_too_big(sum(_weight(str(v)) for v in values), "joining with ~")
        return "".join(str(v) for v in values)


def _environment() -> ChatTemplateSandbox:
    env = ChatTemplateSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, GenerationMarkers],
        autoescape=False,
    )
    for name, function in list(env.filters.items()):
        env.filters[name] = _guard_filter(name, function)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


@lru_cache(maxsize=64)
def compile_template(source: str) -> Any:
    """The compiled template (cached by its text); TemplateError when it does not compile."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"the chat template is longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        code = _ENV.compile(source, filename=TEMPLATE_FILENAME)
        return _ENV.template_class.from_code(_ENV, code, _ENV.make_globals(None), None)
    except JinjaTemplateError as exc:
        raise TemplateError(f"the chat template does not compile: {exc}") from exc


_GENERATION_TAG = re.compile(r"{%-?\s*generation\s*[-+]?%}")


def has_generation_markers(source: str) -> bool:
    return _GENERATION_TAG.search(source) is not None


@dataclass(frozen=True)
class Rendered:
    text: str
    generation_spans: tuple[tuple[int, int], ...]


def render_with_spans(
    source: str,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
    special_tokens: dict[str, str] | None = None,
    seconds: float = RENDER_SECONDS,
) -> Rendered:
    """Render ``messages`` with the chat template ``source``, recording generation spans."""
    template = compile_template(source)
    context = {
        "messages": messages,
        "add_generation_prompt": add_generation_prompt,
        "tools": tools,
        **(special_tokens or {}),
    }
    tracking = _Tracking()
    token = _tracking.set(tracking)
    size = 0
    try:
        with _time_limit(seconds):
            for chunk in template.generate(**context):
                size += len(chunk)
                _refuse_if_too_big(size, "the rendered text")
                tracking.chunks.append(chunk)
    except TemplateError:
        raise
    except RecursionError as exc:
        raise RenderLimitExceeded("the template recursed too deep") from exc
    except OverflowError as exc:
        raise RenderLimitExceeded(f"the template went beyond the sandbox's limits: {exc}") from exc
    except MemoryError as exc:
        raise RenderLimitExceeded("the template tried to build too much text") from exc
    except SecurityError as exc:
        raise TemplateError(f"the chat template is not allowed to do that: {exc}") from exc
    except (JinjaTemplateError, TypeError, ValueError, LookupError, AttributeError) as exc:
        raise TemplateError(f"the chat template failed: {exc}") from exc
    finally:
        _tracking.reset(token)
    return Rendered("".join(tracking.chunks), tuple(tracking.spans))


def render_chat(source: str, messages: list[dict[str, Any]], **options: Any) -> str:
    """Render ``messages`` with the chat template ``source`` (see ``render_with_spans``)."""
    return render_with_spans(source, messages, **options).text


def plain_chat(messages: list[dict[str, Any]], *, add_generation_prompt: bool = False) -> str:
    """What a model without a chat template sees: ``role: content`` lines."""
    text = "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)
    return text + ("\nassistant:" if add_generation_prompt else "")
