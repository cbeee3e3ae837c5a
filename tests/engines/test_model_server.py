"""The model replica's own HTTP server (app/engines/model_server.py): Serve's health check sees it stop."""

import asyncio
from types import SimpleNamespace

import pytest

from app.engines.model_server import ModelServer


def test_a_replica_whose_http_server_stopped_fails_its_health_check(monkeypatch):
    replica = ModelServer.__new__(ModelServer)  # no engine: only the check of its own server is under test

    async def engine_healthy(self):
        return None

    monkeypatch.setattr("ray.serve.llm.deployment.LLMServer.check_health", engine_healthy)

    async def check(serving_done: bool):
        serving = asyncio.get_running_loop().create_future()
        if serving_done:
            serving.set_result(None)
        replica._native = SimpleNamespace(serving=serving, host="127.0.0.1", port=40001, should_exit=False)
        await replica.check_health()

    asyncio.run(check(serving_done=False))  # serving: healthy
    with pytest.raises(RuntimeError, match="HTTP server on 127.0.0.1:40001 has stopped"):
        asyncio.run(check(serving_done=True))
