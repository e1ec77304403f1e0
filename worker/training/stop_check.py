"""The stop check: after training, greedy generation on a few prompts (rendered with the locked
template, as serving renders them) records whether the model ends its answer with its end-of-turn
token. A model that never learned to stop is the classic template/masking failure. Which methods
get it is the method table's ``stop_check`` (``app.methods``); how many prompts, the spec's
``stop_check_prompts`` (0: none)."""

from __future__ import annotations

import time
from typing import Any

import torch

from app.chat.encoding import ChatFormat
from app.chat.rows import RowEncoder
from app.chat.validation import REFERENCE_CONVERSATION, end_of_turn_marker
from app.data.rowtext import as_messages

PROMPTS = 4  # the spec's stop_check_prompts default
MAX_NEW_TOKENS = 64
MAX_SECONDS = 60.0  # generate's own time limit: the check never holds a finished run longer


def prompt_messages(row: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The conversation up to the last assistant turn (what the model is asked to answer)."""
    if "prompt" in row:
        return as_messages(row["prompt"])
    messages = as_messages(row.get("messages"))
    last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    return messages[:last] if last else None


def end_of_turn(fmt: ChatFormat) -> str | None:
    """What the template writes after an assistant turn (``<|im_end|>``, ``<|eot_id|>``...)."""
    messages = [*REFERENCE_CONVERSATION[:2], {"role": "assistant", "content": "ANSWER"}]
    text = fmt.render(messages).text
    tail = text[text.rfind("ANSWER") + len("ANSWER") :]
    return end_of_turn_marker(tail, fmt.special_tokens)


def stop_ids(encoder: RowEncoder) -> tuple[str | None, list[int]]:
    marker = end_of_turn(encoder.fmt)
    ids = {
        encoder.tokenizer.token_id(marker),
        encoder.tokenizer.token_id(encoder.tokenizer.eos_token),
    }
    return marker, sorted(i for i in ids if i is not None)


@torch.no_grad()
def run_stop_check(
    model: Any, encoder: RowEncoder, rows: list[dict[str, Any]], prompts: int = PROMPTS
) -> dict[str, Any]:
    """Answer the first ``prompts`` prompts of ``rows`` greedily, in one left-padded batch,
    within ``MAX_SECONDS``; how many of the answers ended with the end-of-turn token."""
    started = time.monotonic()
    marker, ends = stop_ids(encoder)
    conversations = [p for p in map(prompt_messages, rows) if p][:prompts]
    if not conversations or not ends:
        return {"prompts": 0, "stopped": 0, "end_token": marker, "samples": []}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    encoded = [encoder.prompt({"prompt": messages}).ids for messages in conversations]
    longest = max(map(len, encoded))
    pad = ends[0]
    input_ids = torch.tensor([[pad] * (longest - len(ids)) + ids for ids in encoded], device=device)
    attention_mask = torch.tensor(
        [[0] * (longest - len(ids)) + [1] * len(ids) for ids in encoded], device=device
    )
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention_mask,
        max_new_tokens=MAX_NEW_TOKENS,
        max_time=MAX_SECONDS,
        do_sample=False,
        eos_token_id=ends,
        pad_token_id=pad,
    )
    model.train(was_training)
    timed_out = time.monotonic() - started >= MAX_SECONDS
    samples = [
        _sample(messages, answer, ends, encoder, timed_out)
        for messages, answer in zip(conversations, output[:, longest:].tolist(), strict=True)
    ]
    # An answer cut by the time limit before its token cap says nothing about stopping.
    decided = [s for s in samples if s["stopped"] is not None]
    stopped = sum(s["stopped"] for s in decided)
    return {
        "prompts": len(decided),
        "stopped": stopped,
        "rate": stopped / len(decided) if decided else None,
        "timed_out": timed_out,
        "end_token": marker,
        "max_new_tokens": MAX_NEW_TOKENS,
        "seconds": round(time.monotonic() - started, 2),
        "samples": samples,
    }


def _sample(
    messages: list[dict[str, Any]],
    answer: list[int],
    ends: list[int],
    encoder: RowEncoder,
    timed_out: bool,
) -> dict[str, Any]:
    """One answer, cut after its first end token (the batch pads finished answers); whether it
    stopped is unknown (None) when the time limit cut it short of its token cap."""
    end = next((i for i, token in enumerate(answer) if token in ends), None)
    generated = answer if end is None else answer[: end + 1]
    unknown = end is None and timed_out and len(answer) < MAX_NEW_TOKENS
    return {
        "prompt": messages[-1].get("content", "")[:200],
        "output": encoder.tokenizer.tokenizer.decode(generated, skip_special_tokens=False),
        "stopped": None if unknown else end is not None,
        "new_tokens": len(generated),
    }
