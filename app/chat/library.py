"""The chat template library: the studio's built-ins, each base model's own (native) template,
and users' templates. Every change is a new version; a job pins the version it trains with."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.access import NotFound
from app.chat.builtins import BUILTINS
from app.chat.tokenizer import ModelTokenizer
from app.chat.validation import validate_template
from app.models import BaseModel, ChatTemplate, ChatTemplateVersion, User

NATIVE, BUILTIN, USER = "native", "builtin", "user"
DEFAULT_WITHOUT_NATIVE = "Plain completion"  # for base models that carry no template


class TemplateEditRefused(Exception):
    pass


def latest(template: ChatTemplate) -> ChatTemplateVersion:
    return template.versions[-1]


def _add_version(
    session: Session, template: ChatTemplate, source: str, warnings: list[str]
) -> ChatTemplateVersion:
    number = template.versions[-1].version + 1 if template.versions else 1
    version = ChatTemplateVersion(version=number, source=source, warnings=warnings)
    template.versions.append(version)
    session.flush()
    return version


def _keep_current(
    session: Session, template: ChatTemplate, source: str, check: Callable[[], list[str]]
) -> ChatTemplateVersion:
    """The latest version, or a new one (validated by ``check``) when ``source`` differs."""
    if template.versions and latest(template).source == source:
        return latest(template)
    return _add_version(session, template, source, check())


def ensure_builtins(session: Session) -> None:
    """Create the shipped templates, and a new version of each one whose file changed."""
    existing = {
        t.name: t for t in session.scalars(select(ChatTemplate).where(ChatTemplate.kind == BUILTIN))
    }
    for builtin in BUILTINS:
        template = existing.get(builtin.name)
        if template is None:
            template = ChatTemplate(name=builtin.name, kind=BUILTIN)
            session.add(template)
        _keep_current(session, template, builtin.source, partial(validate_template, builtin.source))


def ensure_native(session: Session, model: BaseModel) -> ChatTemplate | None:
    """The base model's own template as a library entry (None when it has none)."""
    template = session.scalar(
        select(ChatTemplate).where(
            ChatTemplate.kind == NATIVE, ChatTemplate.base_model_id == model.id
        )
    )
    if model.chat_template is None:
        return template
    if template is None:
        template = ChatTemplate(name=f"{model.name} (native)", kind=NATIVE, base_model_id=model.id)
        session.add(template)
    _keep_current(
        session, template, model.chat_template, partial(validate_template, model.chat_template)
    )
    return template


def visible(session: Session, user: User) -> list[ChatTemplate]:
    """Built-in and native templates, then the user's own, each with its versions."""
    ensure_builtins(session)
    query = (
        select(ChatTemplate)
        .where(or_(ChatTemplate.owner_id.is_(None), ChatTemplate.owner_id == user.id))
        .order_by(ChatTemplate.kind, ChatTemplate.name)
    )
    return list(session.scalars(query))


def get_visible(session: Session, user: User, template_id: int) -> ChatTemplate:
    template = session.get(ChatTemplate, template_id)
    if template is None or template.owner_id not in (None, user.id):
        raise NotFound("chat template")
    return template


def get_visible_version(session: Session, user: User, version_id: int) -> ChatTemplateVersion:
    version = session.get(ChatTemplateVersion, version_id)
    if version is None:
        raise NotFound("chat template version")
    get_visible(session, user, version.template_id)
    return version


def create(
    session: Session, user: User, name: str, source: str, tokenizer: ModelTokenizer | None = None
) -> ChatTemplate:
    """A user template; TemplateError (nothing stored) when it cannot render."""
    warnings = validate_template(source, tokenizer)
    template = ChatTemplate(owner_id=user.id, name=name.strip()[:200] or "template", kind=USER)
    session.add(template)
    _add_version(session, template, source, warnings)
    return template


def save_version(
    session: Session,
    user: User,
    template: ChatTemplate,
    source: str,
    tokenizer: ModelTokenizer | None = None,
) -> ChatTemplateVersion:
    """A new version of the user's own template (built-in and native ones are read-only: copy
    them into a new template to change them)."""
    if template.kind != USER or template.owner_id != user.id:
        raise TemplateEditRefused(
            f"{template.name} is a {template.kind} template: save a copy as a new template"
        )
    return _keep_current(session, template, source, partial(validate_template, source, tokenizer))


def default_for(session: Session, model: BaseModel) -> ChatTemplateVersion:
    """What a job trains with unless told otherwise: the model's native template, else plain
    completion."""
    native = ensure_native(session, model)
    if native is not None:
        return latest(native)
    ensure_builtins(session)
    fallback = session.scalar(
        select(ChatTemplate).where(
            ChatTemplate.kind == BUILTIN, ChatTemplate.name == DEFAULT_WITHOUT_NATIVE
        )
    )
    assert fallback is not None
    return latest(fallback)


def for_job(
    session: Session,
    user: User,
    model: BaseModel,
    chat_template_id: int | None,
    parent_version_id: int | None = None,
) -> ChatTemplateVersion:
    """The version a new job pins: the latest of the chosen template; else the parent run's
    (a chained run keeps the template its parent was trained with); else the model's default.
    NotFound when the chosen template is not visible to ``user``."""
    if chat_template_id is not None:
        return latest(get_visible(session, user, chat_template_id))
    if parent_version_id is not None:
        version = session.get(ChatTemplateVersion, parent_version_id)
        if version is not None:
            return version
    return default_for(session, model)
