"""Secrets reach only the processes that use them, and the box's private folders stay private."""

import os
import subprocess
import sys

import pytest

from app import ray_head
from app.settings import Settings, without_secrets
from tests.conftest import ROOT

SECRETS = {"LLMBOX_API_KEYS": "sk-a,sk-b", "HF_TOKEN": "hf_x", "LLMBOX_HF_TOKEN": "hf_y",
           "HUGGING_FACE_HUB_TOKEN": "hf_z"}


def test_the_ray_head_starts_without_any_secret(monkeypatch, tmp_path):
    """Every Ray worker and engine (remote code included) inherits the head's environment."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    env = ray_head.environment(Settings(state_dir=tmp_path))
    assert not set(SECRETS) & set(env)
    assert env["RAY_AUTH_MODE"] == "token" and env["PATH"] == os.environ["PATH"]


def test_without_secrets_keeps_only_what_is_asked():
    env = {"PATH": "/bin", **SECRETS}
    assert without_secrets(env) == {"PATH": "/bin"}
    assert without_secrets(env, keep=("HF_TOKEN",)) == {"PATH": "/bin", "HF_TOKEN": "hf_x"}


def short_state_dir(tmp_path):
    """A state dir whose ray/ is too long for Ray's sockets, so Ray's temp dir goes to /tmp."""
    return tmp_path / ("x" * 40)


def test_ray_temp_dir_in_tmp_is_made_private(tmp_path):
    settings = Settings(state_dir=short_state_dir(tmp_path))
    path = ray_head.temp_dir(settings)
    assert str(path).startswith("/tmp/llmbox-ray-")
    try:
        os.makedirs(path, mode=0o755, exist_ok=True)
        os.chmod(path, 0o755)
        assert ray_head.make_temp_dir(settings) == path
        assert os.stat(path).st_mode & 0o777 == 0o700
    finally:
        os.rmdir(path)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to create a folder owned by another user")
def test_a_ray_temp_dir_another_user_made_first_is_refused(tmp_path):
    settings = Settings(state_dir=short_state_dir(tmp_path))
    path = ray_head.temp_dir(settings)
    os.makedirs(path, mode=0o777)
    try:
        os.chown(path, 65534, 65534)  # nobody: as if another user had pre-created the predictable name
        with pytest.raises(RuntimeError, match="not a directory of this user"):
            ray_head.make_temp_dir(settings)
    finally:
        os.rmdir(path)
    os.symlink(tmp_path, path)  # a link to somewhere else is refused too
    try:
        with pytest.raises(RuntimeError, match="not a directory of this user"):
            ray_head.make_temp_dir(settings)
    finally:
        os.unlink(path)


def test_start_sh_key_prints_a_key_once_and_stores_its_hash(tmp_path):
    env = {**os.environ, "LLMBOX_STATE_DIR": str(tmp_path / "var")}
    made = subprocess.run([sys.executable, "-m", "app.box", "key", "webui", "--scope", "inference",
                           "--models", "chat,embed"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    stored = (tmp_path / "var" / "api-keys").read_text()
    assert key.startswith("sk-llmbox-") and key not in stored and "webui inference sha256:" in stored
    assert stored.rstrip().endswith(" chat,embed")
    assert (tmp_path / "var" / "api-keys").stat().st_mode & 0o777 == 0o600
    bad = subprocess.run([sys.executable, "-m", "app.box", "key", "x", "--scope", "admin"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "expected one or more of inference, control" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_beyond_loopback_an_inference_key_in_the_key_file_is_enough_a_control_key_is_not(tmp_path):
    from app.serving import deploy
    from app.serving.keys import KeyFile

    settings = Settings(host="0.0.0.0", state_dir=tmp_path)
    with pytest.raises(ValueError, match="no API keys are set"):
        deploy.check_exposure(settings)
    KeyFile(settings.api_keys_path).add("ops", ["control"])
    with pytest.raises(ValueError, match="no API keys are set"):
        deploy.check_exposure(settings)
    KeyFile(settings.api_keys_path).add("webui", ["inference"])
    deploy.check_exposure(settings)
    config = deploy.router_config(settings)
    assert config.keys_required and config.keys_path == str(settings.api_keys_path)
