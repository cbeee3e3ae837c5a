"""Settings come from LLMBOX_* variables; paths resolve against the checkout; exposure needs keys."""

from pathlib import Path

import pytest

from app.settings import Settings


def test_environment_overrides_with_the_llmbox_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMBOX_SERVE_PORT", "9100")
    monkeypatch.setenv("LLMBOX_ROOT_DIR", str(tmp_path))
    monkeypatch.setenv("LLMBOX_MODELS_DIR", "weights")
    monkeypatch.setenv("LLMBOX_REGISTRY_PATH", "/etc/llmbox/models.yml")
    monkeypatch.setenv("LLMBOX_API_KEYS", "alpha, beta,")
    settings = Settings()
    assert settings.serve_port == 9100
    assert settings.models_dir == tmp_path / "weights"
    assert settings.registry_path == Path("/etc/llmbox/models.yml")
    assert [k.get_secret_value() for k in settings.api_keys] == ["alpha", "beta"]
    assert "alpha" not in repr(settings)  # secrets never printed


def test_bad_values_are_rejected(monkeypatch):
    monkeypatch.setenv("LLMBOX_SERVE_PORT", "70000")
    with pytest.raises(ValueError, match="serve_port"):
        Settings()


@pytest.mark.parametrize(
    ("host", "keys", "refused"),
    [("127.0.0.1", [], False), ("localhost", [], False), ("::1", [], False),
     ("0.0.0.0", [], True), ("192.168.1.5", [], True), ("box.lan", [], True), ("0.0.0.0", ["k"], False)],
)
def test_binding_beyond_loopback_requires_keys(host, keys, refused):
    settings = Settings(host=host, api_keys=keys)
    if refused:
        with pytest.raises(ValueError, match="LLMBOX_API_KEYS"):
            settings.check_exposure()
    else:
        settings.check_exposure()
