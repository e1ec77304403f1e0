"""Generation metrics against reference answers: exact match, ROUGE-L F1 and corpus BLEU.

Pure functions on strings, written to agree with the usual reference implementations so a
studio figure can be quoted next to a paper's:

- **Exact match** (share, 0 to 1): the answer equals the reference after Unicode NFKC
  normalisation, case folding and collapsing runs of whitespace (leading and trailing
  whitespace ignored). Punctuation counts.
- **ROUGE-L F1** (0 to 1, averaged over answers): the longest common subsequence of words, as
  Google's ``rouge-score`` computes ``rougeL`` (sentence level, no stemming). Words are runs of
  letters and digits after lowercasing, and each CJK character is a word of its own; everything
  else separates words. On ASCII text that is exactly ``rouge-score``'s default tokenizer; unlike
  it, letters outside ASCII are kept rather than dropped. An empty answer or reference scores 0.
- **BLEU** (corpus level, 0 to 100): ``sacrebleu``'s defaults (``corpus_bleu``): the ``13a``
  tokenizer of mteval-v13a, case-sensitive, 4-grams with clipped counts, brevity penalty from
  the summed lengths, and "exp" smoothing (an n-gram order with no match gets precision
  ``1 / (2^k * total)``).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MAX_NGRAM_ORDER = 4

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_ROUGE_WORD = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_SPACES = re.compile(r"\s+")

# mteval-v13a as sacrebleu writes it (tokenizer_13a.py + tokenizer_re.py).
_13A_RULES = (
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # symbols and punctuation
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # period and comma unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... unless before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # dash after a digit
)
_13A_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))


def normalise(text: str) -> str:
    """What exact match compares: NFKC, case-folded, whitespace runs made one space."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def exact_match(answer: str, reference: str) -> bool:
    return normalise(answer) == normalise(reference)


def rouge_tokens(text: str) -> list[str]:
    return _ROUGE_WORD.findall(text.lower())


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 of one answer against its reference."""
    predicted, target = rouge_tokens(answer), rouge_tokens(reference)
    if not predicted or not target:
        return 0.0
    common = _lcs_length(target, predicted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(target)
    return 2 * precision * recall / (precision + recall)


def bleu_tokens(text: str) -> list[str]:
    """sacrebleu's ``13a`` tokenization (after its ``rstrip``)."""
    line = text.rstrip().replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for entity, char in _13A_ENTITIES:
            line = line.replace(entity, char)
    line = f" {line} "
    for pattern, replacement in _13A_RULES:
        line = pattern.sub(replacement, line)
    return line.split()


def _ngrams(tokens: list[str]) -> Counter[tuple[str, ...]]:
    return Counter(
        tuple(tokens[i : i + n])
        for n in range(1, MAX_NGRAM_ORDER + 1)
        for i in range(len(tokens) - n + 1)
    )


@dataclass(frozen=True)
class BleuScore:
    score: float  # 0 to 100
    precisions: list[float]  # per n-gram order, 0 to 100
    brevity_penalty: float
    answer_length: int
    reference_length: int


def corpus_bleu(answers: Sequence[str], references: Sequence[str]) -> BleuScore:
    """Corpus BLEU of ``answers`` against one reference each."""
    if len(answers) != len(references):
        raise ValueError("one reference per answer")
    correct, total = [0] * MAX_NGRAM_ORDER, [0] * MAX_NGRAM_ORDER
    answer_length = reference_length = 0
    for answer, reference in zip(answers, references, strict=True):
        hyp, ref = bleu_tokens(answer), bleu_tokens(reference)
        answer_length, reference_length = answer_length + len(hyp), reference_length + len(ref)
        ref_counts = _ngrams(ref)
        for ngram, count in _ngrams(hyp).items():
            total[len(ngram) - 1] += count
            correct[len(ngram) - 1] += min(count, ref_counts.get(ngram, 0))
    penalty = _brevity_penalty(answer_length, reference_length)
    precisions = _smoothed_precisions(correct, total)
    if not any(correct):
        return BleuScore(0.0, [0.0] * MAX_NGRAM_ORDER, penalty, answer_length, reference_length)
    logs = [math.log(p) if p > 0 else -math.inf for p in precisions]
    score = penalty * math.exp(sum(logs) / MAX_NGRAM_ORDER)
    return BleuScore(score, precisions, penalty, answer_length, reference_length)


def _brevity_penalty(answer_length: int, reference_length: int) -> float:
    if answer_length >= reference_length:
        return 1.0
    return math.exp(1 - reference_length / answer_length) if answer_length > 0 else 0.0


def _smoothed_precisions(correct: list[int], total: list[int]) -> list[float]:
    precisions = [0.0] * MAX_NGRAM_ORDER
    halvings = 1.0
    for n in range(MAX_NGRAM_ORDER):
        if total[n] == 0:
            break  # the answers are all shorter than n + 1 words: BLEU is 0
        if correct[n] == 0:
            halvings *= 2
            precisions[n] = 100.0 / (halvings * total[n])
        else:
            precisions[n] = 100.0 * correct[n] / total[n]
    return precisions
