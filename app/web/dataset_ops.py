"""Dataset statistics, governance and browsing: the REST routes and the page routes in one
router. It is included before the spine's routers, so its richer ``GET /datasets/{id}`` page
and ``GET /api/datasets/{id}/rows`` (with ``search``) are the ones served."""

from __future__ import annotations

from fastapi import APIRouter

from app.web import dataset_api, dataset_pages

router = APIRouter()
router.include_router(dataset_api.router)
router.include_router(dataset_pages.router)
