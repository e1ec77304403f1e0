"""Token lengths of canonical rows as a base model sees them: its chat template, then its
tokenizer (``tokenizer.json`` through the ``tokenizers`` library; never transformers here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from tokenizers import Tokenizer

from app.chat_templates import TemplateError, plain_chat, render_chat
from app.data.rowtext import conversations, row_tools
from app.models import BaseModel

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


class TokenizerUnavailable(ValueError):
    pass


@lru_cache(maxsize=8)
def _load_tokenizer(path: str, mtime: float) -> Tokenizer:
    return Tokenizer.from_file(path)


def _special_tokens(model_dir: Path) -> dict[str, str]:
    config = model_dir / "tokenizer_config.json"
    if not config.is_file():
        return {}
    data = json.loads(config.read_text())
    found: dict[str, str] = {}
    for key in SPECIAL_TOKEN_KEYS:
        value = data.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            found[key] = value
    return found


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


def load_counter(model: BaseModel) -> TokenCounter:
    path = tokenizer_file(model)
    if not path.is_file():
        raise TokenizerUnavailable(f"base model '{model.name}' has no tokenizer.json")
    tokenizer = _load_tokenizer(str(path), path.stat().st_mtime)
    return TokenCounter(
        model.name, tokenizer, model.chat_template, _special_tokens(Path(model.path))
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
