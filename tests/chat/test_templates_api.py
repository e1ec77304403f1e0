"""The chat template library API: built-ins and native templates, user templates with versions,
validation warnings, rendering with loss masks, and hostile templates."""

from __future__ import annotations

import time

import pytest

from tests.conftest import Account

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome."},
]
MARKED = (
    "{% for m in messages %}<{{ m.role }}>"
    "{% if m.role == 'assistant' %}"
    "{% generation %}{{ m.content }}{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ m.content }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def trained_text(body: dict) -> str:
    return "".join(t for t, m in zip(body["tokens"], body["loss_mask"], strict=True) if m)


def test_library_lists_builtins_and_the_native_template(
    client, alice: Account, tiny_model: str
) -> None:
    templates = client.get("/api/chat-templates", headers=alice.headers).json()
    kinds = {t["name"]: t["kind"] for t in templates}
    for name in ("ChatML", "Llama 3", "Mistral", "Qwen 2.5", "Gemma", "Phi-3", "Alpaca", "Vicuna"):
        assert kinds[name] == "builtin"
    assert "Plain completion" in kinds
    assert any(t["kind"] == "native" for t in templates)
    chatml = next(t for t in templates if t["name"] == "ChatML")
    assert "{% generation %}" in chatml["latest"]["template"]
    assert chatml["editable"] is False


def test_user_template_is_validated_versioned_and_private(
    client, alice: Account, bob: Account
) -> None:
    created = client.post(
        "/api/chat-templates",
        headers=alice.headers,
        json={"name": "no end", "template": "{% for m in messages %}{{ m.content }}{% endfor %}"},
    )
    assert created.status_code == 201
    body = created.json()
    warnings = " ".join(body["latest"]["warnings"])
    assert "no {% generation %} markers" in warnings
    assert "will not learn to stop" in warnings
    assert body["latest"]["version"] == 1

    second = client.post(
        f"/api/chat-templates/{body['id']}/versions",
        headers=alice.headers,
        json={"template": MARKED},
    )
    assert second.status_code == 201 and second.json()["version"] == 2
    detail = client.get(f"/api/chat-templates/{body['id']}", headers=alice.headers).json()
    assert [v["version"] for v in detail["versions"]] == [1, 2]
    assert detail["latest"]["template"] == MARKED
    old = client.get(f"/api/chat-templates/{body['id']}/versions/1", headers=alice.headers)
    assert "generation" not in old.json()["template"]

    assert client.get(f"/api/chat-templates/{body['id']}", headers=bob.headers).status_code == 404
    bob_list = client.get("/api/chat-templates", headers=bob.headers).json()
    assert body["id"] not in {t["id"] for t in bob_list}


def test_builtin_templates_are_read_only(client, alice: Account) -> None:
    chatml = next(
        t
        for t in client.get("/api/chat-templates", headers=alice.headers).json()
        if t["name"] == "ChatML"
    )
    refused = client.post(
        f"/api/chat-templates/{chatml['id']}/versions",
        headers=alice.headers,
        json={"template": "x"},
    )
    assert refused.status_code == 409
    assert "copy" in refused.json()["detail"]


def test_a_template_that_cannot_render_is_refused_and_nothing_is_stored(
    client, alice: Account
) -> None:
    before = len(client.get("/api/chat-templates", headers=alice.headers).json())
    for bad in ("{% for %}", "{{ raise_exception('no system role') }}"):
        response = client.post(
            "/api/chat-templates", headers=alice.headers, json={"name": "bad", "template": bad}
        )
        assert response.status_code == 422
    assert len(client.get("/api/chat-templates", headers=alice.headers).json()) == before


def test_render_marks_assistant_turns_eos_and_truncation(
    client, alice: Account, tiny_model: str
) -> None:
    body = {"template": MARKED, "messages": CONVERSATION, "model": tiny_model}
    rendered = client.post("/api/chat-templates/render", headers=alice.headers, json=body).json()
    assert rendered["text"].startswith("<system>Be brief.\n<user>")
    assert trained_text(rendered) == "Paris.<|im_end|>Rome.<|im_end|>"
    eos_positions = [i for i, e in enumerate(rendered["eos"]) if e]
    assert all(rendered["loss_mask"][i] for i in eos_positions) and len(eos_positions) == 2

    last = client.post(
        "/api/chat-templates/render", headers=alice.headers, json=body | {"loss": "last"}
    ).json()
    assert trained_text(last) == "Rome.<|im_end|>"
    everything = client.post(
        "/api/chat-templates/render", headers=alice.headers, json=body | {"loss": "all"}
    ).json()
    assert all(everything["loss_mask"])

    weighted = [dict(m) for m in CONVERSATION]
    weighted[2]["loss_weight"] = 0
    skipped = client.post(
        "/api/chat-templates/render", headers=alice.headers, json=body | {"messages": weighted}
    ).json()
    assert trained_text(skipped) == "Rome.<|im_end|>"

    cut = client.post(
        "/api/chat-templates/render", headers=alice.headers, json=body | {"max_length": 12}
    ).json()
    assert cut["truncated"] and cut["kept"] == 12
    assert not any(cut["loss_mask"][12:])


def test_render_without_markers_finds_turns_by_prefix(
    client, alice: Account, tiny_model: str
) -> None:
    templates = client.get("/api/chat-templates", headers=alice.headers).json()
    native = next(t for t in templates if t["kind"] == "native")
    rendered = client.post(
        "/api/chat-templates/render",
        headers=alice.headers,
        json={"template_id": native["id"], "messages": CONVERSATION, "model": tiny_model},
    ).json()
    assert trained_text(rendered) == "Paris.<|im_end|>\nRome.<|im_end|>\n"
    prompt = client.post(
        "/api/chat-templates/render",
        headers=alice.headers,
        json={
            "template_id": native["id"],
            "messages": CONVERSATION[:2],
            "add_generation_prompt": True,
        },
    ).json()
    assert prompt["text"].endswith("<|im_start|>assistant\n") and not any(prompt["loss_mask"])


HOSTILE = {
    "globals walk": "{{ raise_exception.__globals__['os'].system('id') }}",
    "subclasses walk": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "attr filter": "{{ (messages|attr('__class__'))|attr('__base__')|attr('__subclasses__')() }}",
    "format escape": "{{ '{0.__class__.__mro__}'.format(messages) }}",
    "huge range": "{% for i in range(10**9) %}x{% endfor %}",
    "nested loops": (
        "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"
    ),
    "deep recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "wide recursion": (
        "{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}"
        "{{ f(0) }}"
    ),
    "string bomb": "{{ 'x' * 10**10 }}",
    "doubling": (
        "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s }}"
    ),
    "padding": "{{ 'a'|center(10**10) }}",
    "mutation": "{{ messages.append(messages) }}",
}


@pytest.mark.parametrize("attack", HOSTILE, ids=list(HOSTILE))
def test_hostile_templates_are_refused_or_stopped(client, alice: Account, attack: str) -> None:
    started = time.monotonic()
    response = client.post(
        "/api/chat-templates",
        headers=alice.headers,
        json={"name": attack, "template": HOSTILE[attack]},
    )
    elapsed = time.monotonic() - started
    if response.status_code == 201:  # the sandbox rendered it harmlessly (unsafe parts empty)
        latest = response.json()["latest"]
        assert "root:" not in latest["template"]
        rendered = client.post(
            "/api/chat-templates/render",
            headers=alice.headers,
            json={"template": HOSTILE[attack], "messages": CONVERSATION},
        ).json()
        assert "uid=" not in rendered.get("text", "") and "subclasses" not in str(rendered)
    else:
        assert response.status_code == 422, response.text
    assert elapsed < 30  # bounded by the sandbox's per-render limit, several renders per save
    assert client.get("/healthz").status_code == 200  # and the server keeps serving
