"""Jobs (runs): create, estimate, list with filters, watch live (events, logs, metrics), cancel,
resume, compare runs' curves, presets. ``api`` holds the REST routes, ``schemas`` the request
body (typed from TrainingSpec in the OpenAPI schema), ``pages`` the browser's routes."""

from __future__ import annotations

from fastapi import APIRouter

from app.web.jobs import api, pages

router = APIRouter()
router.include_router(api.router)
router.include_router(pages.router)
