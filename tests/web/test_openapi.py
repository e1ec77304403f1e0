"""/api/openapi.json documents the job request from TrainingSpec: ``method`` and ``adapter`` at
the top level, every other knob under ``hyperparameters``, each with its help text, default and
bounds, while validation (and its 422s) stays TrainingSpec's."""

from __future__ import annotations

from typing import Any

import pytest
from annotated_types import Ge, Gt, Le, Lt
from pydantic.fields import FieldInfo

from app.spec import HYPERPARAMETER_FIELDS, TrainingSpec
from tests.conftest import Account

BOUNDS = {Ge: "minimum", Gt: "exclusiveMinimum", Le: "maximum", Lt: "exclusiveMaximum"}


@pytest.fixture(scope="module")
def schema(client, alice: Account) -> dict[str, Any]:
    response = client.get("/api/openapi.json", headers=alice.headers)
    assert response.status_code == 200
    return response.json()


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref:
        return _resolve(schema, schema["components"]["schemas"][ref.rsplit("/", 1)[-1]])
    return node


def _job_request(schema: dict[str, Any], path: str) -> dict[str, Any]:
    body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return _resolve(schema, body)


def _documented(schema: dict[str, Any], request: dict[str, Any], name: str) -> dict[str, Any]:
    if name in ("method", "adapter"):
        return _resolve(schema, request["properties"][name])
    hyper = _resolve(schema, request["properties"]["hyperparameters"])
    return _resolve(schema, hyper["properties"][name])


def _keyword(documented: dict[str, Any], keyword: str) -> list[Any]:
    """``keyword``'s values in a field's schema, also inside ``anyOf`` (optional fields)."""
    branches = [documented, *documented.get("anyOf", [])]
    return [b[keyword] for b in branches if keyword in b]


def _value(bound: Any) -> Any:
    for attr in ("ge", "gt", "le", "lt"):
        if hasattr(bound, attr):
            return getattr(bound, attr)
    return bound


def _expected_bounds(info: FieldInfo) -> dict[str, Any]:
    expected: dict[str, Any] = {}
    for item in info.metadata:
        for kind, keyword in BOUNDS.items():
            if isinstance(item, kind):
                expected[keyword] = _value(item)
        if getattr(item, "pattern", None):
            expected["pattern"] = item.pattern
    return expected


@pytest.mark.parametrize("path", ["/api/jobs", "/api/jobs/estimate"])
def test_every_spec_field_is_documented_with_help_and_bounds(schema, path: str) -> None:
    request = _job_request(schema, path)
    assert request["required"] == ["dataset_id"]
    for name, info in TrainingSpec.model_fields.items():
        documented = _documented(schema, request, name)
        assert info.description and documented.get("description") == info.description, name
        if info.default is not None and not callable(info.default):
            assert documented.get("default") == info.default, name
        for keyword, bound in _expected_bounds(info).items():
            assert bound in _keyword(documented, keyword), (name, keyword, documented)


def test_bounds_and_choices_are_in_the_schema(schema) -> None:
    request = _job_request(schema, "/api/jobs")
    lr = _documented(schema, request, "learning_rate")
    assert lr["type"] == "number" and lr["exclusiveMinimum"] == 0 and lr["maximum"] == 1.0
    assert set(_documented(schema, request, "adapter")["enum"]) >= {"lora", "qlora", "full"}
    assert "sft" in _documented(schema, request, "method")["enum"]
    hyper = _resolve(schema, request["properties"]["hyperparameters"])
    assert set(hyper["properties"]) == set(HYPERPARAMETER_FIELDS)
    assert hyper["additionalProperties"] is False
    assert "$defs" not in str(schema)  # nested spec models are inlined, no dangling $ref


def test_the_schema_documents_bounds_the_api_enforces(client, alice: Account, schema) -> None:
    """A value past a documented bound is refused with the field named as before."""
    request = _job_request(schema, "/api/jobs")
    lr = _documented(schema, request, "learning_rate")
    body = {"dataset_id": 1, "hyperparameters": {"learning_rate": lr["maximum"] * 2}}
    response = client.post("/api/jobs/estimate", headers=alice.headers, json=body)
    assert response.status_code == 422
    locs = [e["loc"] for e in response.json()["errors"]]
    assert ["hyperparameters", "learning_rate"] in locs
