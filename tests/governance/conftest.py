"""Governance fixtures: datasets written straight into the database (no importer involved),
a word-level test tokenizer registered as a base model, and browser-session clients."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Account
from tests.support.html import log_in

WORDS_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} </s>\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)

MakeDataset = Callable[..., int]


def words_tokens(messages: list[dict[str, str]], generation: bool = False) -> int:
    """Tokens the 'test-words' model counts, computed without the app: role tag + words + </s>."""
    return sum(len(m["content"].split()) + 2 for m in messages) + (1 if generation else 0)


def random_text(rng: random.Random, words: int, vocabulary: int = 5000) -> str:
    return " ".join(f"w{rng.randrange(vocabulary)}" for _ in range(words))


def sft(user: str, assistant: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    }


@pytest.fixture(scope="session")
def make_dataset(migrated: None) -> MakeDataset:
    from app.data.versions import content_hash
    from app.db import session_scope
    from app.models import Dataset, DatasetRow

    def make(
        account: Account, rows: list[dict[str, Any]], kind: str = "sft", name: str = "d"
    ) -> int:
        with session_scope() as session:
            dataset = Dataset(
                owner_id=account.user_id,
                name=name,
                kind=kind,
                format="test",
                num_rows=len(rows),
                content_hash=content_hash(rows),
            )
            session.add(dataset)
            session.flush()
            session.execute(
                DatasetRow.__table__.insert(),
                [{"dataset_id": dataset.id, "index": i, "data": r} for i, r in enumerate(rows)],
            )
            return dataset.id

    return make


@pytest.fixture(scope="session")
def words_model(migrated: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Base model 'test-words': one token per whitespace-separated word, a tiny chat template."""
    from sqlalchemy import select
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit

    from app.db import session_scope
    from app.models import BaseModel

    path: Path = tmp_path_factory.mktemp("test-words")
    tokenizer = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = WhitespaceSplit()
    tokenizer.save(str(path / "tokenizer.json"))
    with session_scope() as session:
        model = session.scalar(select(BaseModel).where(BaseModel.name == "test-words"))
        if model is None:
            session.add(BaseModel(name="test-words", path=str(path), chat_template=WORDS_TEMPLATE))
        else:
            model.path, model.chat_template = str(path), WORDS_TEMPLATE
    return "test-words"


@pytest.fixture
def alice_browser(client, alice: Account) -> Iterator[str]:
    yield log_in(client, alice)
    client.cookies.clear()
