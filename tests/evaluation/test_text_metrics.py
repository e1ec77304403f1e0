"""The studio's generation metrics agree with rouge-score and sacrebleu."""

from __future__ import annotations

import random

import pytest

from app.evaluation import text_metrics
from tests.evaluation import reference_metrics

PAIRS = [
    ("The cat sat on the mat.", "The cat is on the mat."),
    ("Paris is the capital of France.", "The capital of France is Paris."),
    ("3.14 is pi, roughly; 2,000 - 1-2 = x", "pi is 3.14 and 2,000-1 is 1999"),
    ("", "Something."),
    ("Nothing in common", "whatsoever here"),
    ('Tom &amp; Jerry <skipped> said "hi"', "Tom & Jerry said &quot;hi&quot;"),
    ("line one-\nline two\nthree", "line oneline two three"),
    ("Gladly! A green flower.", "Gladly! A green flower."),
    ("A B C D E F", "a b c d e f"),
]
ALPHABET = "abcde ABC 0123 .,-!?&;:()[]{}'\"/\n"


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))


@pytest.mark.parametrize(("answer", "reference"), PAIRS)
def test_rouge_l_matches_rouge_score(answer: str, reference: str) -> None:
    assert text_metrics.rouge_l(answer, reference) == pytest.approx(
        reference_metrics.rouge_l(answer, reference), abs=1e-12
    )


def test_rouge_l_and_sentence_bleu_match_on_random_ascii() -> None:
    rng = random.Random(7)
    for _ in range(300):
        answer, reference = _random_text(rng), _random_text(rng)
        assert text_metrics.rouge_l(answer, reference) == pytest.approx(
            reference_metrics.rouge_l(answer, reference), abs=1e-12
        ), (answer, reference)
        assert text_metrics.corpus_bleu([answer], [reference]).score == pytest.approx(
            reference_metrics.bleu([answer], [reference]), abs=1e-9
        ), (answer, reference)


def test_corpus_bleu_matches_sacrebleu() -> None:
    answers, references = zip(*PAIRS, strict=True)
    ours = text_metrics.corpus_bleu(list(answers), list(references))
    assert ours.score == pytest.approx(reference_metrics.bleu(list(answers), list(references)))
    assert 0 < ours.score < 100


def test_corpus_bleu_matches_sacrebleu_on_random_corpora() -> None:
    rng = random.Random(11)
    words = ["the", "a", "cat", "dog", "sat", "on", "mat", ".", ",", "3.5", "x-1", "(hi)"]
    for _ in range(100):
        size = rng.randint(1, 6)
        answers = [" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(size)]
        references = [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(size)]
        assert text_metrics.corpus_bleu(answers, references).score == pytest.approx(
            reference_metrics.bleu(answers, references), abs=1e-9
        ), (answers, references)


def test_identical_answers_score_full_marks() -> None:
    text = "Gladly! A green flower, and a blue one."
    assert text_metrics.exact_match(f"  {text.upper()}\n", text)
    assert text_metrics.rouge_l(text, text) == 1.0
    assert text_metrics.corpus_bleu([text], [text]).score == pytest.approx(100.0)


def test_exact_match_ignores_case_and_spacing_but_not_words_or_punctuation() -> None:
    assert text_metrics.exact_match("Paris", " paris ")
    assert text_metrics.exact_match("ﬁne  day", "fine day")  # NFKC folds the ligature
    assert not text_metrics.exact_match("Paris.", "Paris")
    assert not text_metrics.exact_match("Paris", "Lyon")
    for answer, reference in PAIRS:
        assert text_metrics.exact_match(answer, reference) == reference_metrics.exact_match(
            answer, reference
        )


def test_rouge_keeps_letters_beyond_ascii() -> None:
    # rouge-score's default tokenizer drops them ("café" becomes "caf"); the studio keeps words
    # whole and scores each CJK character as a word.
    assert text_metrics.rouge_tokens("Un café, s'il vous plaît") == [
        "un", "café", "s", "il", "vous", "plaît"
    ]  # fmt: skip
    assert text_metrics.rouge_tokens("我喜欢猫 ok") == ["我", "喜", "欢", "猫", "ok"]
    assert text_metrics.rouge_l("我喜欢猫", "我喜欢狗") == pytest.approx(0.75)


def test_empty_answers() -> None:
    assert text_metrics.rouge_l("", "") == 0.0
    assert text_metrics.corpus_bleu([""], ["a b c d"]).score == 0.0
    with pytest.raises(ValueError, match="one reference per answer"):
        text_metrics.corpus_bleu(["a"], [])
