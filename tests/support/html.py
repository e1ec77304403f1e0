"""Pages as a browser session sees them, without a browser: log the test client in through the
form, parse HTML with CSS selectors."""

from __future__ import annotations

from bs4 import BeautifulSoup

from tests.support.accounts import Account


def soup(response) -> BeautifulSoup:
    return BeautifulSoup(response.text, "html.parser")


def post_login(client, data: dict, **kwargs):
    """Submit the login form as a browser does: open the page, send its CSRF token back."""
    form = soup(client.get("/login")).select_one("#login-form input[name=csrf_token]")
    return client.post("/login", data={"csrf_token": form["value"], **data}, **kwargs)


def log_in(client, account: Account) -> str:
    """Log the shared test client in through the form; returns the page's CSRF token."""
    client.cookies.clear()
    response = post_login(client, {"token": account.token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return soup(client.get("/")).select_one('meta[name="csrf-token"]')["content"]


def page(client, account: Account, url: str, *, stay_logged_in: bool = False) -> BeautifulSoup:
    """Log in as ``account``, GET ``url`` (expect 200) and parse it; logs out again unless
    ``stay_logged_in`` (to post the page's forms next)."""
    log_in(client, account)
    try:
        response = client.get(url)
        assert response.status_code == 200, response.text
        return soup(response)
    finally:
        if not stay_logged_in:
            client.cookies.clear()
