"""The admin UI against the real management API app (tests/api/conftest.py) and the hub stand-in.

The UI sends its requests through its own httpx pool, as it does over HTTP; the pool's transport hands
them to the API app in process (test_main.py runs ``python -m frontend`` against an API served over
HTTP). No serving plane runs here (the API answers 503 ``serving_unavailable`` for serving calls, which
the UI must show plainly); tests/frontend/test_e2e.py drives a whole box in a real browser.
"""

from __future__ import annotations

import json
import re
from html import unescape

import httpx
import pytest
from flask import Flask

from app.devtools.hub_standin import LLAMA_70B_CONFIG, add_declared_model, fake_safetensors
from frontend import create_app
from tests.api.conftest import Api, running_api

SMALL_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
                "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "max_position_embeddings": 1024, "vocab_size": 1024,
                "torch_dtype": "float32"}


def small_repo() -> dict[str, bytes]:
    """A small real repo (~300 KB of weights): config, safetensors with real bytes, tokenizer files."""
    header, size = fake_safetensors({"model.embed_tokens.weight": ("F32", [256, 256]),
                                     "lm_head.weight": ("F32", [64, 256])})
    weights = header + b"\0" * (size - len(header))
    return {"config.json": json.dumps(SMALL_CONFIG).encode(), "model.safetensors": weights,
            "tokenizer.json": b"{}", "tokenizer_config.json": b"{}"}


@pytest.fixture
def hub(hub):
    """The hub stand-in with two small real repos and a 70B-shaped one (declared sizes)."""
    hub.add_repo("acme/small-chat", small_repo(), downloads=500, likes=7)
    hub.add_repo("acme/small-embed", small_repo(), pipeline_tag="sentence-similarity", downloads=200)
    add_declared_model(hub, "acme/llama-70b-shaped", LLAMA_70B_CONFIG, downloads=9000)
    return hub


@pytest.fixture
def api(tmp_path, hub):
    with running_api(tmp_path, hub.url, cpu_memory_budget_gb=8) as running:
        yield running


class InProcess(httpx.BaseTransport):
    """Hands each of the UI's requests to the API app through the API's TestClient (no socket)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.api.http.request(request.method, str(request.url), headers=request.headers.multi_items(),
                                       content=request.read(), follow_redirects=False)
        return httpx.Response(answer.status_code, headers=answer.headers.multi_items(), content=answer.content,
                              request=request)


def ui_for(api: Api, **config) -> Flask:
    """The admin UI of ``api``; ``config`` adds to or overrides its test config."""
    return create_app({"API_URL": api.url, "API_TRANSPORT": InProcess(api), "SECRET_KEY": "ui-test-secret-" * 3,
                       **config})


@pytest.fixture
def app(api):
    return ui_for(api, TESTING=True)


@pytest.fixture
def client(app):
    return app.test_client()


def csrf(client) -> str:
    client.get("/login")  # makes sure the session has a CSRF token
    with client.session_transaction() as session:
        return session["csrf"]


def post(client, url: str, data: dict | None = None, **kwargs):
    """A form POST as the browser sends it (with the page's CSRF token)."""
    return client.post(url, data={"csrf_token": csrf(client), **(data or {})}, **kwargs)


def login(client, token: str):
    response = post(client, "/login", {"token": token})
    assert response.status_code == 302, flashes(response)
    return client


def flashes(response) -> list[str]:
    """The messages shown to the person (flash boxes), whitespace collapsed."""
    html = response.get_data(as_text=True)
    return [" ".join(unescape(re.sub(r"<[^>]+>", " ", m)).split())
            for m in re.findall(r'<(?:div|p) class="flash[^"]*" role="[^"]+"[^>]*>(.*?)</(?:div|p)>', html, re.S)]


@pytest.fixture
def admin(client, api):
    return login(client, api.admin)


@pytest.fixture
def someone_else(api):
    """The API as someone else would use it (to make changes behind the UI's back)."""
    with api.client(api.admin) as http:
        yield http
