"""A model directory's tokenizer as the studio and the trainer both use it: ``tokenizer.json``
through the ``tokenizers`` library (no transformers in the web app) and the special tokens from
``tokenizer_config.json`` that chat templates render with."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from tokenizers import Encoding, Tokenizer

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


class TokenizerUnavailable(ValueError):
    pass


@dataclass(frozen=True)
class ModelTokenizer:
    tokenizer: Tokenizer
    special_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    def token_id(self, text: str | None) -> int | None:
        """The id of ``text`` when it is one token of the vocabulary."""
        return None if not text else self.tokenizer.token_to_id(text)

    def encode(self, text: str, add_special_tokens: bool = False) -> Encoding:
        """``Tokenizer.encode`` without holding the GIL: ``encode`` keeps it for the whole call
        (650 ms on a huge row, stalling every other request and /healthz); ``encode_batch``
        releases it and gives the same encoding."""
        return self.tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)[0]

    def special_ids(self) -> set[int]:
        decoder = self.tokenizer.get_added_tokens_decoder()
        return {token_id for token_id, token in decoder.items() if token.special}


def special_tokens(model_dir: Path) -> dict[str, str]:
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


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> Tokenizer:
    return Tokenizer.from_file(path)


def load_model_tokenizer(model_dir: Path | str) -> ModelTokenizer:
    model_dir = Path(model_dir)
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise TokenizerUnavailable(f"{model_dir.name} has no tokenizer.json")
    return ModelTokenizer(_load(str(path), path.stat().st_mtime), special_tokens(model_dir))
