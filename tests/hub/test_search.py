"""Search through the real list_models against the stand-in: filters, order, fit per result."""

import json

import pytest

from app.devtools.hub_standin import LLAMA_8B_CONFIG, LLAMA_70B_CONFIG, add_declared_model, fake_safetensors
from app.hub.search import search

SMALL_CONFIG = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 128,
                "max_position_embeddings": 2048, "torch_dtype": "float32"}


def small_repo(hub, repo_id, params=1000, **kwargs):
    header, size = fake_safetensors({"w": ("F32", [params])})
    hub.add_repo(repo_id, {"config.json": json.dumps(SMALL_CONFIG).encode(), "model.safetensors": header},
                 declared_sizes={"model.safetensors": size}, **kwargs)


@pytest.fixture
def catalog(hub):
    small_repo(hub, "acme/chat-small", downloads=500, likes=3)
    add_declared_model(hub, "acme/chat-8b", LLAMA_8B_CONFIG, downloads=9000, likes=1)
    add_declared_model(hub, "acme/chat-70b", LLAMA_70B_CONFIG, downloads=4000, likes=900)
    small_repo(hub, "other/embedder", pipeline_tag="sentence-similarity", downloads=7000, likes=50)
    return hub


def test_text_search_sorted_by_downloads(catalog, api, gpu24):
    results = search(api, text="chat", host=gpu24)
    assert [r["id"] for r in results] == ["acme/chat-8b", "acme/chat-70b", "acme/chat-small"]
    assert [r["downloads"] for r in results] == [9000, 4000, 500]
    first = results[0]
    assert first["task"] == "text-generation" and first["gated"] is False
    assert first["params"] == 8_030_261_248 and first["size_bytes"] == 16_060_522_496
    assert first["fit"]["verdict"] == "fits"


def test_task_filter_and_sort_by_likes(catalog, api, gpu24):
    assert [r["id"] for r in search(api, task="sentence-similarity", host=gpu24)] == ["other/embedder"]
    by_likes = search(api, text="acme", sort="likes", host=gpu24)
    assert [r["likes"] for r in by_likes] == [900, 3, 1]


def test_limit_and_bad_arguments(catalog, api, gpu24):
    assert len(search(api, limit=2, host=gpu24)) == 2
    with pytest.raises(ValueError, match="sort"):
        search(api, sort="size", host=gpu24)
    with pytest.raises(ValueError, match="limit"):
        search(api, limit=0, host=gpu24)


def test_fits_only_drops_what_cannot_run_here(catalog, api, gpu24):
    everything = {r["id"]: r["fit"] for r in search(api, host=gpu24)}
    assert everything["acme/chat-70b"]["verdict"] == "does not fit"
    assert everything["acme/chat-70b"]["tensor_parallel_size"] == 8
    kept = [r["id"] for r in search(api, host=gpu24, fits_only=True)]
    assert kept == ["acme/chat-8b", "other/embedder", "acme/chat-small"]


def test_unreadable_metadata_gives_unknown_not_a_crash(catalog, api, gpu24):
    catalog.add_repo("acme/chat-broken", {"config.json": b"{not json", "model.safetensors": b"\x05"},
                     downloads=100)
    catalog.add_repo("acme/chat-gated", {"config.json": b"{}"}, gated=True, downloads=50)
    results = {r["id"]: r for r in search(api, text="chat", host=gpu24)}
    assert len(results) == 5
    assert results["acme/chat-broken"]["fit"]["verdict"] == "unknown"
    assert results["acme/chat-broken"]["fit"]["reason"]
    gated = results["acme/chat-gated"]
    assert gated["gated"] is True and gated["fit"]["verdict"] == "unknown"
    assert "token" in gated["fit"]["reason"]
    assert results["acme/chat-8b"]["fit"]["verdict"] == "fits"


def test_measured_memory_replaces_the_estimate(catalog, api, gpu24):
    results = {r["id"]: r["fit"] for r in search(api, text="chat", host=gpu24, measured={"acme/chat-8b": 25.0})}
    assert results["acme/chat-8b"]["basis"] == "measured"
    assert results["acme/chat-8b"]["need_gb"] == 25.0
    assert results["acme/chat-8b"]["verdict"] == "does not fit"
    assert results["acme/chat-small"]["basis"] == "estimated"
