"""Chat templates rendered in a hardened sandbox, following the Hugging Face conventions:
``messages``, ``add_generation_prompt``, ``tools``, the tokenizer's special tokens,
``raise_exception`` and ``strftime_now`` as globals, a ``tojson`` that keeps non-ASCII text, and
``{% generation %}...{% endgeneration %}`` marking the text an assistant turn generates.

Templates come from model directories and from users, so every render is bounded:
- Jinja's immutable sandbox: no attributes starting with ``_`` (no ``__globals__``,
  ``__subclasses__``, also through ``|attr``), no mutation of what the template is given;
- time: a per-render deadline checked on every call and every line of template code, so
  nested loops and runaway recursion stop (``RenderLimitExceeded``), and a cap on loop iterations;
- memory: every operator, filter, method call, slice and join that builds a value is sized from
  its operands before it runs (``limits``), refused past the per-value limit, and charged
  to a per-render budget of what is still alive; the output itself is capped.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator
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
from jinja2.runtime import Context, LoopContext, markup_join, str_join
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
    SecurityError,
)
from jinja2.utils import _PassArg, generate_lorem_ipsum, pass_eval_context
from markupsafe import Markup, escape

from app.chat import limits

# the errors live with the size guards, which raise them; they are imported from here
from app.chat.limits import RenderLimitExceeded, TemplateError

MAX_TEMPLATE_CHARS = 100_000
MAX_OUTPUT_CHARS = limits.MAX_VALUE_CHARS
RENDER_SECONDS = 2.0
TEMPLATE_FILENAME = "<chat-template>"


def _raise_exception(message: Any) -> NoReturn:
    limits.text_cost("raise_exception()", limits.text_size(message))
    raise TemplateError(str(message))


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """transformers' ``tojson``: ``json.dumps`` with its options, non-ASCII kept by default."""
    what = "the tojson filter"
    chars = limits.literal_size(value, ascii_only=ensure_ascii)
    cost = limits.text_cost(what, chars, 1 if ensure_ascii else 4)
    options = {"ensure_ascii": ensure_ascii, "indent": indent, "separators": separators}
    if indent is None and separators is None:
        return limits.built(what, cost, lambda: json.dumps(value, sort_keys=sort_keys, **options))
    # indentation and separators can make it far longer than the value: stream it, capped;
    # json builds each level's indentation whole, so that must fit at the deepest level
    indent_chars = len(indent) if isinstance(indent, str) else limits.as_int(indent) or 0
    limits.text_cost(what, indent_chars * limits.MAX_NESTING)
    encoder = json.JSONEncoder(sort_keys=sort_keys, **options)
    return limits.built(what, cost, lambda: limits.capped_join(encoder.iterencode(value), what))


def _strftime_now(fmt: str) -> str:
    if isinstance(fmt, str):
        limits.text_cost("strftime_now()", len(fmt) + 64 * fmt.count("%"))
    return datetime.now().strftime(fmt)


@wraps(generate_lorem_ipsum)
def _lipsum(*args: Any, **kwargs: Any) -> str:
    cost = limits.lipsum_cost(*args, **kwargs)
    return limits.built("lipsum()", cost, lambda: generate_lorem_ipsum(*args, **kwargs))


# -- filters -------------------------------------------------------------------------------------

_PASS_ARG_NAMES = ("context", "eval_ctx", "environment", "env")
_PLAIN_PARAMETERS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _guard_filter(name: str, function: Callable) -> Callable:
    """``function`` with its size guard (see ``limits.FILTER_GUARDS``) run on the bound
    arguments first, and its result charged to the render's budget."""
    guard = limits.FILTER_GUARDS.get(name)
    pass_arg = _PassArg.from_obj(function)
    parameters = list(inspect.signature(function).parameters.values())
    if pass_arg is not None and parameters and parameters[0].name in _PASS_ARG_NAMES:
        parameters = parameters[1:]
    signature = inspect.Signature(parameters)
    # most filters take plain parameters: bind those by hand, it is far cheaper than inspect's
    plain_names = [p.name for p in parameters if p.kind in _PLAIN_PARAMETERS]
    plain = len(plain_names) == len(parameters)
    what = f"the {name} filter"

    @wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        lead, rest = (args[:1], args[1:]) if pass_arg is not None else ((), args)
        cost = limits.OBJECT_BYTES
        if guard is not None:
            if (
                plain
                and len(rest) <= len(plain_names)
                and kwargs.keys().isdisjoint(plain_names[: len(rest)])
            ):
                arguments = dict(zip(plain_names, rest, strict=False)) | kwargs
                cost = guard(arguments, lead[0] if lead else None)
                rest = tuple(arguments[key] for key in plain_names[: len(rest)])
                kwargs = {key: arguments[key] for key in kwargs}
            else:
                try:
                    bound = signature.bind(*rest, **kwargs)
                except TypeError:
                    return function(*args, **kwargs)  # it raises before running: nothing built
                cost = guard(bound.arguments, lead[0] if lead else None)
                rest, kwargs = bound.args, bound.kwargs
        limits.reserve(cost, what)
        result = limits.track(function(*lead, *rest, **kwargs), cost)
        if name in limits.LIST_YIELDING_FILTERS and isinstance(result, Iterator):
            return limits.tracked_lists(result, what)
        return result

    return guarded


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
    code (loops without calls), so a hostile template cannot run forever. It runs on every
    Python call while rendering, so it does the check inline."""
    monotonic = time.monotonic

    def on_line(frame: Any, event: str, arg: Any) -> Callable:
        if monotonic() > deadline.at:
            deadline.check()
        return on_line

    def on_call(frame: Any, event: str, arg: Any) -> Callable | None:
        if monotonic() > deadline.at:
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
    size: int = 0


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
            start = tracking.size
            tracking.spans.append((start, start + len(text)))
        return text


# -- the environment -----------------------------------------------------------------------------


def _environment_call(name: str, argument: nodes.Expr) -> nodes.Call:
    """The node for ``environment.<name>(argument)``."""
    call = nodes.Call(nodes.EnvironmentAttribute(name), [argument], [], None, None)
    return call.set_lineno(argument.lineno)


class _GuardedCodeGenerator(CodeGenerator):
    """Routes the places compiled templates build values outside any call the sandbox sees
    (``a ~ b``, ``f(*args)``, loops) through the environment, where they are sized first."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        # the same choice of join as Jinja's, made at run time by the environment
        if frame.eval_ctx.volatile:
            escaped = "context.eval_ctx.volatile"
        else:
            escaped = str(bool(frame.eval_ctx.autoescape))
        self.write("environment.guarded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {escaped})")

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            return super().visit_Getitem(node, frame)
        # Jinja writes x[a:b] straight into Python; size it first (and fail as Python would)
        self.write("environment.guarded_slice(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for part in (node.arg.start, node.arg.stop, node.arg.step):
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
            self.write(", ")
        self.write("))")
        return None

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        node.iter = _environment_call("counted_loop", node.iter)
        super().visit_For(node, frame)

    def signature(
        self,
        node: nodes.Call | nodes.Filter | nodes.Test,
        frame: Frame,
        extra_kwargs: Any = None,
    ) -> None:
        if node.dyn_args is not None:
            node.dyn_args = _environment_call("guarded_star_args", node.dyn_args)
        super().signature(node, frame, extra_kwargs)


@pass_eval_context
def _finalize(eval_ctx: Any, value: Any) -> Any:
    """Every ``{{ value }}``: sized, then made text here, so the text is charged to the budget."""
    if eval_ctx.autoescape:
        cost = limits.output_cost(value, escaped=True)
        return limits.built("the output of {{ }}", cost, lambda: escape(value))
    if isinstance(value, str):
        return value
    cost = limits.output_cost(value, escaped=False)
    return limits.built("the output of {{ }}", cost, lambda: str(value))


class ChatTemplateSandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _GuardedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})
    counted_loop = staticmethod(limits.CountedIterable)
    guarded_star_args = staticmethod(limits.star_args)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        cost = limits.binop_cost(operator, left, right)
        operate = super().call_binop
        what = f"the {operator} operator"
        return limits.built(what, cost, lambda: operate(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        deadline = _deadline.get()
        if deadline is not None:
            deadline.check()
        if isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive loop
            args = (limits.CountedIterable(args[0]), *args[1:])
        target = _format_method(__obj)
        formatter = None if target is None else __self._formatter(target.__self__)
        target = target or __obj
        cost, args = limits.call_cost(target, args, kwargs, formatter)
        call = super().call
        what = f"calling {getattr(target, '__qualname__', type(target).__name__)}"
        return limits.built(what, cost, lambda: call(__context, __obj, *args, **kwargs))

    def _formatter(self, text: Any) -> SandboxedFormatter:
        if isinstance(text, Markup):
            return SandboxedEscapeFormatter(self, escape=text.escape)
        return SandboxedFormatter(self)

    @staticmethod
    def guarded_slice(value: Any, index: slice) -> Any:
        cost = limits.slice_cost(value, index)
        if cost is None:
            return value[index]
        return limits.built("slicing", cost, lambda: value[index])

    @staticmethod
    def concat(pieces: Iterable[str]) -> str:  # type: ignore[override]
        return limits.joined(pieces, "the text of a macro, block or {% set %} block")

    @staticmethod
    def guarded_concat(values: tuple, escaped: bool) -> str:
        cost = limits.concat_cost(values, escaped=escaped)
        join = markup_join if escaped else str_join
        return limits.built("the ~ operator", cost, lambda: join(values))


def _format_method(obj: Any) -> Any:
    """The ``str.format`` behind the sandbox's safe wrapper of it, or None."""
    wrapped = getattr(obj, "__wrapped__", None)
    if isinstance(wrapped, types.BuiltinMethodType | types.MethodType) and isinstance(
        getattr(wrapped, "__self__", None), str
    ):
        return wrapped
    return None


def _environment() -> ChatTemplateSandbox:
    env = ChatTemplateSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, GenerationMarkers],
        autoescape=False,
        finalize=_finalize,
    )
    env.filters["tojson"] = _tojson
    env.filters["pprint"] = limits.pformat
    for name, function in list(env.filters.items()):
        env.filters[name] = _guard_filter(name, function)
    env.globals["range"] = limits.guarded_range
    env.globals["lipsum"] = _lipsum
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
        # Jinja folds constant expressions while compiling (through the same guards); what it
        # folds stays in the cached code, so it gets a small budget that never gives bytes back.
        with limits.render_budget(limits.MAX_COMPILE_BYTES, reclaim=False):
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
    try:
        with _time_limit(seconds), limits.render_budget(limits.MAX_RENDER_BYTES):
            for chunk in template.generate(**context):
                tracking.size += len(chunk)
                if tracking.size > MAX_OUTPUT_CHARS:
                    raise RenderLimitExceeded(
                        f"the rendered text would exceed {MAX_OUTPUT_CHARS} characters"
                    )
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
