"""Registering base models: local Hugging Face model directories (safetensors only)."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.chat import library as chat_library
from app.models import BaseModel


class ModelDirError(ValueError):
    pass


def read_chat_template(model_dir: Path) -> str | None:
    """The template a tokenizer directory carries (transformers 5 writes chat_template.jinja)."""
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = model_dir / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise ModelDirError(f"{model_dir} is not a directory")
    if not (model_dir / "config.json").is_file():
        raise ModelDirError(f"{model_dir} has no config.json")
    if not any(model_dir.glob("*.safetensors")):
        raise ModelDirError(f"{model_dir} has no .safetensors weights (only safetensors load)")


def register_model(session: Session, name: str, path: Path, source: str = "local") -> BaseModel:
    """Register (or update) a model directory under ``name``."""
    path = path.resolve()
    check_model_dir(path)
    model = session.scalar(select(BaseModel).where(BaseModel.name == name))
    if model is None:
        model = BaseModel(name=name, path=str(path), source=source)
        session.add(model)
    model.path = str(path)
    model.chat_template = read_chat_template(path)
    session.flush()
    chat_library.ensure_native(session, model)  # its template joins the library, versioned
    return model
