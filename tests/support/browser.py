"""Shared steps in a real browser (Playwright on Debian's Chromium, see tests/e2e/conftest.py)."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.accounts import Account


def log_in(page: Page, account: Account) -> None:
    """Log in with the account's API token, as a user pasting it into the login form would."""
    page.goto("/login")
    page.locator("#login-form input[name=token]").fill(account.token)
    page.locator("#login-form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator(".topbar .who")).to_have_text(account.name)
