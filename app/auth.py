"""Users, password hashes and API tokens. Plain functions that take a session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.models import ApiToken, BrowserSession, User, utcnow

TOKEN_PREFIX = "fts_"
LAST_USED_RESOLUTION = timedelta(minutes=1)
SESSION_LIFETIME = timedelta(days=14)
# OWASP's password storage advice (2026) for scrypt: N=2^17, r=8, p=1, or the same work with
# less memory, N=2^14 (16 MiB), r=8, p=5. Hashes store their parameters; older ones (n=2^14,
# p=1, no parameters in the string) still verify and are rehashed at the next login.
SCRYPT = {"n": 2**14, "r": 8, "p": 5}
_LEGACY_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **SCRYPT)
    n, r, p = SCRYPT["n"], SCRYPT["r"], SCRYPT["p"]
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def _parts(stored: str) -> tuple[dict[str, int], bytes, str] | None:
    fields = stored.split("$")
    if fields[0] != "scrypt":
        return None
    if len(fields) == 3:  # scrypt$salt$digest
        return _LEGACY_SCRYPT, bytes.fromhex(fields[1]), fields[2]
    if len(fields) == 6 and all(f.isdigit() for f in fields[1:4]):
        n, r, p = (int(f) for f in fields[1:4])
        return {"n": n, "r": r, "p": p}, bytes.fromhex(fields[4]), fields[5]
    return None


def verify_password(password: str, stored: str | None) -> bool:
    parts = _parts(stored or "")
    if parts is None:
        return False
    params, salt, digest_hex = parts
    digest = hashlib.scrypt(password.encode(), salt=salt, **params, maxmem=2**28)
    return hmac.compare_digest(digest.hex(), digest_hex)


def needs_rehash(stored: str | None) -> bool:
    parts = _parts(stored or "")
    return parts is None or parts[0] != SCRYPT


_UNKNOWN_USER_HASH = hash_password(secrets.token_urlsafe(16))  # the work a known name costs


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
    """A new password signs the user out of every browser."""
    user.password_hash = hash_password(password)
    session.execute(delete(BrowserSession).where(BrowserSession.user_id == user.id))
    session.flush()


def create_token(
    session: Session, user: User, label: str = "", expires_in: timedelta | None = None
) -> str:
    """Store a new token's hash and return the token itself (shown once)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = utcnow() + expires_in if expires_in is not None else None
    session.add(
        ApiToken(user_id=user.id, token_hash=_token_hash(token), label=label, expires_at=expires_at)
    )
    session.flush()
    return token


def _usable(now: datetime) -> ColumnElement[bool]:
    """A token's SQL condition: not expired."""
    return or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now)


def list_tokens(session: Session, user_name: str | None = None) -> list[tuple[ApiToken, str]]:
    """(token, owner's name), oldest first; the tokens themselves are never stored."""
    query = select(ApiToken, User.name).join(User, ApiToken.user_id == User.id)
    if user_name is not None:
        query = query.where(User.name == user_name)
    return [(token, name) for token, name in session.execute(query.order_by(ApiToken.id))]


def revoke_token(session: Session, token_id: int) -> bool:
    return session.execute(delete(ApiToken).where(ApiToken.id == token_id)).rowcount > 0


def token_usable(session: Session, token: str) -> bool:
    return token_lookup(session, token) is not None


def user_for_token(session: Session, token: str) -> User | None:
    row = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == _token_hash(token), _usable(utcnow()))
    )
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
        .where(ApiToken.token_hash == _token_hash(token), _usable(utcnow()))
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
    """The user whose name and password these are. An unknown name (or one without a password)
    costs the same scrypt work as a known one, so the time does not tell names apart."""
    user = session.scalar(select(User).where(User.name == name))
    stored = user.password_hash if user is not None and user.password_hash else None
    matches = verify_password(password, stored or _UNKNOWN_USER_HASH)
    if user is None or stored is None or not matches:
        return None
    if needs_rehash(stored):
        user.password_hash = hash_password(password)
    return user


def _session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_browser_session(session: Session, user: User) -> str:
    """A new signed-in browser; returns the id its cookie carries."""
    session_id = secrets.token_urlsafe(32)
    session.add(BrowserSession(id=_session_hash(session_id), user_id=user.id))
    session.flush()
    return session_id


def browser_session_user(session: Session, session_id: str) -> User | None:
    """The user of a live browser session (one indexed read), None once it was closed."""
    return session.scalar(
        select(User)
        .join(BrowserSession, BrowserSession.user_id == User.id)
        .where(
            BrowserSession.id == _session_hash(session_id),
            BrowserSession.created_at > utcnow() - SESSION_LIFETIME,
        )
    )


def close_browser_session(session: Session, session_id: str) -> None:
    session.execute(delete(BrowserSession).where(BrowserSession.id == _session_hash(session_id)))
