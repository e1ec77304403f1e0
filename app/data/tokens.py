"""Token lengths of canonical rows as a base model sees them: its chat template, then its
tokenizer (``tokenizer.json`` through the ``tokenizers`` library; never transformers here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from tokenizers import Tokenizer

from app.chat.sandbox import TemplateError, plain_chat, render_chat
from app.chat.tokenizer import TokenizerUnavailable, load_model_tokenizer
from app.data.rowtext import conversations, row_tools
from app.models import BaseModel

__all__ = ["TokenCounter", "TokenizerUnavailable", "find_model", "load_counter"]


def tokenizer_file(model: BaseModel) -> Path:
    return Path(model.path) / "tokenizer.json"


@dataclass
class TokenCounter:
    """Renders a row with the model's chat template and counts its tokens."""

    model_name: str
    tokenizer: Tokenizer
    template: str | None
    special_tokens: dict[str, str] = field(default_factory=dict)
    template_errors: int = 0
    first_template_error: str | None = None

    def _render(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool, tools: list | None
    ) -> str:
        if self.template:
            try:
                return render_chat(
                    self.template,
                    messages,
                    add_generation_prompt=add_generation_prompt,
                    tools=tools,
                    special_tokens=self.special_tokens,
                )
            except TemplateError as exc:
                self.template_errors += 1
                self.first_template_error = self.first_template_error or str(exc)
        return plain_chat(messages, add_generation_prompt=add_generation_prompt)

    def lengths(self, rows: list[dict[str, Any]]) -> list[int]:
        """Tokens per row; a preference row counts its longer answer."""
        chat_texts: list[str] = []
        owners: list[int] = []
        plain_texts: list[str] = []
        plain_owners: list[int] = []
        for position, row in enumerate(rows):
            convs = conversations(row)
            if not convs:
                plain_texts.append(str(row.get("text", "")))
                plain_owners.append(position)
            for messages, generation in convs:
                chat_texts.append(self._render(messages, generation, row_tools(row)))
                owners.append(position)
        result = [0] * len(rows)
        for texts, who, special in ((chat_texts, owners, False), (plain_texts, plain_owners, True)):
            if not texts:
                continue
            encoded = self.tokenizer.encode_batch(texts, add_special_tokens=special)
            for position, enc in zip(who, encoded, strict=True):
                result[position] = max(result[position], len(enc.ids))
        return result


def load_counter(model: BaseModel, template: str | None = None) -> TokenCounter:
    """Counts tokens as ``model`` sees rows, with ``template`` (default: its own)."""
    loaded = load_model_tokenizer(model.path)
    return TokenCounter(
        model.name, loaded.tokenizer, template or model.chat_template, loaded.special_tokens
    )


def models_with_tokenizer(session: Session) -> list[BaseModel]:
    models = session.scalars(select(BaseModel).order_by(BaseModel.id)).all()
    return [m for m in models if tokenizer_file(m).is_file()]


def find_model(session: Session, ref: int | str | None) -> BaseModel | None:
    """A base model by id or name; None (no ref) gives the first one with a tokenizer."""
    if ref in (None, ""):
        usable = models_with_tokenizer(session)
        return usable[0] if usable else None
    if isinstance(ref, int) or str(ref).isdigit():
        model = session.get(BaseModel, int(ref))
        if model is not None:
            return model
    return session.scalar(select(BaseModel).where(BaseModel.name == str(ref)))
