"""The template lock: a run trained with a non-native template writes it into its checkpoints and
exports, so serving renders exactly what the studio rendered; and the stop check is recorded."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from transformers import AutoTokenizer

from tests.conftest import Account, wait_for_job
from tests.support.jobs import wait_for_export

pytestmark = pytest.mark.worker

ROWS = [
    {"instruction": f"Repeat the word {w}.", "input": "", "output": f"{w}"}
    for w in ("apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "grass")
]
MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Repeat the word apple."},
    {"role": "assistant", "content": "apple"},
    {"role": "user", "content": "And river?"},
]


def _template_id(client, account: Account, name: str) -> int:
    templates = client.get("/api/chat-templates", headers=account.headers).json()
    return next(t["id"] for t in templates if t["name"] == name)


@pytest.fixture(scope="module")
def alpaca_run(client, alice: Account, worker: Path, tiny_model: str) -> dict:
    upload = client.post(
        "/api/datasets",
        headers=alice.headers,
        files={"file": ("words.json", json.dumps(ROWS).encode())},
    )
    body = {
        "base_model": tiny_model,
        "dataset_id": upload.json()["id"],
        "adapter": "lora",
        "chat_template_id": _template_id(client, alice, "Alpaca"),
        "hyperparameters": {"max_steps": 3, "logging_steps": 1, "max_length": 64},
    }
    created = client.post("/api/jobs", headers=alice.headers, json=body)
    assert created.status_code == 201, created.text
    job = wait_for_job(client, alice, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job


def test_export_tokenizer_renders_like_the_studio(
    client, alice: Account, alpaca_run: dict, tiny_model: str, tmp_path: Path
) -> None:
    alpaca_id = _template_id(client, alice, "Alpaca")
    latest = client.get(f"/api/chat-templates/{alpaca_id}", headers=alice.headers).json()["latest"]
    assert alpaca_run["chat_template_version_id"] == latest["id"]
    assert alpaca_run["chat_template"] == latest["template"]

    final = client.get(f"/api/jobs/{alpaca_run['id']}/checkpoints", headers=alice.headers).json()
    created = client.post(
        f"/api/checkpoints/{final[-1]['id']}/exports",
        headers=alice.headers,
        json={"kind": "merged"},
    )
    export = wait_for_export(client, alice, created.json()["id"])
    assert export["status"] == "succeeded", export["error"]
    download = client.get(f"/api/exports/{export['id']}/download", headers=alice.headers)
    with tarfile.open(fileobj=io.BytesIO(download.content)) as tar:
        tar.extractall(tmp_path, filter="data")
    (model_dir,) = tmp_path.iterdir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)

    for messages, generation in ((MESSAGES[:3], False), (MESSAGES, True)):
        studio = client.post(
            "/api/chat-templates/render",
            headers=alice.headers,
            json={
                "template_id": alpaca_id,
                "messages": messages,
                "model": tiny_model,
                "add_generation_prompt": generation,
            },
        ).json()
        served = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation
        )
        assert served == studio["text"]
        assert "### Instruction:" in served
        ids = tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=generation, return_dict=True
        )["input_ids"]
        assert ids == studio["token_ids"]


def test_stop_check_is_recorded_on_the_job_and_its_final_checkpoint(
    client, alice: Account, alpaca_run: dict
) -> None:
    check = alpaca_run["stop_check"]
    assert check["prompts"] == 4 and 0 <= check["stopped"] <= 4
    assert check["end_token"] == "<|im_end|>"  # Alpaca ends answers with the tokenizer's eos
    for sample in check["samples"]:
        assert sample["prompt"].startswith("Repeat the word")
        assert sample["stopped"] == sample["output"].endswith("<|im_end|>")
        assert sample["stopped"] or sample["new_tokens"] == check["max_new_tokens"]
    final = client.get(f"/api/jobs/{alpaca_run['id']}/checkpoints", headers=alice.headers).json()
    assert final[-1]["is_final"] and final[-1]["stop_check"] == check


def test_job_page_shows_template_diff_and_stop_check(
    client, alice: Account, alpaca_run: dict
) -> None:
    page = BeautifulSoup(
        client.get(f"/jobs/{alpaca_run['id']}", headers=alice.headers).text, "html.parser"
    )
    template = page.select_one("#chat-template")
    assert template is not None and "Alpaca" in template.select_one(".template-name").text
    warning = template.select_one(".template-differs")
    assert warning is not None and "native" in warning.text
    diff = template.select_one(".template-diff")
    assert diff.select(".add") and diff.select(".del")
    stop = page.select_one("#stop-check")
    assert stop is not None and f"{alpaca_run['stop_check']['stopped']} of 4" in stop.text
