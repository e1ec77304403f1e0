"""What an evaluation measures, on a loaded model (``worker.inference``):

- eval loss and perplexity: the token-weighted mean negative log-likelihood of the tokens the
  studio's encoder marks as trained (``Encoding.labels``: the same mask the trainer uses), and
  its exponential;
- generation against references (exact match, ROUGE-L, BLEU from ``app.evaluation.text_metrics``)
  and the stop check share, from greedy answers to each row's prompt;
- preference accuracy: the share of pairs whose chosen answer scores above the rejected one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from app.chat.encoding import IGNORE_INDEX, Encoding, PreferenceEncoding
from app.data.rowtext import as_messages
from app.evaluation import text_metrics
from app.methods import PairScoring, get_method
from worker.inference import Decoding, LoadedModel, generate
from worker.training.stop_check import prompt_messages

PROMPT_PREVIEW = 200

PreferenceMode = PairScoring


def preference_mode(method: str | None) -> PreferenceMode:
    """How a pair is scored with a model trained by ``method`` (its ``pair_scoring`` in the
    method table); a base model (no method) by the answers' log-likelihood."""
    return get_method(method).pair_scoring if method is not None else "likelihood"


# Log-likelihood ------------------------------------------------------------------------------


def trained_tokens(encoding: Encoding) -> int:
    """Tokens whose loss counts: labelled, and predictable (the first token has no context)."""
    return sum(1 for label in encoding.labels[1:] if label != IGNORE_INDEX)


@torch.no_grad()
def nll(model: Any, encoding: Encoding) -> tuple[float, int]:
    """The summed negative log-likelihood of ``encoding``'s trained tokens, and their count.

    The model computes it (its shifted cross entropy, mean over labelled tokens, times their
    count), so prompt-learning adapters that prepend virtual tokens are handled by peft."""
    count = trained_tokens(encoding)
    if count == 0:
        return 0.0, 0
    device = next(model.parameters()).device
    input_ids = torch.tensor([encoding.input_ids], device=device)
    labels = torch.tensor([encoding.labels], device=device)
    output = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), labels=labels)
    return float(output.loss.float()) * count, count


def loss_metrics(model: Any, encodings: Iterable[Encoding]) -> dict[str, Any]:
    total, tokens, rows, skipped = 0.0, 0, 0, 0
    for encoding in encodings:
        summed, count = nll(model, encoding)
        if count == 0:
            skipped += 1  # nothing trained within max_length (the trainers drop such rows too)
            continue
        total, tokens, rows = total + summed, tokens + count, rows + 1
    if tokens == 0:
        raise ValueError("no row has a trained token within max_length: nothing to measure")
    mean = total / tokens
    return {
        "eval_loss": mean,
        "perplexity": math.exp(mean) if mean < 700 else None,  # None: beyond a float
        "loss": {"rows": rows, "tokens": tokens, "rows_without_trained_tokens": skipped},
    }


# Generation ----------------------------------------------------------------------------------


def reference_of(row: dict[str, Any]) -> str | None:
    """The answer a generation is compared with: a prompt row's ``reference``, or what the last
    assistant turn of a conversation says."""
    if "prompt" in row and "chosen" not in row:
        reference = row.get("reference")
        return reference if isinstance(reference, str) and reference else None
    if "messages" in row and "label" not in row:
        messages = as_messages(row["messages"])
        last = [m for m in messages if m.get("role") == "assistant"]
        return last[-1]["content"] if last else None
    return None


@dataclass(frozen=True)
class Sample:
    index: int
    prompt: str
    reference: str | None
    output: str
    stopped: bool

    def as_dict(self) -> dict[str, Any]:
        scored: dict[str, Any] = {}
        if self.reference is not None:
            scored = {
                "exact_match": text_metrics.exact_match(self.output, self.reference),
                "rouge_l": text_metrics.rouge_l(self.output, self.reference),
            }
        return {
            "index": self.index,
            "prompt": self.prompt[:PROMPT_PREVIEW],
            "reference": self.reference,
            "output": self.output,
            "stopped": self.stopped,
            **scored,
        }


def generate_samples(
    loaded: LoadedModel, rows: list[dict[str, Any]], decoding: Decoding, limit: int
) -> list[Sample]:
    """Greedy answers to the prompts of the first ``limit`` rows that have one."""
    samples = []
    for index, row in enumerate(rows):
        if len(samples) >= limit:
            break
        messages = prompt_messages(row)
        if not messages:
            continue
        output, stopped = generate(loaded, messages, decoding)
        prompt = messages[-1].get("content", "")
        samples.append(Sample(index, prompt, reference_of(row), output, stopped))
    return samples


def generation_metrics(samples: list[Sample], metrics: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    scored = [s for s in samples if s.reference is not None]
    answers, references = [s.output for s in scored], [s.reference or "" for s in scored]
    if "exact_match" in metrics and scored:
        matches = [text_metrics.exact_match(a, r) for a, r in zip(answers, references, strict=True)]
        results["exact_match"] = sum(matches) / len(scored)
    if "rouge_l" in metrics and scored:
        scores = [text_metrics.rouge_l(a, r) for a, r in zip(answers, references, strict=True)]
        results["rouge_l"] = sum(scores) / len(scored)
    if "bleu" in metrics and scored:
        bleu = text_metrics.corpus_bleu(answers, references)
        results["bleu"] = bleu.score
        results["bleu_detail"] = {
            "precisions": bleu.precisions,
            "brevity_penalty": bleu.brevity_penalty,
            "answer_length": bleu.answer_length,
            "reference_length": bleu.reference_length,
        }
    if "stop_rate" in metrics and samples:
        results["stop_rate"] = sum(s.stopped for s in samples) / len(samples)
    return results


# Preference ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerScores:
    chosen: list[float]
    rejected: list[float]


def likelihood_scores(
    model: Any, pairs: list[PreferenceEncoding], *, normalised: bool = False
) -> AnswerScores:
    """Each answer's log-likelihood given its prompt (per token when ``normalised``)."""

    def score(encoding: Encoding) -> float:
        summed, count = nll(model, encoding)
        if count == 0:
            return 0.0
        return -summed / count if normalised else -summed

    return AnswerScores([score(p.chosen) for p in pairs], [score(p.rejected) for p in pairs])


@torch.no_grad()
def reward_scores(model: Any, pairs: list[PreferenceEncoding]) -> AnswerScores:
    """A reward model's score of each whole conversation (prompt and answer)."""
    device = next(model.parameters()).device

    def score(encoding: Encoding) -> float:
        input_ids = torch.tensor([encoding.input_ids], device=device)
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        return float(logits[0, 0].float())

    return AnswerScores([score(p.chosen) for p in pairs], [score(p.rejected) for p in pairs])


def preference_metrics(
    policy: AnswerScores,
    mode: PreferenceMode,
    *,
    beta: float = 1.0,
    reference: AnswerScores | None = None,
) -> dict[str, Any]:
    """Accuracy (chosen strictly above rejected, as TRL counts it) and the mean margin. The
    implicit reward is ``beta * (log pi(answer) - log pi_ref(answer))``."""
    if mode == "implicit_reward":
        assert reference is not None
        chosen = [beta * (p - r) for p, r in zip(policy.chosen, reference.chosen, strict=True)]
        rejected = [
            beta * (p - r) for p, r in zip(policy.rejected, reference.rejected, strict=True)
        ]
    elif mode == "normalised_likelihood":
        chosen, rejected = [beta * x for x in policy.chosen], [beta * x for x in policy.rejected]
    else:
        chosen, rejected = policy.chosen, policy.rejected
    if not chosen:
        raise ValueError("no preference pair to measure")
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "preference_accuracy": sum(m > 0 for m in margins) / len(margins),
        "preference": {
            "pairs": len(margins),
            "mode": mode,
            "beta": beta if mode in ("implicit_reward", "normalised_likelihood") else None,
            "mean_margin": sum(margins) / len(margins),
            "mean_chosen": sum(chosen) / len(chosen),
            "mean_rejected": sum(rejected) / len(rejected),
        },
    }
