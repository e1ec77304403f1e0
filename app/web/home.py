"""Signing in and out, the home page, and the OpenAPI schema (behind auth)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from app.auth import authenticate, user_for_token
from app.queries import list_datasets, list_jobs
from app.web.deps import CurrentUser, PageUser, SessionDep
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
) -> Response:
    user = (
        user_for_token(session, token.strip())
        if token.strip()
        else authenticate(session, username, password)
    )
    if user is None:
        context = {"next": next, "username": username, "error": "Wrong name, password or token."}
        return render(request, "login.html", context, status_code=401)
    request.session.clear()
    request.session["user_id"] = user.id
    safe = next if next.startswith("/") and not next.startswith("//") else "/"
    return RedirectResponse(safe, status_code=303)


@pages.post("/logout")
def logout(request: Request, user: PageUser) -> Response:
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
