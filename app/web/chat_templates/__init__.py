"""The chat template library and "what the model sees" (a template, a dataset row, the job
form's panel). ``api`` holds the REST routes, ``pages`` the browser's."""

from __future__ import annotations

from fastapi import APIRouter

from app.web.chat_templates import api, pages

router = APIRouter()
router.include_router(api.router)
router.include_router(pages.router)
