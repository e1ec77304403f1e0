"""Canonical dataset rows as token sequences, for the trainer (``worker.training.methods``) and
for the "what the model sees" view alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.chat.encoding import (
    ChatFormat,
    Encoding,
    LossOn,
    PreferenceEncoding,
    encode_conversation,
    encode_preference,
    encode_text,
    loss_on,
)
from app.chat.sandbox import TemplateError
from app.chat.tokenizer import ModelTokenizer
from app.data.rowtext import as_messages, row_tools
from app.spec import TrainingSpec


class RowEncodingError(ValueError):
    """A row the template cannot turn into a training sequence; names the row."""


@dataclass(frozen=True)
class RowEncoder:
    fmt: ChatFormat
    tokenizer: ModelTokenizer
    max_length: int | None = None
    loss_on: LossOn = "assistant"

    @classmethod
    def for_spec(cls, spec: TrainingSpec, fmt: ChatFormat, tokenizer: ModelTokenizer) -> RowEncoder:
        return cls(
            fmt,
            tokenizer,
            spec.max_length,
            loss_on(spec.assistant_only_loss, spec.completion_only_loss),
        )

    def conversation(self, row: dict[str, Any]) -> Encoding:
        return encode_conversation(
            self.fmt,
            self.tokenizer,
            as_messages(row["messages"]),
            tools=row_tools(row),
            loss_on=self.loss_on,
            max_length=self.max_length,
        )

    def text(self, row: dict[str, Any]) -> Encoding:
        return encode_text(self.tokenizer, str(row["text"]), self.max_length)

    def preference(self, row: dict[str, Any]) -> PreferenceEncoding:
        return encode_preference(
            self.fmt,
            self.tokenizer,
            as_messages(row["prompt"]),
            as_messages(row["chosen"]),
            as_messages(row["rejected"]),
            tools=row_tools(row),
            max_length=self.max_length,
        )

    def prompt(self, row: dict[str, Any]) -> Encoding:
        """A prompt row as it is served: the generation prompt, nothing trained."""
        rendered = self.fmt.render(
            as_messages(row["prompt"]), add_generation_prompt=True, tools=row_tools(row)
        )
        encoded = self.tokenizer.encode(rendered.text, add_special_tokens=False)
        offsets = [tuple(o) for o in encoded.offsets]
        return Encoding(rendered.text, list(encoded.ids), offsets, [False] * len(offsets), None)  # type: ignore[arg-type]

    def sequences(self, row: dict[str, Any]) -> list[tuple[str, Encoding]]:
        """Every sequence a row becomes, labelled, for display."""
        if "chosen" in row:
            pair = self.preference(row)
            return [("chosen", pair.chosen), ("rejected", pair.rejected)]
        if "messages" in row:
            label = "conversation" if "label" not in row else f"label: {row['label']}"
            return [(label, self.conversation(row))]
        if "text" in row:
            return [("text", self.text(row))]
        if "prompt" in row:
            return [("prompt", self.prompt(row))]
        raise RowEncodingError("the row has no messages, preference pair, text or prompt")


def encode_rows(rows: list[dict[str, Any]], encode: Any) -> list[Any]:
    """``encode`` applied to each row; a template failure names the row (1-based)."""
    encoded = []
    for number, row in enumerate(rows, start=1):
        try:
            encoded.append(encode(row))
        except TemplateError as exc:
            raise RowEncodingError(f"row {number}: {exc}") from exc
    return encoded
