"""The hub stand-in speaks what huggingface_hub expects (so other tests and the UI can rely on it)."""

import subprocess
import sys

import httpx
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from app.hub.fit import HostMemory, estimate_repo
from tests.conftest import HUB_TOKEN


@pytest.fixture
def repos(hub):
    hub.add_repo("acme/public", {"config.json": b'{"a": 1}', "model.safetensors": bytes(range(256)) * 40},
                 downloads=10, likes=2, tags=["llama"])
    hub.add_repo("acme/gated", {"config.json": b"{}"}, gated=True, downloads=5, likes=9)
    return hub


def test_hf_hub_download_and_the_client_exceptions(repos, tmp_path):
    def download(repo_id, filename, **kwargs):
        return hf_hub_download(repo_id, filename, endpoint=repos.url, cache_dir=tmp_path / "cache", **kwargs)

    path = download("acme/public", "model.safetensors", token=False)
    assert open(path, "rb").read() == bytes(range(256)) * 40
    with pytest.raises(RepositoryNotFoundError):
        download("acme/missing", "config.json", token=False)
    with pytest.raises(RevisionNotFoundError):
        download("acme/public", "config.json", revision="v9", token=False)
    with pytest.raises(RemoteEntryNotFoundError):
        download("acme/public", "nope.json", token=False)
    with pytest.raises(GatedRepoError):
        download("acme/gated", "config.json", token=False)
    assert open(download("acme/gated", "config.json", token=HUB_TOKEN)).read() == "{}"


def test_snapshot_download_lists_the_tree_and_fetches_every_file(repos, tmp_path):
    repos.add_repo("acme/nested", {"config.json": b"{}", "1_Pooling/config.json": b'{"pooling": 1}',
                                   "model.safetensors": b"w" * 5000})
    folder = snapshot_download("acme/nested", endpoint=repos.url, local_dir=tmp_path / "snap", token=False)
    for name in ("config.json", "1_Pooling/config.json", "model.safetensors"):
        assert (tmp_path / "snap" / name).read_bytes() == repos.file_bytes("acme/nested", name)
    assert folder == str(tmp_path / "snap")
    tree = HfApi(endpoint=repos.url, token=False).list_repo_tree("acme/nested")
    assert sorted(e.path for e in tree) == ["1_Pooling", "config.json", "model.safetensors"]


def test_range_requests(repos):
    content = bytes(range(256)) * 40
    url = f"{repos.url}/acme/public/resolve/main/model.safetensors"
    partial = httpx.get(url, headers={"Range": "bytes=100-199"})
    assert partial.status_code == 206
    assert partial.headers["Content-Range"] == f"bytes 100-199/{len(content)}"
    assert partial.content == content[100:200]
    assert httpx.get(url, headers={"Range": "bytes=-10"}).content == content[-10:]
    assert httpx.get(url, headers={"Range": f"bytes={len(content)}-"}).status_code == 416
    head = httpx.head(url)
    assert head.headers["X-Linked-Size"] == str(len(content)) and head.headers["X-Repo-Commit"]
    assert not any(h.lower().startswith("x-xet") for h in head.headers)  # plain HTTP only
    assert repos.range_requests == 2  # served ones only, not the refused one


def test_list_models_filters_sorts_and_expands(repos):
    api = HfApi(endpoint=repos.url, token=False)
    assert [m.id for m in api.list_models(sort="likes")] == ["acme/gated", "acme/public"]
    assert [m.id for m in api.list_models(filter="llama")] == ["acme/public"]
    (full,) = api.list_models(search="public", full=True)
    assert [s.rfilename for s in full.siblings] == ["config.json", "model.safetensors"]
    (expanded,) = api.list_models(search="gated", expand=["gated", "likes"])
    assert (expanded.gated, expanded.likes, expanded.downloads) == ("manual", 9, None)
    ascending = httpx.get(f"{repos.url}/api/models", params={"sort": "downloads", "direction": "1"}).json()
    assert [m["id"] for m in ascending] == ["acme/gated", "acme/public"]


def test_cli_publishes_demo_repos(hub_root):
    process = subprocess.Popen(
        [sys.executable, "-m", "app.devtools.hub_standin", "--port", "0", "--root", str(hub_root)],
        stdout=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert banner.startswith("hub stand-in at "), f"the stand-in CLI did not start: {banner!r}"
        url = banner.split()[3]
        api = HfApi(endpoint=url, token=False)
        ids = {m.id for m in api.list_models()}
        assert ids == {"llmbox-demo/tiny-chat", "llmbox-demo/tiny-chat-gated", "llmbox-demo/llama-70b-shaped",
                       "llmbox-demo/minilm-embed"}
        host = HostMemory.gpus([("24 GB GPU", 24.0, 24.0)])
        assert estimate_repo(api, "llmbox-demo/llama-70b-shaped", host=host)["verdict"] == "does not fit"
        assert estimate_repo(api, "llmbox-demo/tiny-chat", host=host)["verdict"] == "fits"
        with pytest.raises(GatedRepoError):
            api.hf_hub_download("llmbox-demo/tiny-chat-gated", "config.json", cache_dir=str(hub_root / "c"))
    finally:
        process.terminate()
        process.wait(timeout=10)
