"""Absurd numbers are refused with a 422, never a 500 (issue 14): every integer a route takes
(path, query, header, JSON body) is bounded to what the database stores (app/web/params.py).
The API routes are walked from the OpenAPI schema, as tests/web/test_auth.py walks them for
auth, and the pages from the app's routes; a few streams, pages and forms are checked by name,
with the largest accepted value answered normally."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from app.db import session_scope
from app.jobs import create_job
from app.models import JobStatus, User
from app.web.params import MAX_ID, MAX_INT, MAX_PAGE
from tests.conftest import Account
from tests.support.datasets import upload_rows
from tests.support.html import log_in, soup
from tests.web.test_error_shape import assert_one_shape

TOO_LARGE = (2**63, 2**64 + 1)  # just past bigint, and past an unsigned 64-bit integer
HUGE = 10**30


def _is_int(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "integer" or any(_is_int(s) for s in schema.get("anyOf", []))


def _int_branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in (schema, *schema.get("anyOf", [])) if s.get("type") == "integer"]


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if ref := node.get("$ref"):
        return _resolve(spec, spec["components"]["schemas"][ref.rsplit("/", 1)[-1]])
    return node


@pytest.fixture(scope="module")
def spec(client, alice: Account) -> dict[str, Any]:
    response = client.get("/api/openapi.json", headers=alice.headers)
    assert response.status_code == 200
    return response.json()


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in spec["paths"].items():
        if path.startswith("/api/"):
            for method, operation in operations.items():
                yield method.upper(), path, operation


def _url(path: str, **values: Any) -> str:
    """``path`` with each ``{param}`` filled: ``values`` by name, 1 otherwise."""
    return re.sub(r"\{([^}:]+)(?::\w+)?\}", lambda m: str(values.get(m.group(1), 1)), path)


def _locs(response) -> list[list[Any]]:
    return [e.get("loc") for e in response.json()["errors"]]


def test_every_integer_parameter_is_documented_with_database_bounds(spec) -> None:
    checked = 0
    for method, path, operation in _operations(spec):
        for param in operation.get("parameters", []):
            for branch in _int_branches(param["schema"]):
                low, high = branch.get("minimum", -1), branch.get("maximum", HUGE)
                assert low >= 0 and high <= float(MAX_INT), (method, path, param)
                checked += 1
    assert checked >= 45


def test_every_integer_path_parameter_refuses_numbers_past_bigint(
    client, alice: Account, spec
) -> None:
    tried: list[str] = []
    wrong: list[tuple[str, str, Any, int, str]] = []
    for method, path, operation in _operations(spec):
        params = operation.get("parameters", [])
        for param in (p for p in params if p["in"] == "path" and _is_int(p["schema"])):
            for value in (*TOO_LARGE, -1):
                url = _url(path, **{param["name"]: value})
                response = client.request(method, url, headers=alice.headers)
                if response.status_code != 422 or ["path", param["name"]] not in _locs(response):
                    wrong.append((method, url, value, response.status_code, response.text[:200]))
                else:
                    assert_one_shape(response)
            tried.append(f"{method} {path}")
    assert len(tried) >= 35, tried
    assert not wrong, wrong


def test_every_integer_query_and_header_parameter_refuses_a_huge_number(
    client, alice: Account, spec
) -> None:
    tried: list[str] = []
    wrong: list[tuple[str, str, int, str]] = []
    for method, path, operation in _operations(spec):
        for param in operation.get("parameters", []):
            if param["in"] not in ("query", "header") or not _is_int(param["schema"]):
                continue
            name = param["name"]
            if param["in"] == "query":
                response = client.request(
                    method, _url(path), params={name: HUGE}, headers=alice.headers
                )
            else:
                headers = {**alice.headers, name: str(HUGE)}
                response = client.request(method, _url(path), headers=headers)
            if response.status_code != 422 or [param["in"], name] not in _locs(response):
                wrong.append((method, f"{path} {name}", response.status_code, response.text[:200]))
            else:
                assert_one_shape(response)
            tried.append(f"{method} {path} {name}")
    # the rows' offset and limit, the streams' after, events_after, offset and Last-Event-ID...
    assert len(tried) >= 12, tried
    assert not wrong, wrong


def _body_ints(spec: dict[str, Any], schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(property, a value past the bounds) for each integer property of a JSON body."""
    for name, prop in _resolve(spec, schema).get("properties", {}).items():
        prop = _resolve(spec, prop)
        if _is_int(prop):
            for branch in _int_branches(prop):
                assert branch.get("maximum", HUGE) <= float(MAX_INT), (name, prop)
            yield name, HUGE
        elif prop.get("type") == "array" and _is_int(prop.get("items", {})):
            assert _int_branches(prop["items"])[0].get("maximum", HUGE) <= float(MAX_INT), prop
            yield name, [HUGE]


def test_every_integer_of_a_json_body_refuses_a_huge_number(client, alice: Account, spec) -> None:
    tried: list[str] = []
    wrong: list[tuple[str, str, str, int, str]] = []
    for method, path, operation in _operations(spec):
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            continue
        for name, value in _body_ints(spec, content["application/json"]["schema"]):
            response = client.request(method, _url(path), json={name: value}, headers=alice.headers)
            locs = _locs(response) if response.status_code == 422 else []
            if not any(loc[:2] == ["body", name] for loc in locs):
                wrong.append((method, path, name, response.status_code, response.text[:200]))
            else:
                assert_one_shape(response)
            tried.append(f"{method} {path} {name}")
    # ids (dataset, checkpoints, pair, against, template...), seeds, counts, token lengths
    assert len(tried) >= 20, tried
    assert not wrong, wrong


# -- by name, with real objects -----------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset_id(client, alice: Account) -> int:
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]
    return upload_rows(client, alice, "sft", [{"messages": _chat(r)} for r in rows], "bounds.jsonl")


def _chat(row: dict[str, str]) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": row["instruction"]},
        {"role": "assistant", "content": row["output"]},
    ]


@pytest.fixture(scope="module")
def ended_job_id(alice: Account, dataset_id: int, tiny_model: str) -> int:
    """A succeeded job (nothing trains here): its streams end as soon as they are read."""
    with session_scope() as session:
        owner = session.get(User, alice.user_id)
        job = create_job(session, owner, base_model=tiny_model, dataset_id=dataset_id)
        job.status = JobStatus.succeeded
        session.flush()
        return job.id


@pytest.mark.parametrize(
    "url",
    [
        "/api/jobs/99999999999999999999",
        "/api/datasets/9223372036854775808/rows",
        "/api/jobs/9223372036854775808/events",
        "/api/comparisons/99999999999999999999/events",
        "/api/generations/18446744073709551617/events",
    ],
)
def test_ids_past_bigint_are_422_in_the_one_shape(client, alice: Account, url: str) -> None:
    body = assert_one_shape(client.get(url, headers=alice.headers))
    assert body["errors"][0]["type"] == "less_than_equal"


def test_the_largest_id_is_a_plain_404_and_one_more_is_422(client, alice: Account) -> None:
    # ids are INTEGER columns: 32 bits on Postgres, where one more used to fail in the query
    for path in ("/api/jobs/{}", "/api/datasets/{}/rows", "/api/exports/{}"):
        response = client.get(path.format(MAX_ID), headers=alice.headers)
        assert response.status_code == 404, (path, response.text)
        assert_one_shape(client.get(path.format(MAX_ID + 1), headers=alice.headers))
    past = {"dataset_id": MAX_ID + 1, "base_model": "tiny-llama"}
    assert ["body", "dataset_id"] in _locs(
        client.post("/api/jobs", json=past, headers=alice.headers)
    )


def test_rows_past_the_last_offset_are_empty_and_beyond_bigint_refused(
    client, alice: Account, dataset_id: int
) -> None:
    url = f"/api/datasets/{dataset_id}/rows"
    last = client.get(url, params={"offset": MAX_INT}, headers=alice.headers)
    assert last.status_code == 200
    assert last.json()["rows"] == [] and last.json()["total"] == 3
    refused = client.get(url, params={"offset": MAX_INT + 1}, headers=alice.headers)
    assert ["query", "offset"] in _locs(refused)
    assert_one_shape(refused)


def _sse(client, url: str, **kwargs: Any) -> list[tuple[str, dict]]:
    with client.stream("GET", url, **kwargs) as response:
        assert response.status_code == 200, response.read()
        text = "".join(response.iter_text())
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_the_job_stream_takes_the_largest_after_and_refuses_more(
    client, alice: Account, ended_job_id: int
) -> None:
    url = f"/api/jobs/{ended_job_id}/events"
    for params in ({"after": MAX_INT}, {"events_after": MAX_ID}):
        events = _sse(client, url, params=params, headers=alice.headers)
        assert [kind for kind, _ in events] == ["status", "end"], events
    resumed = _sse(client, url, headers={**alice.headers, "Last-Event-ID": str(MAX_INT)})
    assert resumed[-1] == ("end", {"status": "succeeded"})
    for params, headers in (
        ({"after": MAX_INT + 1}, {}),
        ({"events_after": MAX_ID + 1}, {}),
        ({}, {"Last-Event-ID": str(MAX_INT + 1)}),
    ):
        response = client.get(url, params=params, headers={**alice.headers, **headers})
        assert_one_shape(response)


def test_the_log_stream_takes_the_largest_offset_and_refuses_more(
    client, alice: Account, ended_job_id: int
) -> None:
    url = f"/api/jobs/{ended_job_id}/logs/stream"
    events = _sse(client, url, params={"offset": MAX_INT}, headers=alice.headers)
    assert events == [("end", {"status": "succeeded"})]
    assert_one_shape(client.get(url, params={"offset": MAX_INT + 1}, headers=alice.headers))
    headers = {**alice.headers, "Last-Event-ID": str(2**64)}
    assert_one_shape(client.get(url, headers=headers))


@pytest.mark.parametrize(
    ("url", "loc"),
    [
        ("/api/jobs?dataset_id=99999999999999999999", ["query", "dataset_id"]),
        ("/api/jobs?base_model=9223372036854775808", ["query", "base_model"]),
        ("/api/runs/compare?ids=1,99999999999999999999", ["query", "ids"]),
        ("/api/datasets/{dataset}/stats?model=99999999999999999999", ["query", "model"]),
        ("/api/datasets/{dataset}/rows/0/seen?model=99999999999999999999", ["query", "model"]),
    ],
)
def test_numbers_inside_text_are_bounded_too(
    client, alice: Account, dataset_id: int, url: str, loc: list[str]
) -> None:
    response = client.get(url.format(dataset=dataset_id), headers=alice.headers)
    body = assert_one_shape(response)
    assert loc in [e["loc"][:2] for e in body["errors"]], body


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/api/playground", {"model": f"checkpoint:{2**64}", "messages": [{}]}, "model"),
        ("/api/chat-templates", {"name": "x", "template": "x", "model": "9" * 30}, "model"),
        ("/api/evaluations", {"dataset_id": 1, "base_model": str(MAX_INT + 1)}, "base_model"),
        ("/api/jobs", {"dataset_id": 1, "base_model": 2**63}, "base_model"),
    ],
)
def test_body_references_by_number_are_bounded(
    client, alice: Account, path: str, body: dict, loc: str
) -> None:
    response = client.post(path, json=body, headers=alice.headers)
    errors = assert_one_shape(response)["errors"]
    assert any(e["loc"][:2] == ["body", loc] for e in errors), errors


# -- pages --------------------------------------------------------------------------------------


@pytest.fixture
def browser(client, alice: Account) -> Iterator[tuple[TestClient, str]]:
    """A browser session of alice's on a client of its own; yields it and its CSRF token."""
    with TestClient(client.app, raise_server_exceptions=False) as own:
        yield own, log_in(own, alice)


def _error_page(response) -> str:
    """The message of the studio's error page (status 422), parsed from the HTML."""
    assert response.status_code == 422, response.text[:500]
    page = soup(response)
    assert page.select_one(".error-page h1").get_text() == "Cannot do that"
    return page.select_one(".error-page p").get_text()


def test_every_page_with_an_id_refuses_one_past_bigint(browser) -> None:
    own, csrf = browser
    pages = [
        (method, route.path, name)
        for route in iter_route_contexts(own.app.routes)
        if route.path and route.methods and not route.path.startswith("/api/")
        for name in re.findall(r"\{(\w+)", route.path)
        for method in sorted(route.methods)
    ]
    assert len(pages) >= 20, pages
    wrong = []
    for method, path, name in pages:
        response = own.request(method, _url(path, **{name: 2**63}), headers={"X-CSRF-Token": csrf})
        if response.status_code != 422 or not _error_page(response).startswith(f"{name}: "):
            wrong.append((method, path, response.status_code, response.text[:300]))
    assert not wrong, wrong


def test_pages_take_the_last_page_and_refuse_more(browser, dataset_id: int) -> None:
    own, _ = browser
    last = own.get(f"/datasets/{dataset_id}", params={"page": MAX_PAGE})
    assert last.status_code == 200
    assert soup(last).select(".row-preview") == []
    message = _error_page(own.get(f"/datasets/{dataset_id}", params={"page": MAX_PAGE + 1}))
    assert message.startswith("page: ")
    assert _error_page(own.get("/jobs/99999999999999999999")).startswith("job_id: ")
    assert _error_page(own.get("/jobs", params={"dataset_id": "9" * 25})).startswith("dataset_id")
    assert _error_page(own.get("/runs/compare", params={"ids": f"1,{2**63}"})).startswith("ids")


def test_forms_show_an_id_past_bigint_as_their_own_error(browser, dataset_id: int) -> None:
    own, csrf = browser
    huge = str(2**64)
    job_form = own.post("/jobs", data={"csrf_token": csrf, "dataset_id": huge, "method": "sft"})
    assert job_form.status_code == 422
    field = soup(job_form).select_one("select[name=dataset_id]").find_parent("label")
    assert field.select_one(".field-error").get_text().startswith("dataset_id must be between")
    preview = own.post(
        "/chat-templates/preview",
        data={
            "csrf_token": csrf,
            "template": "{{ 1 }}",
            "dataset_id": str(dataset_id),
            "row": huge,
        },
    )
    assert preview.status_code == 200
    assert soup(preview).select_one(".seen-error").get_text().startswith("row must be between")
    contamination = own.post(
        f"/datasets/{dataset_id}/contamination/check", data={"csrf_token": csrf, "against": huge}
    )
    assert soup(contamination).select_one(".error").get_text().startswith("against: ")
    comparison = own.post("/comparisons", data={"csrf_token": csrf, "checkpoint_ids": huge})
    assert comparison.status_code == 422
    error = soup(comparison).select_one("#comparison-error").get_text()
    assert error.startswith("checkpoint_ids must be between")
