"""The chat templates the studio ships (``app/chat/builtin/*.jinja``), each with
``{% generation %}`` markers around what an assistant turn generates, so the loss mask is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

BUILTIN_DIR = Path(__file__).parent / "builtin"


@dataclass(frozen=True)
class BuiltinTemplate:
    key: str
    name: str
    description: str
    end_of_turn: str  # what closes an assistant turn ("{eos}": the tokenizer's eos token)

    @property
    def source(self) -> str:
        return _read(self.key)


@cache
def _read(key: str) -> str:
    return (BUILTIN_DIR / f"{key}.jinja").read_text().strip("\n")


BUILTINS: tuple[BuiltinTemplate, ...] = (
    BuiltinTemplate(
        "chatml", "ChatML", "<|im_start|>role ... <|im_end|> (SmolLM, OpenHermes)", "<|im_end|>"
    ),
    BuiltinTemplate(
        "qwen", "Qwen 2.5", "ChatML with Qwen's default system prompt and tools", "<|im_end|>"
    ),
    BuiltinTemplate(
        "llama3", "Llama 3", "<|start_header_id|>role<|end_header_id|> ... <|eot_id|>", "<|eot_id|>"
    ),
    BuiltinTemplate(
        "mistral",
        "Mistral",
        "[INST] ... [/INST] answer</s>; system folded into the first turn",
        "{eos}",
    ),
    BuiltinTemplate(
        "gemma", "Gemma", "<start_of_turn>user/model ... <end_of_turn>", "<end_of_turn>"
    ),
    BuiltinTemplate("phi", "Phi-3", "<|user|> ... <|end|> <|assistant|> ... <|end|>", "<|end|>"),
    BuiltinTemplate("alpaca", "Alpaca", "### Instruction: / ### Response: ... </s>", "{eos}"),
    BuiltinTemplate("vicuna", "Vicuna", "USER: ... ASSISTANT: ...</s>", "{eos}"),
    BuiltinTemplate(
        "completion",
        "Plain completion",
        "Prompt text, then the answer and eos (base models)",
        "{eos}",
    ),
)
