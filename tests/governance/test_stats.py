"""Statistics checked against independent computations."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from app.data.stats import DEFAULT_MAX_LENGTH
from app.db import session_scope
from app.models import Dataset
from tests.conftest import Account
from tests.governance.conftest import MakeDataset, random_text, sft, words_tokens


def _stats(client, account: Account, dataset_id: int, **params) -> dict:
    response = client.get(
        f"/api/datasets/{dataset_id}/stats", headers=account.headers, params=params
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_sft_stats_match_an_independent_count(
    client, alice: Account, make_dataset: MakeDataset, words_model: str
) -> None:
    rng = random.Random(5)
    rows = []
    for i in range(120):
        turns = [
            {"role": role, "content": random_text(rng, rng.randint(1, 80))}
            for role in ["user", "assistant"] * (1 + i % 3)
        ]
        if i % 4 == 0:
            turns.insert(0, {"role": "system", "content": "Be brief."})
        rows.append({"messages": turns})
    rows += [rows[0], rows[1]]  # two exact duplicates
    dataset_id = make_dataset(alice, rows)
    stats = _stats(client, alice, dataset_id, model=words_model, max_length=150)

    lengths = [words_tokens(r["messages"]) for r in rows]
    assert stats["rows"] == 122
    assert stats["turns"]["counts"] == {
        str(n): c for n, c in sorted(Counter(len(r["messages"]) for r in rows).items())
    }
    assert stats["turns"]["mean"] == round(sum(len(r["messages"]) for r in rows) / 122, 2)
    tokens = stats["tokens"]
    assert tokens["model"] == words_model and tokens["max_length"] == 150
    assert (tokens["min"], tokens["max"]) == (min(lengths), max(lengths))
    assert tokens["mean"] == round(sum(lengths) / len(lengths), 2)
    assert tokens["truncated"] == sum(n > 150 for n in lengths)
    hist = tokens["histogram"]
    assert sum(hist["counts"]) == 122 and len(hist["edges"]) == len(hist["counts"]) + 1
    width = hist["edges"][1]
    assert hist["counts"] == [
        sum(lo <= n < lo + width for n in lengths) for lo in hist["edges"][:-1]
    ]
    assert stats["duplicates"] == {"exact": 2, "rate": round(2 / 122, 4)}
    assert stats["scripts"]["letters"] == {"Latin": 1.0}
    assert stats["kto"] is None


def test_kto_balance_scripts_and_truncation(
    client, alice: Account, make_dataset: MakeDataset, words_model: str
) -> None:
    texts = ["hello world", "北京是中国的首都", "привет мир", "مرحبا بالعالم", "hola"]
    rows = [
        {**sft(text, "ok" if i % 2 else "yes"), "label": i != 2} for i, text in enumerate(texts)
    ]
    dataset_id = make_dataset(alice, rows, kind="kto")
    stats = _stats(client, alice, dataset_id, model=words_model, max_length=6)
    assert stats["kto"] == {"false": 1, "true": 4}
    letters = Counter()
    for row in rows:
        for m in row["messages"]:
            letters.update(c for c in m["content"] if c.isalpha())
    han = sum(n for c, n in letters.items() if "\u4e00" <= c <= "\u9fff")
    assert stats["scripts"]["letters"]["Han"] == round(han / sum(letters.values()), 4)
    assert stats["scripts"]["rows"] == {"Latin": 2, "Han": 1, "Cyrillic": 1, "Arabic": 1}
    # user + answer: (words + 2) each; "hello world" gives 4 + 3 = 7 > 6.
    lengths = [words_tokens(r["messages"]) for r in rows]
    assert stats["tokens"]["truncated"] == sum(n > 6 for n in lengths) == 3


def test_other_kinds_count_their_conversations(
    client, alice: Account, make_dataset: MakeDataset, words_model: str
) -> None:
    user = [{"role": "user", "content": "a b c"}]
    pref = [
        {
            "prompt": user,
            "chosen": [{"role": "assistant", "content": "short"}],
            "rejected": [{"role": "assistant", "content": "a much longer answer"}],
        }
    ]
    pref_stats = _stats(
        client, alice, make_dataset(alice, pref, kind="preference"), model=words_model
    )
    assert pref_stats["tokens"]["max"] == 5 + 6  # the longer of prompt+chosen, prompt+rejected
    assert pref_stats["turns"]["counts"] == {"2": 1}
    prompts = [{"prompt": user, "reference": "d"}]
    prompt_stats = _stats(
        client, alice, make_dataset(alice, prompts, kind="prompt"), model=words_model
    )
    assert prompt_stats["tokens"]["max"] == 5 + 1  # with the generation prompt
    text_stats = _stats(
        client,
        alice,
        make_dataset(alice, [{"text": "one two three"}], kind="text"),
        model=words_model,
    )
    assert text_stats["tokens"]["max"] == 3 and text_stats["turns"]["counts"] == {"0": 1}


def test_default_stats_are_cached_on_the_dataset(
    client, alice: Account, make_dataset: MakeDataset, words_model: str
) -> None:
    dataset_id = make_dataset(alice, [sft("a b", "c")])
    custom = _stats(client, alice, dataset_id, max_length=7)
    with session_scope() as session:
        assert session.get(Dataset, dataset_id).stats is None
    default = _stats(client, alice, dataset_id)
    assert default["params"]["max_length"] == DEFAULT_MAX_LENGTH
    assert custom["params"]["model"] == default["params"]["model"] is not None
    with session_scope() as session:
        assert session.get(Dataset, dataset_id).stats == default


def test_bundled_tokenizer_counts_like_transformers(
    client, alice: Account, make_dataset: MakeDataset, bundled_model_dir
) -> None:
    """The real SmolLM2 tokenizer and chat template against transformers' own rendering."""
    from transformers import AutoTokenizer

    from app.base_models import register_model

    with session_scope() as session:
        register_model(session, "smollm2-stats", bundled_model_dir)
    rows = [
        sft("What is the capital of France?", "Paris."),
        {
            "messages": [{"role": "system", "content": "Be brief."}]
            + sft("你好", "你好。")["messages"]
        },
    ]
    stats = _stats(client, alice, make_dataset(alice, rows), model="smollm2-stats")
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    encoded = [tokenizer.apply_chat_template(r["messages"], return_dict=True) for r in rows]
    lengths = [len(e["input_ids"]) for e in encoded]
    assert (stats["tokens"]["min"], stats["tokens"]["max"]) == (min(lengths), max(lengths))
    assert stats["tokens"]["template_errors"] == 0


@pytest.mark.parametrize("params", [{"model": "no-such-model"}, {"max_length": 0}])
def test_bad_stats_requests(client, alice: Account, make_dataset: MakeDataset, params) -> None:
    dataset_id = make_dataset(alice, [sft("a", "b")])
    response = client.get(f"/api/datasets/{dataset_id}/stats", headers=alice.headers, params=params)
    assert response.status_code == 422
