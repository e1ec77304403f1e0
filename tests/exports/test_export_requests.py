"""Export requests and downloads without a worker: refusals with their reason (422), what the
job page offers per adapter, the page's export form, and the download's HTTP Range support on
a stored archive (streamed from disk, 206/416, the sha256 as ETag)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest

from app import broker
from app.db import session_scope
from app.exports import create_export
from app.jobs import create_job
from app.models import Checkpoint, Export, ExportStatus, JobStatus, User
from app.settings import get_settings
from app.states import move
from tests.conftest import Account
from tests.support.html import page as logged_in_page

ARCHIVE = bytes(range(256)) * 40  # 10 KiB stands in for an archive


@pytest.fixture(scope="module")
def dataset_id(client, alice: Account, tiny_model: str) -> int:
    row = {"instruction": "Say hi.", "output": "Hi!"}
    response = client.post(
        "/api/datasets",
        headers=alice.headers,
        files={"file": ("sft.jsonl", json.dumps(row).encode())},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def enqueued(monkeypatch) -> Iterator[list[int]]:
    """Export ids sent to the worker (none runs here)."""
    sent: list[int] = []
    monkeypatch.setattr(broker, "enqueue_export", lambda ident, **_: sent.append(ident))
    yield sent
    # never left queued: a worker that starts later sends every queued item again
    with session_scope() as session:
        for export_id in sent:
            move(session, Export, export_id, to=ExportStatus.failed, from_=ExportStatus.queued)


def make_job(account: Account, dataset_id: int, adapter: str = "lora") -> tuple[int, int]:
    """A succeeded job row on tiny-llama with a final checkpoint; (job id, checkpoint id)."""
    with session_scope() as session:
        owner = session.get(User, account.user_id)
        job = create_job(
            session, owner, base_model="tiny-llama", dataset_id=dataset_id, adapter=adapter
        )
        job.status = JobStatus.succeeded
        checkpoint = Checkpoint(job_id=job.id, step=1, is_final=True, path=f"{job.id}/final")
        session.add(checkpoint)
        session.flush()
        return job.id, checkpoint.id


def _final_checkpoint(alice: Account, dataset_id: int, adapter: str) -> int:
    return make_job(alice, dataset_id, adapter)[1]


def _request(client, alice: Account, checkpoint_id: int, **body):
    return client.post(
        f"/api/checkpoints/{checkpoint_id}/exports", headers=alice.headers, json=body
    )


@pytest.mark.parametrize(
    ("adapter", "body", "reason"),
    [
        ("full", {"kind": "adapter"}, "no adapter to separate"),
        ("freeze", {"kind": "adapter"}, "no adapter to separate"),
        ("prefix", {"kind": "merged"}, "cannot be merged"),
        ("prompt", {"kind": "gguf"}, "cannot be merged"),
        ("lora", {"kind": "gguf", "quantization": "q4_k"}, "'q4_k' is not supported"),
        ("lora", {"kind": "merged", "quantization": "q8_0"}, "GGUF exports only"),
        ("lora", {"kind": "onnx"}, "'onnx' is not supported"),
    ],
)
def test_refused_exports_say_why(
    client, alice: Account, dataset_id: int, enqueued: list[int], adapter, body, reason
) -> None:
    response = _request(client, alice, _final_checkpoint(alice, dataset_id, adapter), **body)
    assert response.status_code == 422
    assert reason in response.json()["detail"]
    assert enqueued == []


def test_an_accepted_export_is_queued_with_its_quantization(
    client, alice: Account, dataset_id: int, enqueued: list[int]
) -> None:
    checkpoint_id = _final_checkpoint(alice, dataset_id, "lora")
    created = _request(client, alice, checkpoint_id, kind="gguf", quantization="q8_0")
    assert created.status_code == 201, created.text
    export = created.json()
    assert (export["kind"], export["quantization"], export["status"]) == ("gguf", "q8_0", "queued")
    assert export["download_url"] is None and export["manifest"] is None
    assert enqueued == [export["id"]]
    default = _request(client, alice, checkpoint_id, kind="gguf").json()
    assert default["quantization"] == "f16"
    download = client.get(f"/api/exports/{export['id']}/download", headers=alice.headers)
    assert download.status_code == 409 and "queued" in download.json()["detail"]


@pytest.mark.parametrize(
    ("adapter", "offered", "refused"),
    [
        ("lora", ["adapter", "merged", "gguf"], []),
        ("full", ["merged", "gguf"], ["adapter"]),
        ("ptuning", ["adapter"], ["merged", "gguf"]),
    ],
)
def test_job_page_offers_the_kinds_the_adapter_allows(
    client, alice: Account, dataset_id: int, adapter: str, offered, refused
) -> None:
    job_id, checkpoint_id = make_job(alice, dataset_id, adapter)
    page = logged_in_page(client, alice, f"/jobs/{job_id}", stay_logged_in=True)
    row = page.select_one(f"tr.checkpoint[data-checkpoint-id='{checkpoint_id}']")
    forms = row.select("form.export-form")
    assert [f["data-kind"] for f in forms] == offered
    assert [f.select_one("input[name=kind]")["value"] for f in forms] == offered
    for form in forms:
        assert form.select_one(f"button.export-{form['data-kind']}")
    if "gguf" in offered:
        options = row.select("form[data-kind=gguf] select[name=quantization] option")
        assert [o["value"] for o in options] == ["f16", "q8_0"]
    assert [p["data-kind"] for p in page.select("p.export-refused")] == refused
    if refused:
        assert "No " in page.select_one("p.export-refused").get_text()


def _stored_export(account: Account, checkpoint_id: int, **fields) -> int:
    """An export row as the worker leaves it, with ARCHIVE as its file."""
    settings = get_settings()
    with session_scope() as session:
        user = session.get(User, account.user_id)
        checkpoint = session.get(Checkpoint, checkpoint_id)
        export = create_export(session, user, checkpoint, "gguf", "q8_0")
        directory = settings.exports_dir / str(export.id)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "model.tar").write_bytes(ARCHIVE)
        export.path = f"{export.id}/model.tar"
        export.status = ExportStatus.succeeded
        export.size_bytes = len(ARCHIVE)
        export.sha256 = hashlib.sha256(ARCHIVE).hexdigest()
        for key, value in fields.items():
            setattr(export, key, value)
        return export.id


def test_job_page_shows_each_exports_status_size_sha256_and_link(
    client, alice: Account, dataset_id: int
) -> None:
    job_id, checkpoint_id = make_job(alice, dataset_id)
    done = _stored_export(alice, checkpoint_id)
    failed = _stored_export(alice, checkpoint_id, status=ExportStatus.failed, path=None, error="X")
    page = logged_in_page(client, alice, f"/jobs/{job_id}", stay_logged_in=True)

    ok = page.select_one(f".export[data-export-id='{done}']")
    assert ok["data-kind"] == "gguf" and "Q8_0" in ok.select_one(".export-kind").get_text()
    assert ok.select_one("a.download")["href"] == f"/api/exports/{done}/download"
    assert ok.select_one(".export-size").get_text() == "10.2 kB"
    assert ok.select_one(".export-sha256").get_text() == hashlib.sha256(ARCHIVE).hexdigest()
    bad = page.select_one(f".export[data-export-id='{failed}']")
    assert bad.select_one(".export-status").get_text() == "export failed"
    assert bad.select_one(".error").get_text() == "X" and not bad.select_one("a.download")


def test_the_page_form_requests_the_chosen_kind_and_quantization(
    client, alice: Account, dataset_id: int, enqueued: list[int]
) -> None:
    job_id, checkpoint_id = make_job(alice, dataset_id, "full")
    page = logged_in_page(client, alice, f"/jobs/{job_id}", stay_logged_in=True)
    csrf = page.select_one('meta[name="csrf-token"]')["content"]
    url = f"/checkpoints/{checkpoint_id}/exports"

    data = {"csrf_token": csrf, "kind": "gguf", "quantization": "q8_0"}
    response = client.post(url, data=data, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/jobs/{job_id}"
    refused = client.post(url, data={"csrf_token": csrf, "kind": "adapter"})
    assert refused.status_code == 422 and "no adapter to separate" in refused.text
    client.cookies.clear()

    with session_scope() as session:
        export = session.get(Export, enqueued[-1])
        assert (export.kind, export.manifest["quantization"]) == ("gguf", "q8_0")
    assert len(enqueued) == 1


def test_download_streams_ranges_with_the_sha256_as_etag(
    client, alice: Account, dataset_id: int
) -> None:
    export_id = _stored_export(alice, make_job(alice, dataset_id)[1])
    url, size = f"/api/exports/{export_id}/download", len(ARCHIVE)
    etag = f'"{hashlib.sha256(ARCHIVE).hexdigest()}"'

    whole = client.get(url, headers=alice.headers)
    assert whole.status_code == 200 and whole.content == ARCHIVE
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["etag"] == etag
    assert "ftstudio-export-" in whole.headers["content-disposition"]
    assert whole.headers["content-disposition"].endswith(f'{export_id}-gguf-q8_0.tar"')

    tail = client.get(url, headers={**alice.headers, "Range": "bytes=4000-"})
    assert tail.status_code == 206 and tail.content == ARCHIVE[4000:]
    assert tail.headers["content-range"] == f"bytes 4000-{size - 1}/{size}"
    middle = client.get(url, headers={**alice.headers, "Range": "bytes=10-19"})
    assert middle.status_code == 206 and middle.content == ARCHIVE[10:20]

    past = client.get(url, headers={**alice.headers, "Range": f"bytes={size}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{size}"

    same = client.get(url, headers={**alice.headers, "Range": "bytes=5-", "If-Range": etag})
    assert same.status_code == 206 and same.content == ARCHIVE[5:]
    changed = client.get(url, headers={**alice.headers, "Range": "bytes=5-", "If-Range": '"x"'})
    assert changed.status_code == 200 and changed.content == ARCHIVE

    head = client.head(url, headers=alice.headers)
    assert head.status_code == 200 and head.headers["content-length"] == str(size)
    assert head.content == b""
