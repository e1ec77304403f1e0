"""Checks a chat template before it is saved: it must render a reference conversation (system,
user, assistant calling a tool, tool, assistant), with and without a generation prompt; what it
gets wrong in ways that silently spoil training comes back as warnings."""

from __future__ import annotations

from typing import Any

from app.chat.encoding import ChatFormat, assistant_spans
from app.chat.sandbox import TemplateError, has_generation_markers
from app.chat.tokenizer import ModelTokenizer

REFERENCE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
REFERENCE_CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
    {"role": "tool", "content": '{"temperature": 18}'},
    {"role": "assistant", "content": "It is 18 degrees in Paris."},
]
REFERENCE_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}
# Text that ends a turn in the common families when the tokenizer does not say otherwise.
KNOWN_END_MARKERS = (
    "</s>",
    "<|im_end|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
)


def validate_template(source: str, tokenizer: ModelTokenizer | None = None) -> list[str]:
    """Warnings for ``source``; TemplateError when it cannot render the reference conversation."""
    special = tokenizer.special_tokens if tokenizer else REFERENCE_SPECIAL_TOKENS
    fmt = ChatFormat(source, special or REFERENCE_SPECIAL_TOKENS)
    messages = REFERENCE_CONVERSATION
    rendered = fmt.render(messages, tools=REFERENCE_TOOLS)
    prompt = fmt.render(messages[:-1], add_generation_prompt=True, tools=REFERENCE_TOOLS).text
    without = fmt.render(messages[:-1], tools=REFERENCE_TOOLS).text
    warnings: list[str] = []
    if not has_generation_markers(source):
        warnings.append(
            "no {% generation %} markers: assistant turns are located by rendering the "
            "conversation turn by turn, which needs each rendering to begin with the previous one"
        )
    missing = [m["role"] for m in messages if m["content"] not in rendered.text]
    if missing:
        warnings.append(f"the rendering leaves out the {', '.join(sorted(set(missing)))} message")
    if prompt == without:
        warnings.append(
            "add_generation_prompt changes nothing (fine when the user turn itself cues the "
            "answer, as Mistral's [/INST] does)"
        )
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    try:
        spans = assistant_spans(fmt, messages, rendered, assistant, REFERENCE_TOOLS)
    except TemplateError as exc:
        return [*warnings, f"assistant-only loss cannot be used: {exc}"]
    warnings += _end_of_turn_warnings(fmt, rendered.text, spans, tokenizer)
    return warnings


def end_of_turn_marker(text_after_answer: str, special: dict[str, str]) -> str | None:
    """The marker that closes an answer: the eos token or a known end-of-turn text."""
    stripped = text_after_answer.strip()
    for marker in (special.get("eos_token"), *KNOWN_END_MARKERS):
        if marker and stripped.startswith(marker):
            return marker
    return None


def _end_of_turn_warnings(
    fmt: ChatFormat, text: str, spans: list[tuple[int, int]], tokenizer: ModelTokenizer | None
) -> list[str]:
    """Each trained span should end its answer with an end-of-turn or eos token."""
    answers = [m["content"] for m in REFERENCE_CONVERSATION if m["role"] == "assistant"]
    for start, end in spans:
        trained = text[start:end]
        answer = next((a for a in answers if a in trained), None)
        if answer is None:
            continue
        tail = trained[trained.index(answer) + len(answer) :]
        marker = end_of_turn_marker(tail, fmt.special_tokens)
        if marker is None:
            return [
                "no end-of-turn or eos token is trained after an assistant turn: the model "
                "will not learn to stop"
            ]
        if tokenizer is not None and tokenizer.token_id(marker) is None:
            return [
                f"{marker} is not a single token for this model: generation will not stop on it"
            ]
    return []
