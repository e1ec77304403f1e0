"""Devices on the job form and the run page (issue 12): num_devices and distributed_strategy in
the form's devices group, the device class select from the registered workers, a placement or
strategy refusal shown by its field, and the run page's Devices section (launch plan, resolved
device, what a queued run waits for). Real database and app; HTML parsed with selectors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from bs4 import BeautifulSoup

from tests.conftest import Account
from tests.support.html import log_in, soup


@dataclass(frozen=True)
class Registered:
    device_class: str  # two online workers of this class, 2 devices each, both busy
    worker_names: tuple[str, ...]
    busy_jobs: tuple[int, ...]  # alice's runs the two workers are busy with
    queued_job: int  # alice's queued run asking for 2 x device_class (never enqueued)
    dataset_id: int


def _dataset(session, owner_id: int, tag: str) -> int:
    from app.models import Dataset

    dataset = Dataset(owner_id=owner_id, name=f"devices-{tag}", kind="sft", format="alpaca")
    session.add(dataset)
    session.flush()
    return dataset.id


@pytest.fixture(scope="module")
def registered(alice: Account, tiny_model: str) -> Iterator[Registered]:
    """Two workers of a class no other test uses, both busy with alice's runs, and a queued run
    of alice's that asks for two of its devices (created, committed, not enqueued)."""
    from app import worker_registry
    from app.db import session_scope
    from app.jobs import create_job, request_cancel
    from app.models import Job, User, Worker

    tag = uuid.uuid4().hex[:6]
    device_class = f"Form GPU {tag}"
    names = tuple(f"form-{i}-{tag}@host-{i}" for i in (1, 2))
    devices = [{"index": i, "name": device_class, "memory_bytes": 80 << 30} for i in (0, 1)]
    with session_scope() as session:
        owner = session.get(User, alice.user_id)
        dataset_id = _dataset(session, owner.id, tag)
        busy = tuple(
            create_job(session, owner, base_model=tiny_model, dataset_id=dataset_id).id
            for _ in names
        )
        for name, job_id in zip(names, busy, strict=True):
            worker_registry.heartbeat(
                session,
                name,
                host=name.split("@")[1],
                device_class=device_class,
                devices=devices,
                max_devices=2,
                busy=True,
                job_id=job_id,
                started=True,
            )
        queued = create_job(
            session,
            owner,
            name=f"two devices {tag}",
            base_model=tiny_model,
            dataset_id=dataset_id,
            hyperparameters={"num_devices": 2, "distributed_strategy": "fsdp"},
            device_class=device_class,
        ).id
    yield Registered(device_class, names, busy, queued, dataset_id)
    with session_scope() as session:
        session.query(Worker).filter(Worker.name.in_(names)).delete()
        for job_id in (*busy, queued):
            request_cancel(session, session.get(Job, job_id))


@pytest.fixture
def browser(client, alice: Account) -> Iterator[str]:
    """The test client logged in as alice; yields the CSRF token."""
    yield log_in(client, alice)
    client.cookies.clear()


def _label(page: BeautifulSoup, name: str):
    field = page.select_one(f"#job-form [name={name}]")
    assert field is not None, name
    return field.find_parent("label")


def _form_data(page: BeautifulSoup, csrf: str, tiny_model: str, dataset_id: int) -> dict:
    model_id = next(
        o["value"]
        for o in page.select("select[name=base_model] option")
        if o.get_text() == tiny_model
    )
    return {
        "csrf_token": csrf,
        "name": "devices form",
        "base_model": model_id,
        "dataset_id": str(dataset_id),
        "max_steps": "3",
        "logging_steps": "1",
    }


def test_the_devices_group_has_num_devices_and_a_strategy_shown_above_one_device(
    client, browser: str, registered: Registered
) -> None:
    page = soup(client.get("/jobs/new"))
    group = page.select_one("#job-form fieldset[data-group=devices]")
    assert group is not None and not group.has_attr("hidden")
    devices = group.select_one("input[name=num_devices]")
    assert (devices["value"], devices["min"], devices["max"]) == ("1", "1", "64")
    strategy = group.select_one("select[name=distributed_strategy]")
    assert [o.get_text() for o in strategy.select("option")] == [
        "ddp",
        "fsdp",
        "deepspeed_zero2",
        "deepspeed_zero3",
    ]
    label = strategy.find_parent("label")
    # one device: hidden and disabled, so the form does not post it; the script shows it above 1
    assert label.has_attr("hidden") and strategy.has_attr("disabled")
    assert json.loads(label["data-above"]) == {"num_devices": 1}
    assert page.select_one('script[src="/static/js/job_devices.js"]') is not None


def test_the_device_class_select_lists_registered_classes(
    client, browser: str, registered: Registered
) -> None:
    page = soup(client.get("/jobs/new"))
    select = page.select_one("#job-form fieldset[data-group=devices] select[name=device_class]")
    options = select.select("option")
    assert (options[0]["value"], options[0].get_text()) == ("", "Any worker")
    assert not select.select("option[selected]")  # nothing chosen: any worker
    ours = [o for o in options if o["value"] == registered.device_class]
    assert [o.get_text() for o in ours] == [
        f"{registered.device_class} (2 workers, up to 2 devices)"
    ]


def test_too_many_devices_re_renders_the_form_with_the_error_by_num_devices(
    client, browser: str, registered: Registered, tiny_model: str
) -> None:
    data = _form_data(soup(client.get("/jobs/new")), browser, tiny_model, registered.dataset_id)
    data |= {
        "num_devices": "3",
        "distributed_strategy": "fsdp",
        "device_class": registered.device_class,
    }
    response = client.post("/jobs", data=data)
    assert response.status_code == 422
    page = soup(response)
    label = _label(page, "num_devices")
    assert "invalid" in label["class"]
    assert label.select_one("input")["value"] == "3"
    error = label.select_one(".field-error").get_text()
    assert f"class '{registered.device_class}' has 3 devices" in error
    # what was chosen survives the re-render: the class, and the strategy (shown: 3 > 1)
    chosen = page.select_one("select[name=device_class] option[selected]")
    assert chosen["value"] == registered.device_class
    strategy = _label(page, "distributed_strategy")
    assert not strategy.has_attr("hidden") and not strategy.select_one("select").has_attr(
        "disabled"
    )
    assert strategy.select_one("option[selected]").get_text() == "fsdp"
    assert page.select_one("input[name=name]")["value"] == "devices form"


def test_an_unknown_device_class_is_refused_by_its_select_and_kept(
    client, browser: str, registered: Registered, tiny_model: str
) -> None:
    data = _form_data(soup(client.get("/jobs/new")), browser, tiny_model, registered.dataset_id)
    missing = f"No Such GPU {uuid.uuid4().hex[:6]}"
    response = client.post("/jobs", data=data | {"device_class": missing})
    assert response.status_code == 422
    label = soup(response).select_one("#device-class-field")
    assert "invalid" in label["class"]
    assert f"no registered worker has device class '{missing}'" in label.get_text()
    assert label.select_one("option[selected]")["value"] == missing


def test_a_strategy_with_one_device_is_refused_next_to_the_strategy(
    client, browser: str, registered: Registered, tiny_model: str
) -> None:
    """Without the script the strategy may be posted with one device: the spec's rule refuses
    it, and the form shows the field (with its error) although one device would hide it."""
    data = _form_data(soup(client.get("/jobs/new")), browser, tiny_model, registered.dataset_id)
    response = client.post(
        "/jobs", data=data | {"num_devices": "1", "distributed_strategy": "fsdp"}
    )
    assert response.status_code == 422
    label = _label(soup(response), "distributed_strategy")
    assert "invalid" in label["class"] and not label.has_attr("hidden")
    assert "num_devices > 1" in label.select_one(".field-error").get_text()


def test_a_queued_run_page_shows_its_launch_plan_and_what_it_waits_for(
    client, browser: str, registered: Registered
) -> None:
    page = soup(client.get(f"/jobs/{registered.queued_job}"))
    devices = page.select_one("#job-summary #job-devices")
    first, second = registered.busy_jobs
    assert devices.select_one("#job-waiting-for").get_text() == (
        f"waiting for a worker with 2 x {registered.device_class}: "
        f"both busy with runs {first}, {second}"
    )
    assert devices.select_one("#job-device-class").get_text() == registered.device_class
    assert devices.select_one("#job-processes").get_text() == "2"
    assert devices.select_one("#job-strategy").get_text() == "fsdp"
    assert "chosen by the worker" in devices.select_one("#job-backend").get_text()
    config = json.loads(devices.select_one("#launch-config").get_text())
    assert config["launcher"] and "trainer_arguments" in config
    assert devices.select_one("#resolved-device-pending") is not None
    # queued: the section refreshes itself
    assert devices["hx-get"] == f"/jobs/{registered.queued_job}/devices"


def test_the_run_page_fragments_keep_the_devices_section(
    client, browser: str, registered: Registered
) -> None:
    """The status refresh (HTMX, the summary block) and the queued poll (the devices block)."""
    htmx = {"HX-Request": "true"}
    summary = soup(client.get(f"/jobs/{registered.queued_job}", headers=htmx))
    assert summary.select_one("header.topbar") is None
    assert summary.select_one(".job-name") is not None
    assert summary.select_one("#job-devices #job-waiting-for") is not None
    fragment = soup(client.get(f"/jobs/{registered.queued_job}/devices", headers=htmx))
    assert fragment.select_one("header.topbar") is None and fragment.select_one(".job-name") is None
    assert fragment.select_one("#job-devices #job-processes").get_text() == "2"
    assert "both busy" in fragment.select_one("#job-waiting-for").get_text()


def test_the_run_page_shows_the_resolved_device_from_the_trainer_config(
    client, browser: str, registered: Registered
) -> None:
    from app.runs import TRAINER_CONFIG_FILE
    from app.settings import get_settings

    job_id = registered.busy_jobs[0]
    output = get_settings().jobs_dir / str(job_id) / "output"
    output.mkdir(parents=True, exist_ok=True)
    resolved = {
        "device": "NVIDIA H100 80GB HBM3",
        "device_kind": "cuda",
        "compute_capability": "9.0",
        "requested_precision": "auto",
        "precision": "bf16",
        "attn_implementation": "sdpa",
        "fused_kernels": "Liger: fused RMSNorm, RoPE, SwiGLU, linear cross-entropy",
        "packed_rows": "best-fit, padding-free (rows isolated)",
        "checkpointing": "on: without it the run would need about 90.00 GiB of 79.19 GiB",
    }
    (output / TRAINER_CONFIG_FILE).write_text(json.dumps({"learning_rate": 1e-4, **resolved}))
    page = soup(client.get(f"/jobs/{job_id}"))
    shown = {dd["data-key"]: dd.get_text() for dd in page.select("#job-devices dd.resolved-device")}
    assert shown == {
        "device": "NVIDIA H100 80GB HBM3",
        "kind": "cuda",
        "compute capability": "9.0",
        "precision asked for": "auto",
        "precision used": "bf16",
        "attention": "sdpa",
        "fused kernels": "Liger: fused RMSNorm, RoPE, SwiGLU, linear cross-entropy",
        "packing": "best-fit, padding-free (rows isolated)",
        "gradient checkpointing": "on: without it the run would need about 90.00 GiB of 79.19 GiB",
    }
    assert page.select_one("#resolved-device-pending") is None
    assert page.select_one("#job-processes").get_text() == "1"
    assert page.select_one("#launch-config") is None  # one process: no generated config


def test_device_class_choices_put_online_classes_first() -> None:
    from app.models import Worker, utcnow
    from app.web.forms import device_class_choices

    now = utcnow()

    def worker(name: str, device_class: str, max_devices: int, seen_ago: int) -> Worker:
        seen = now - timedelta(seconds=seen_ago)
        return Worker(
            name=name,
            device_class=device_class,
            max_devices=max_devices,
            last_seen=seen,
            started_at=seen,
        )

    workers = [
        worker("a", "A100", 8, 600),  # offline
        worker("b", "cpu", 4, 0),
        worker("c", "NVIDIA H100 80GB HBM3", 2, 0),
        worker("d", "nvidia h100 80gb hbm3", 8, 0),  # the same class, as routing compares
    ]
    assert device_class_choices(workers, stale_after_seconds=60) == [
        ("cpu", "cpu (1 worker, up to 4 devices)"),
        ("NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3 (2 workers, up to 8 devices)"),
        ("A100", "A100 (1 worker, up to 8 devices, offline)"),
    ]


def test_the_run_page_shows_where_the_time_went(
    client, browser: str, registered: Registered
) -> None:
    from app.db import session_scope
    from app.models import JobEvent

    job_id = registered.busy_jobs[0]
    assert soup(client.get(f"/jobs/{job_id}")).select_one("#job-phases") is None
    recorded = [
        ("queued", 0.5, {}),
        ("model load", 1.25, {}),
        ("data preparation", 0.75, {"cached": True, "sequences": 12}),
        ("training", 9.5, {"steps": 30}),
    ]
    with session_scope() as session:
        for name, seconds, details in recorded:
            session.add(
                JobEvent(
                    job_id=job_id,
                    kind="phase",
                    severity="info",
                    message=f"{name}: {seconds} s",
                    details={"phase": name, "started_at": "2026-12-07T10:00:00", "seconds": seconds}
                    | details,
                )
            )
    page = soup(client.get(f"/jobs/{job_id}"))
    rows = page.select("#job-phases tr[data-phase]")
    assert [(r["data-phase"], r.select("td")[1].get_text()) for r in rows] == [
        ("queued", "0.50"),
        ("model load", "1.25"),
        ("data preparation", "0.75"),
        ("training", "9.50"),
    ]
    assert "from the tokenized cache, 12 sequences" in rows[2].get_text()
    assert "12.0 s in 4 phases" in page.select_one("#job-phases summary").get_text()
