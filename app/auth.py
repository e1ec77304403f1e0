"""Users, password hashes and API tokens. Plain functions that take a session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, timedelta

from sqlalchemy import select
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
    last = row.last_used_at
    if (
        last is None
        or (now - (last if last.tzinfo else last.replace(tzinfo=UTC))) > LAST_USED_RESOLUTION
    ):
        row.last_used_at = now  # written at most once a minute, not on every request
    return row.user


def authenticate(session: Session, name: str, password: str) -> User | None:
    user = session.scalar(select(User).where(User.name == name))
    if user is not None and verify_password(password, user.password_hash):
        return user
    return None
