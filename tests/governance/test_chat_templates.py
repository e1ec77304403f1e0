"""The sandboxed chat-template renderer follows Hugging Face's conventions."""

from __future__ import annotations

import pytest

from app.chat.sandbox import TemplateError, render_chat

MESSAGES = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "hi"}]


def test_renders_messages_generation_prompt_special_tokens_and_tools() -> None:
    template = (
        "{{ bos_token }}{% if tools %}{{ tools | tojson }}\n{% endif %}"
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    tokens = {"bos_token": "<s>", "eos_token": "</s>"}
    assert render_chat(template, MESSAGES, special_tokens=tokens) == (
        "<s><user>你好</s>\n<assistant>hi</s>\n"
    )
    prompt = render_chat(template, MESSAGES[:1], add_generation_prompt=True, tools=[{"n": "é"}])
    assert prompt == '[{"n": "é"}]\n<user>你好\n<assistant>'


def test_raise_exception_and_bad_templates_are_template_errors() -> None:
    strict = (
        "{% if messages[0].role != 'system' %}"
        "{{ raise_exception('needs a system turn') }}{% endif %}"
    )
    with pytest.raises(TemplateError, match="needs a system turn"):
        render_chat(strict, MESSAGES)
    with pytest.raises(TemplateError, match="does not compile"):
        render_chat("{% for %}", MESSAGES)


def test_the_sandbox_refuses_internals_and_mutation() -> None:
    with pytest.raises(
        TemplateError, match="not allowed to do that: access to attribute '__class__'"
    ):
        render_chat("{{ messages.__class__.__mro__ }}", MESSAGES)
    with pytest.raises(TemplateError, match="not allowed to do that: access to attribute 'append'"):
        render_chat("{{ messages.append(1) }}", MESSAGES)
    assert len(MESSAGES) == 2


def test_output_is_capped() -> None:
    with pytest.raises(TemplateError, match="exceed"):
        render_chat("{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}", MESSAGES)
