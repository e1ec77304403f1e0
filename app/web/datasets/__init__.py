"""Datasets: upload, list, browse, statistics, governance (dedup, split, filter,
decontaminate) and export. ``api`` holds the REST routes, ``pages`` the browser's, ``actions``
what both call, ``views`` what the templates show."""

from __future__ import annotations

from fastapi import APIRouter

from app.web.datasets import api, pages

router = APIRouter()
router.include_router(api.router)
router.include_router(pages.router)
