"""Test accounts: a user and an API token, made straight in the database."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Account:
    name: str
    token: str
    user_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_account(name: str, admin: bool = False) -> Account:
    from app.auth import create_token, get_or_create_user
    from app.db import session_scope

    with session_scope() as session:
        user = get_or_create_user(session, name, admin=admin)
        return Account(name, create_token(session, user), user.id)
