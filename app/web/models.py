"""Base models: the list (API and page) and registering a model directory (admins)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel as Body
from pydantic import Field
from sqlalchemy import select

from app.base_models import ModelDirError, register_model
from app.models import BaseModel
from app.serialize import model_json
from app.web.deps import AdminUser, CurrentUser, PageUser, SessionDep
from app.web.rendering import render

api = APIRouter(prefix="/api", tags=["models"])
pages = APIRouter(include_in_schema=False)


class ModelIn(Body):
    name: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1, description="a directory with config.json and weights")


@api.get("/models")
def get_models(session: SessionDep, user: CurrentUser) -> list[dict]:
    return [model_json(m) for m in session.query(BaseModel).order_by(BaseModel.id)]


@api.post("/models", status_code=201)
def post_model(body: ModelIn, session: SessionDep, user: AdminUser) -> dict:
    try:
        return model_json(register_model(session, body.name, Path(body.path)))
    except ModelDirError as exc:
        raise HTTPException(422, detail=str(exc)) from exc


@pages.get("/models")
def models_page(request: Request, session: SessionDep, user: PageUser) -> Response:
    models = session.scalars(select(BaseModel).order_by(BaseModel.id)).all()
    return render(request, "models.html", {"user": user, "models": models})


router = APIRouter()
router.include_router(api)
router.include_router(pages)
