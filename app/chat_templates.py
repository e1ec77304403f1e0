"""Chat templates rendered in a sandboxed Jinja environment, following the Hugging Face
conventions: ``messages``, ``add_generation_prompt``, ``tools``, the tokenizer's special tokens,
``raise_exception`` and ``strftime_now`` as globals, and a ``tojson`` that keeps non-ASCII text.

Templates come from model directories and, later, from users: they never see Python objects
beyond plain data, cannot mutate what they are given, and their output is capped.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

from jinja2 import TemplateError as JinjaTemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_TEMPLATE_CHARS = 100_000
MAX_OUTPUT_CHARS = 4_000_000


class TemplateError(ValueError):
    """The template does not compile, raised an exception, or produced too much output."""


def _raise_exception(message: str) -> NoReturn:
    raise TemplateError(str(message))


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent, sort_keys=False)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols], autoescape=False
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


@lru_cache(maxsize=32)
def compile_template(source: str):
    """The compiled template (cached by its text); TemplateError when it does not compile."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"the chat template is longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        return _ENV.from_string(source)
    except JinjaTemplateError as exc:
        raise TemplateError(f"the chat template does not compile: {exc}") from exc


def render_chat(
    source: str,
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
    special_tokens: dict[str, str] | None = None,
) -> str:
    """Render ``messages`` with the chat template ``source``."""
    template = compile_template(source)
    context = {
        "messages": messages,
        "add_generation_prompt": add_generation_prompt,
        "tools": tools,
        **(special_tokens or {}),
    }
    size = 0
    parts: list[str] = []
    try:
        for chunk in template.generate(**context):
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise TemplateError(f"the rendered text exceeds {MAX_OUTPUT_CHARS} characters")
            parts.append(chunk)
    except TemplateError:
        raise
    except (JinjaTemplateError, TypeError, ValueError, KeyError, IndexError) as exc:
        raise TemplateError(f"the chat template failed: {exc}") from exc
    return "".join(parts)


def plain_chat(messages: list[dict[str, Any]], *, add_generation_prompt: bool = False) -> str:
    """What a model without a chat template sees: ``role: content`` lines."""
    text = "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in messages)
    return text + ("\nassistant:" if add_generation_prompt else "")
