"""Side-by-side comparisons, the blind arena and the playground. ``api`` holds the REST routes
and their server-sent event streams, ``views`` the JSON shapes, ``pages`` the browser's routes."""

from __future__ import annotations

from fastapi import APIRouter

from app.web.comparisons import api, pages

router = APIRouter()
router.include_router(api.router)
router.include_router(pages.router)
