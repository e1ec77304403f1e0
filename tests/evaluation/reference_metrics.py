"""The generation metrics as the reference implementations compute them (rouge-score,
sacrebleu), to check the studio's own (app.evaluation.text_metrics) against."""

from __future__ import annotations

import unicodedata

import sacrebleu
from rouge_score.rouge_scorer import RougeScorer

from app.evaluation import text_metrics


class StudioWords:
    """rouge-score takes any tokenizer; for text beyond ASCII, where the studio keeps letters
    rouge-score's default drops, its LCS F-measure is checked on the studio's words."""

    def tokenize(self, text: str) -> list[str]:
        return text_metrics.rouge_tokens(text)


_DEFAULT = RougeScorer(["rougeL"])
_STUDIO_WORDS = RougeScorer(["rougeL"], tokenizer=StudioWords())


def rouge_l(answer: str, reference: str) -> float:
    scorer = _DEFAULT if (answer + reference).isascii() else _STUDIO_WORDS
    return scorer.score(reference, answer)["rougeL"].fmeasure


def bleu(answers: list[str], references: list[str]) -> float:
    return sacrebleu.corpus_bleu(answers, [references]).score


def exact_match(answer: str, reference: str) -> bool:
    def norm(text: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", text).casefold().split())

    return norm(answer) == norm(reference)
