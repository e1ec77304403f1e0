"""Record layouts the studio reads, each parsed into ``Parsed`` (then shaped by kind).

- alpaca: instruction, input, output, system, history, label -> sft, kto, prompt
- alpaca_preference: instruction, input, chosen, rejected (strings) -> preference, sft, prompt
- sharegpt: conversations (from/value), system, tools, label -> sft, kto, prompt
- sharegpt_preference: conversations, chosen, rejected (turns) -> preference, sft, prompt
- openai: messages (role/content, tool_calls), tools, label -> sft, kto, prompt
- openai_dpo: input.messages, preferred_output, non_preferred_output -> preference, sft, prompt
- llamafactory_v1: messages with typed content parts, loss_weight -> sft, kto, prompt
- llamafactory_v1_dpo: chosen_messages, rejected_messages -> preference, sft, prompt
- trl_prompt_completion: prompt, completion (strings or messages), label -> sft, kto, prompt
- trl_preference: prompt?, chosen, rejected (strings or messages) -> preference, sft, prompt
- trl_prompt: prompt (string or messages), reference? -> prompt
- text: text -> text

The first kind of each layout is its default; a chat layout whose record has ``label`` makes
``kto`` rows by default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.data.canonical import Context, Parsed, chat
from app.data.errors import Problem
from app.data.messages import Turns, message_list, plain, require_str
from app.data.sharegpt import sharegpt, sharegpt_preference

CHAT_KINDS = ("sft", "kto", "prompt")
PAIR_KINDS = ("preference", "sft", "prompt")
REFERENCE_KEYS = ("reference", "answer", "solution", "ground_truth")


@dataclass(frozen=True)
class Layout:
    name: str
    title: str
    convert: Callable[[dict[str, Any], Context], Parsed]
    kinds: tuple[str, ...]

    def default_kind(self, record: dict[str, Any]) -> str:
        return "kto" if "kto" in self.kinds and "label" in record else self.kinds[0]


def _opt_text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    return "" if value is None else require_str(value, key)


def _one(role: str, content: str, where: str) -> Turns:
    turns = Turns()
    turns.add(plain(role, content), where)
    return turns


def _side(record: dict[str, Any], key: str, role: str) -> Turns:
    """A TRL column: a string (standard) or a list of messages (conversational)."""
    value = record.get(key)
    if isinstance(value, str):
        return _one(role, value, key)
    return message_list(value, key)


def _alpaca_prompt(record: dict[str, Any]) -> Turns:
    turns = Turns()
    if system := _opt_text(record, "system"):
        turns.add(plain("system", system), "system")
    history = record.get("history") or []
    if not isinstance(history, list):
        raise Problem("'{field}' must be a list of [user, assistant] pairs", "history")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise Problem("'{field}' must be a list of [user, assistant] pairs", f"history[{i}]")
        turns.add(plain("user", require_str(pair[0], f"history[{i}][0]")), f"history[{i}][0]")
        turns.add(plain("assistant", require_str(pair[1], f"history[{i}][1]")), f"history[{i}][1]")
    instruction, extra = _opt_text(record, "instruction"), _opt_text(record, "input")
    if not instruction.strip() and not extra.strip():
        raise Problem("field '{field}' is empty", "instruction")
    prompt = f"{instruction}\n\n{extra}" if instruction and extra else instruction or extra
    turns.add(plain("user", prompt), "instruction")
    return turns


def alpaca(record: dict[str, Any], ctx: Context) -> Parsed:
    needed = ("instruction",) if ctx.kind == "prompt" else ("instruction", "output")
    missing = [key for key in needed if key not in record]
    if missing:
        names = ", ".join(f"'{key}'" for key in missing)
        raise Problem(f"missing field {names} (Alpaca layout)", missing[0])
    turns = _alpaca_prompt(record)
    output = _opt_text(record, "output")
    if output.strip():
        turns.add(plain("assistant", output), "output")
    elif ctx.kind != "prompt":
        raise Problem("field '{field}' is empty: nothing for the assistant to learn", "output")
    return chat(turns, record)


def alpaca_preference(record: dict[str, Any], ctx: Context) -> Parsed:
    if "instruction" not in record:
        raise Problem("missing field '{field}' (Alpaca layout)", "instruction")
    return Parsed(
        messages=_alpaca_prompt(record),
        chosen=_side(record, "chosen", "assistant"),
        rejected=_side(record, "rejected", "assistant"),
    )


def chat_messages(record: dict[str, Any], ctx: Context) -> Parsed:
    """OpenAI chat, TRL conversational and LLaMA-Factory v1 ``messages``."""
    return chat(message_list(record.get("messages"), "messages"), record)


def openai_dpo(record: dict[str, Any], ctx: Context) -> Parsed:
    given = record.get("input")
    if not isinstance(given, dict):
        raise Problem("'{field}' must be an object with 'messages'", "input")
    return Parsed(
        messages=message_list(given.get("messages"), "input.messages"),
        chosen=message_list(record.get("preferred_output"), "preferred_output"),
        rejected=message_list(record.get("non_preferred_output"), "non_preferred_output"),
    )


def split_shared_prompt(
    chosen: Turns, rejected: Turns, keys: tuple[str, str]
) -> tuple[Turns, Turns, Turns]:
    """TRL's implicit prompt: the turns up to the last user turn, the same on both sides."""
    users = [i for i, m in enumerate(chosen.messages) if m["role"] == "user"]
    if not users:
        raise Problem("'{field}' has no user turn to take the prompt from", keys[0])
    cut = users[-1] + 1
    prompt, chosen_answer = chosen.split(cut)
    rejected_prompt, rejected_answer = rejected.split(cut)
    if rejected_prompt.messages != prompt.messages:
        raise Problem(f"'{{field}}' must start with the same prompt as '{keys[0]}'", keys[1])
    return prompt, chosen_answer, rejected_answer


def v1_dpo(record: dict[str, Any], ctx: Context) -> Parsed:
    chosen = message_list(record.get("chosen_messages"), "chosen_messages")
    rejected = message_list(record.get("rejected_messages"), "rejected_messages")
    keys = ("chosen_messages", "rejected_messages")
    prompt, chosen, rejected = split_shared_prompt(chosen, rejected, keys)
    return Parsed(messages=prompt, chosen=chosen, rejected=rejected)


def trl_prompt_completion(record: dict[str, Any], ctx: Context) -> Parsed:
    turns = _side(record, "prompt", "user")
    if ctx.kind != "prompt" or record.get("completion") is not None:
        turns = turns + _side(record, "completion", "assistant")
    return chat(turns, record)


def trl_preference(record: dict[str, Any], ctx: Context) -> Parsed:
    chosen = _side(record, "chosen", "assistant")
    rejected = _side(record, "rejected", "assistant")
    if "prompt" in record:
        prompt = _side(record, "prompt", "user")
    elif isinstance(record.get("chosen"), str):
        raise Problem("missing field '{field}' (the chosen answer is plain text)", "prompt")
    else:
        prompt, chosen, rejected = split_shared_prompt(chosen, rejected, ("chosen", "rejected"))
    return Parsed(messages=prompt, chosen=chosen, rejected=rejected)


def trl_prompt(record: dict[str, Any], ctx: Context) -> Parsed:
    key = next((k for k in REFERENCE_KEYS if record.get(k) is not None), None)
    reference = require_str(record[key], key) if key else None
    return Parsed(messages=_side(record, "prompt", "user"), reference=reference)


def text(record: dict[str, Any], ctx: Context) -> Parsed:
    value = record.get("text")
    if value is None:
        raise Problem("missing field '{field}'", "text")
    return Parsed(text=require_str(value, "text"))


LAYOUTS = {
    layout.name: layout
    for layout in (
        Layout("alpaca", "Alpaca", alpaca, CHAT_KINDS),
        Layout("alpaca_preference", "Alpaca preference", alpaca_preference, PAIR_KINDS),
        Layout("sharegpt", "ShareGPT", sharegpt, CHAT_KINDS),
        Layout("sharegpt_preference", "ShareGPT preference", sharegpt_preference, PAIR_KINDS),
        Layout("openai", "OpenAI chat messages", chat_messages, CHAT_KINDS),
        Layout("openai_dpo", "OpenAI preference (DPO)", openai_dpo, PAIR_KINDS),
        Layout("llamafactory_v1", "LLaMA-Factory v1 messages", chat_messages, CHAT_KINDS),
        Layout("llamafactory_v1_dpo", "LLaMA-Factory v1 preference", v1_dpo, PAIR_KINDS),
        Layout("trl_prompt_completion", "TRL prompt-completion", trl_prompt_completion, CHAT_KINDS),
        Layout("trl_preference", "TRL preference", trl_preference, PAIR_KINDS),
        Layout("trl_prompt", "TRL prompt-only", trl_prompt, ("prompt",)),
        Layout("text", "plain text", text, ("text",)),
    )
}
