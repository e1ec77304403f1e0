"""What the model sees: a row rendered with a chat template, tokenized, and which tokens carry
loss. The training process builds its inputs and labels with these same functions
(``worker.training.methods``), so what the studio shows and what the trainer trains on cannot
disagree; a test compares them token by token.

Which tokens carry loss (SFT):
- ``assistant``: every assistant turn, except those with ``loss_weight`` 0 (LLaMA-Factory);
- ``last``: only the final assistant turn (the completion);
- ``all``: every token.
Assistant turns are found with the template's ``{% generation %}`` markers when it has them, and
otherwise by rendering the conversation up to each turn (the text between "up to the previous
turn, with the generation prompt" and "up to this turn"), which works for any template whose
renderings are prefixes of each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from app.chat.sandbox import Rendered, TemplateError, plain_chat, render_with_spans
from app.chat.tokenizer import ModelTokenizer

LossOn = Literal["assistant", "last", "all"]
Span = tuple[int, int]
IGNORE_INDEX = -100  # what torch's cross entropy skips


def loss_on(assistant_only_loss: bool, completion_only_loss: bool) -> LossOn:
    """The SFT spec's two switches as one choice (the final turn alone wins)."""
    if completion_only_loss:
        return "last"
    return "assistant" if assistant_only_loss else "all"


@dataclass(frozen=True)
class ChatFormat:
    """A chat template (None: plain ``role: content`` lines) with its special tokens."""

    template: str | None
    special_tokens: dict[str, str]

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = False,
        tools: list | None = None,
    ) -> Rendered:
        if self.template is None:
            return Rendered(plain_chat(messages, add_generation_prompt=add_generation_prompt), ())
        return render_with_spans(
            self.template,
            messages,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            special_tokens=self.special_tokens,
        )


@dataclass(frozen=True)
class Encoding:
    """One token sequence: its text, ids, character offsets, which tokens carry loss, and where
    ``max_length`` cuts it (tokens from ``kept`` on are truncated away)."""

    text: str
    ids: list[int]
    offsets: list[Span]
    loss: list[bool]
    max_length: int | None

    @property
    def kept(self) -> int:
        return len(self.ids) if self.max_length is None else min(len(self.ids), self.max_length)

    @property
    def input_ids(self) -> list[int]:
        return self.ids[: self.kept]

    @property
    def labels(self) -> list[int]:
        pairs = zip(self.input_ids, self.loss[: self.kept], strict=True)
        return [token if on else IGNORE_INDEX for token, on in pairs]

    @property
    def trains(self) -> bool:
        """Whether any token within max_length carries loss (the trainers drop rows that don't)."""
        return any(self.loss[: self.kept])

    def loss_mask(self) -> list[int]:
        """1 for each kept token that carries loss."""
        return [int(on) for on in self.loss[: self.kept]]


def _overlaps(offset: Span, spans: list[Span]) -> bool:
    start, end = offset
    return any(start < span_end and end > span_start for span_start, span_end in spans)


def encode_spans(
    tokenizer: ModelTokenizer,
    text: str,
    spans: list[Span],
    max_length: int | None,
    *,
    add_special_tokens: bool = False,
) -> Encoding:
    """Tokenize ``text``; a token carries loss when its characters overlap one of ``spans``."""
    encoded = tokenizer.encode(text, add_special_tokens=add_special_tokens)
    offsets = [tuple(o) for o in encoded.offsets]
    loss = [_overlaps(o, spans) for o in offsets]
    return Encoding(text, list(encoded.ids), offsets, loss, max_length)  # type: ignore[arg-type]


def _trained_turns(messages: list[dict[str, Any]], loss_on: LossOn) -> list[int]:
    assistant = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    if loss_on == "last":
        return assistant[-1:]
    return [i for i in assistant if messages[i].get("loss_weight", 1) not in (0, 0.0, False)]


def _turn_span_by_prefix(
    fmt: ChatFormat, messages: list[dict[str, Any]], turn: int, tools: list | None, full: str
) -> Span:
    before = fmt.render(messages[:turn], add_generation_prompt=True, tools=tools).text
    upto = fmt.render(messages[: turn + 1], tools=tools).text
    if not (full.startswith(upto) and upto.startswith(before)):
        raise TemplateError(
            f"cannot locate assistant turn {turn + 1}: this template renders a conversation "
            "differently from its beginning; add {% generation %} markers around what the "
            "assistant says"
        )
    return len(before), len(upto)


def assistant_spans(
    fmt: ChatFormat,
    messages: list[dict[str, Any]],
    rendered: Rendered,
    turns: list[int],
    tools: list | None,
) -> list[Span]:
    """The character spans of the given assistant turns in ``rendered``."""
    assistant = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
    marked = list(rendered.generation_spans)
    if marked and len(marked) == len(assistant):
        by_turn = dict(zip(assistant, marked, strict=True))
        return [by_turn[i] for i in turns]
    if marked:  # markers around some turns only: they alone say what is generated (as in HF)
        if turns == assistant:
            return marked
        if turns == assistant[-1:]:
            return marked[-1:]
        raise TemplateError(
            "this template marks generation around some assistant turns only, so a message's "
            "loss_weight cannot be matched to its turn"
        )
    return [_turn_span_by_prefix(fmt, messages, i, tools, rendered.text) for i in turns]


def encode_conversation(
    fmt: ChatFormat,
    tokenizer: ModelTokenizer,
    messages: list[dict[str, Any]],
    *,
    tools: list | None = None,
    loss_on: LossOn = "assistant",
    max_length: int | None = None,
) -> Encoding:
    """An SFT row: the whole conversation in one sequence."""
    rendered = fmt.render(messages, tools=tools)
    if loss_on == "all":
        spans = [(0, len(rendered.text))]
    else:
        turns = _trained_turns(messages, loss_on)
        spans = assistant_spans(fmt, messages, rendered, turns, tools)
    return encode_spans(tokenizer, rendered.text, spans, max_length)


def encode_text(tokenizer: ModelTokenizer, text: str, max_length: int | None) -> Encoding:
    """A continual-pretraining row: the tokenizer's own special tokens, then eos, all trained."""
    eos = tokenizer.eos_token
    if eos and not text.endswith(eos):
        text += eos
    return encode_spans(tokenizer, text, [(0, len(text))], max_length, add_special_tokens=True)


@dataclass(frozen=True)
class PreferenceEncoding:
    """A preference row as the DPO trainer takes it: the prompt's tokens, then each answer's.
    ``chosen`` and ``rejected`` are the full sequences (prompt + answer) with loss on the answer,
    cut at max_length from the start as the trainer's collator does."""

    prompt_ids: list[int]
    chosen: Encoding
    rejected: Encoding

    def trainer_columns(self) -> dict[str, list[int]]:
        cut = len(self.prompt_ids)
        return {
            "prompt_ids": self.prompt_ids,
            "chosen_ids": self.chosen.ids[cut:],
            "rejected_ids": self.rejected.ids[cut:],
        }


def _answer(
    fmt: ChatFormat,
    tokenizer: ModelTokenizer,
    prompt_text: str,
    prompt_ids: list[int],
    prompt_offsets: list[Span],
    conversation: list[dict[str, Any]],
    tools: list | None,
    max_length: int | None,
) -> Encoding:
    full = fmt.render(conversation, tools=tools).text
    if not full.startswith(prompt_text):
        raise TemplateError(
            "the template renders the answer's conversation without the prompt as its beginning"
        )
    # The answer is tokenized on its own, as the model generates it after the prompt's tokens.
    answer = tokenizer.encode(full[len(prompt_text) :], add_special_tokens=False)
    shift = len(prompt_text)
    offsets = prompt_offsets + [(s + shift, e + shift) for s, e in answer.offsets]
    loss = [False] * len(prompt_ids) + [True] * len(answer.ids)
    return Encoding(full, prompt_ids + list(answer.ids), offsets, loss, max_length)


def encode_preference(
    fmt: ChatFormat,
    tokenizer: ModelTokenizer,
    prompt: list[dict[str, Any]],
    chosen: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    *,
    tools: list | None = None,
    max_length: int | None = None,
) -> PreferenceEncoding:
    prompt_text = fmt.render(prompt, add_generation_prompt=True, tools=tools).text
    encoded = tokenizer.encode(prompt_text, add_special_tokens=False)
    prompt_ids, offsets = list(encoded.ids), [tuple(o) for o in encoded.offsets]
    answers = [
        _answer(fmt, tokenizer, prompt_text, prompt_ids, offsets, prompt + a, tools, max_length)  # type: ignore[arg-type]
        for a in (chosen, rejected)
    ]
    return PreferenceEncoding(prompt_ids, *answers)
