"""Models for generation and evaluation: a base model or any checkpoint (with a chained run's
ancestors folded in), each with its locked chat template; and streamed generation.

A model is named by a key: ``base:<base model id>`` or ``checkpoint:<checkpoint id>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session
from transformers.generation.streamers import BaseStreamer

from app.chat import library
from app.chat.encoding import ChatFormat
from app.chat.rows import RowEncoder
from app.chat.tokenizer import load_model_tokenizer
from app.models import BaseModel, Checkpoint
from app.settings import get_settings
from worker.checkpoints import Stage, opened
from worker.training.chaining import lineage_stages
from worker.training.stop_check import stop_ids


class UnknownModel(ValueError):
    pass


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from and which template it answers with."""

    key: str
    label: str
    base_path: Path
    chain: list[Stage]  # checkpoints folded in before ``checkpoint_dir`` (chained runs)
    checkpoint_dir: Path | None
    chat_template: str | None


def model_source(session: Session, key: str) -> ModelSource:
    kind, _, ident = key.partition(":")
    if kind == "base" and ident.isdigit() and (model := session.get(BaseModel, int(ident))):
        template = library.default_for(session, model).source
        return ModelSource(key, model.name, Path(model.path), [], None, template)
    if kind == "checkpoint" and ident.isdigit() and (ckpt := session.get(Checkpoint, int(ident))):
        job = ckpt.job
        jobs_dir = get_settings().jobs_dir
        label = f"{job.name} · step {ckpt.step}"
        return ModelSource(
            key,
            label,
            Path(job.base_model.path),
            lineage_stages(session, job, jobs_dir),
            jobs_dir / ckpt.path,
            job.chat_template,
        )
    raise UnknownModel(f"no model {key!r}")


@dataclass
class LoadedModel:
    source: ModelSource
    model: Any
    encoder: RowEncoder
    end_ids: list[int]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _encoder(source: ModelSource) -> RowEncoder:
    tokens = load_model_tokenizer(source.base_path)
    return RowEncoder(ChatFormat(source.chat_template, tokens.special_tokens), tokens)


@contextmanager
def loaded(source: ModelSource) -> Iterator[LoadedModel]:
    """The model ready to generate, on the GPU when there is one; temporary merges cleaned up."""
    with opened(source.base_path, source.chain, source.checkpoint_dir) as model:
        encoder = _encoder(source)
        _, ends = stop_ids(encoder)
        yield LoadedModel(source, model, encoder, ends)


@contextmanager
def loaded_scorer(source: ModelSource) -> Iterator[LoadedModel]:
    """A reward-model checkpoint with its score head, on the GPU when there is one."""
    assert source.checkpoint_dir is not None, "a base model has no score head"
    with opened(source.base_path, source.chain, source.checkpoint_dir, scores=True) as model:
        yield LoadedModel(source, model, _encoder(source), [])


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Decoding:
        known = {
            k: values[k] for k in ("max_new_tokens", "temperature", "top_p", "seed") if k in values
        }
        return cls(**known)

    def generate_kwargs(self) -> dict[str, Any]:
        if self.temperature <= 0:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}


class _TextStreamer(BaseStreamer):
    """Decodes new tokens as they come and hands the text so far to ``on_text``."""

    def __init__(self, decode: Callable[[list[int]], str], on_text: Callable[[str], None]) -> None:
        self.decode = decode
        self.on_text = on_text
        self.ids: list[int] = []
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        self.on_text(self.decode(self.ids))

    def end(self) -> None:
        self.on_text(self.decode(self.ids))


@torch.no_grad()
def generate(
    loaded_model: LoadedModel,
    messages: list[dict[str, Any]],
    decoding: Decoding,
    on_text: Callable[[str], None] | None = None,
) -> tuple[str, bool]:
    """The model's answer to ``messages`` rendered with its template (text without the end
    token) and whether it ended with its end-of-turn token."""
    ids = loaded_model.encoder.prompt({"prompt": messages}).ids
    input_ids = torch.tensor([ids], device=loaded_model.device)
    ends = loaded_model.end_ids
    tokenizer = loaded_model.encoder.tokenizer.tokenizer

    def decode(token_ids: list[int]) -> str:
        return tokenizer.decode([t for t in token_ids if t not in ends], skip_special_tokens=False)

    torch.manual_seed(decoding.seed)
    output = loaded_model.model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=decoding.max_new_tokens,
        eos_token_id=ends or None,
        pad_token_id=ends[0] if ends else None,
        streamer=_TextStreamer(decode, on_text) if on_text else None,
        **decoding.generate_kwargs(),
    )
    generated = output[0, len(ids) :].tolist()
    stopped = bool(generated) and generated[-1] in ends
    return decode(generated), stopped
