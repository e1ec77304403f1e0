"""The stop check: after training, greedy generation on a few prompts (rendered with the locked
template, as serving renders them) records whether the model ends its answer with its end-of-turn
token. A model that never learned to stop is the classic template/masking failure. Which methods
get it is the method table's ``stop_check`` (``app.methods``)."""

from __future__ import annotations

from typing import Any

import torch

from app.chat.encoding import ChatFormat
from app.chat.rows import RowEncoder
from app.chat.validation import REFERENCE_CONVERSATION, end_of_turn_marker
from app.data.rowtext import as_messages

PROMPTS = 4
MAX_NEW_TOKENS = 64


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
def run_stop_check(model: Any, encoder: RowEncoder, rows: list[dict[str, Any]]) -> dict[str, Any]:
    marker, ends = stop_ids(encoder)
    prompts = [p for p in map(prompt_messages, rows) if p][:PROMPTS]
    if not prompts or not ends:
        return {"prompts": 0, "stopped": 0, "end_token": marker, "samples": []}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    samples = []
    for messages in prompts:
        ids = encoder.prompt({"prompt": messages}).ids
        input_ids = torch.tensor([ids], device=device)
        output = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            eos_token_id=ends,
            pad_token_id=ends[0],
        )
        generated = output[0, len(ids) :].tolist()
        stopped = bool(generated) and generated[-1] in ends
        samples.append(
            {
                "prompt": messages[-1].get("content", "")[:200],
                "output": encoder.tokenizer.tokenizer.decode(generated, skip_special_tokens=False),
                "stopped": stopped,
                "new_tokens": len(generated),
            }
        )
    model.train(was_training)
    stopped = sum(s["stopped"] for s in samples)
    return {
        "prompts": len(samples),
        "stopped": stopped,
        "rate": stopped / len(samples),
        "end_token": marker,
        "max_new_tokens": MAX_NEW_TOKENS,
        "samples": samples,
    }
