"""Users, password hashes and API tokens. Plain functions that take a session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.models import ApiToken, User, utcnow

TOKEN_PREFIX = "fts_"
LAST_USED_RESOLUTION = timedelta(minutes=1)
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt_hex, digest_hex = stored.split("$")
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def get_or_create_user(session: Session, name: str, *, admin: bool = False) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name, is_admin=admin)
        session.add(user)
        session.flush()
    elif admin and not user.is_admin:
        user.is_admin = True
    return user


def set_password(session: Session, user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    session.flush()


def create_token(session: Session, user: User, label: str = "") -> str:
    """Store a new token's hash and return the token itself (shown once)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(user_id=user.id, token_hash=_token_hash(token), label=label))
    session.flush()
    return token


def user_for_token(session: Session, token: str) -> User | None:
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_hash(token)))
    if row is None:
        return None
    now = utcnow()
    if _is_stale(row.last_used_at, now):
        _note_token_use(session, row.id, now)
    return row.user


def token_lookup(session: Session, token: str) -> tuple[User, int | None] | None:
    """The token's user in one read (no write, no lock): ``(user, token_id)``, where token_id is
    set only when ``last_used_at`` is due for its once-a-minute update (``note_token_use``)."""
    row = session.execute(
        select(User, ApiToken.id, ApiToken.last_used_at)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == _token_hash(token))
    ).first()
    if row is None:
        return None
    user, token_id, last_used = row
    return user, (token_id if _is_stale(last_used, utcnow()) else None)


def note_token_use(session: Session, token_id: int) -> None:
    """Record a token's use (at most one write a minute per token; see ``_note_token_use``)."""
    _note_token_use(session, token_id, utcnow())


def _is_stale(last_used: datetime | None, now: datetime) -> bool:
    if last_used is None:
        return True
    return now - (last_used if last_used.tzinfo else last_used.replace(tzinfo=UTC)) > (
        LAST_USED_RESOLUTION
    )


def _note_token_use(session: Session, token_id: int, now: datetime) -> None:
    """At most one write a minute per token: the condition makes concurrent requests with the
    same token update the row once, and the rest match nothing instead of rewriting it."""
    session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(
                ApiToken.last_used_at.is_(None),
                ApiToken.last_used_at < now - LAST_USED_RESOLUTION,
            ),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )


def authenticate(session: Session, name: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.name == name))
    if user is not None and verify_password(password, user.password_hash):
        return user
    return None
