"""Signing in and out, the home page, and the OpenAPI schema (behind auth)."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.auth import (
    authenticate,
    close_browser_session,
    open_browser_session,
    user_for_token,
)
from app.logins import LoginThrottle
from app.queries import list_datasets, list_jobs
from app.web.deps import SESSION_KEY, CurrentUser, PageUser, SessionDep, csrf_matches
from app.web.rendering import render

api = APIRouter(prefix="/api", tags=["api"])
pages = APIRouter(include_in_schema=False)


@api.get("/openapi.json", include_in_schema=False)
def get_openapi_schema(request: Request, user: CurrentUser) -> dict:
    return request.app.openapi()


@pages.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", {"next": next})


@pages.post("/login")
def login(
    request: Request,
    session: SessionDep,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    context = {"next": next, "username": username}
    if not csrf_matches(request, csrf_token):  # no logging a victim's browser into an account
        context["error"] = "The login form expired: log in again."
        return render(request, "login.html", context, status_code=403)
    throttle: LoginThrottle = request.app.state.login_throttle
    address = request.client.host if request.client else ""
    name = "" if token.strip() else username
    wait = throttle.wait_seconds(name, address)
    if wait > 0:
        context["error"] = f"Too many failed logins: try again in {math.ceil(wait)} s."
        refused = render(request, "login.html", context, status_code=429)
        refused.headers["Retry-After"] = str(math.ceil(wait))
        return refused
    user = (
        user_for_token(session, token.strip())
        if token.strip()
        else authenticate(session, username, password)
    )
    if user is None:
        throttle.failed(name, address)
        context["error"] = "Wrong name, password or token."
        return render(request, "login.html", context, status_code=401)
    throttle.succeeded(name, address)
    request.session.clear()
    request.session[SESSION_KEY] = open_browser_session(session, user)
    # Committed before the redirect: the request's session commits only after the response
    # is sent, and the browser's next request must find its session (a race on a real server).
    session.commit()
    safe = next if next.startswith("/") and not next.startswith("//") else "/"
    return RedirectResponse(safe, status_code=303)


@pages.post("/logout")
def logout(request: Request, session: SessionDep, user: PageUser) -> Response:
    """Ends the session on the server too: a copy of the cookie no longer signs anyone in."""
    close_browser_session(session, request.session.get(SESSION_KEY, ""))
    session.commit()  # ended before the answer, not after it (see login)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@pages.get("/")
def home(request: Request, session: SessionDep, user: PageUser) -> Response:
    context = {
        "user": user,
        "datasets": list_datasets(session, user)[:5],
        "jobs": list_jobs(session, user)[:10],
    }
    return render(request, "home.html", context)


router = APIRouter()
router.include_router(api)
router.include_router(pages)
