"""The model replica: ray.serve.llm's LLMServer plus what the model manager asks of it.

The data path: the replica serves vLLM's own OpenAI app (the one `vllm serve` runs, built by
ray.serve.llm on this replica's engine) with its own HTTP server, on a port of its own that only
the router may use (the box's replica secret, app/web/shared_secret.py). So a request costs what
it costs under `vllm serve`, and every route vLLM has for the model (chat, completions, responses,
Anthropic messages, tokenize, embeddings, score, rerank, ...) is there. ``engine_info`` reports the
port, and the router forwards request bytes to it (app/serving/proxy.py).

``engine_info`` tells the manager which engine processes to watch (so it notices a crash within
a second, instead of Serve restarting the replica on its own ~35 s later), and, after an engine
died, its exit code and the last error line of the replica's log. ``metrics`` is vLLM's own
Prometheus text of this replica (running and waiting requests, for tests and operators).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import psutil
from ray.serve.llm.deployment import LLMServer

from app.engines.engine_logs import last_error_line, own_log
from app.web import shared_secret
from app.web.listener import listen

ENGINE_PREFIX = "VLLM"  # vLLM titles its processes VLLM::EngineCore, VLLM::Worker_TP0, ...


def node_address() -> str:
    """Where this replica listens: its node's address in the cluster (127.0.0.1 on a single box),
    the one the router on the head reaches it at; behind the secret either way."""
    import ray

    return ray.util.get_node_ip_address()


class ModelServer(LLMServer):
    _native = None  # the native app's HTTP server, once started
    _starting: asyncio.Lock | None = None

    async def endpoint(self) -> dict[str, Any]:
        """Where this replica serves vLLM's OpenAI app (started on the first call)."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._native is None:
                app = shared_secret.RequireSecret(await self.__serve_build_asgi_app__(), shared_secret.replica_secret())
                # The router keeps its connections (app/serving/proxy.py IDLE_S): keep them longer.
                self._native = await listen(app, node_address(), 0, keep_alive_s=120.0)
        return {"host": self._native.host, "port": self._native.port}

    async def check_health(self) -> None:
        """Serve's health check: the engine, and (once started) the HTTP server requests come through."""
        if self._native is not None and self._native.serving.done():
            raise RuntimeError(f"the replica's HTTP server on {self._native.host}:{self._native.port} has stopped")
        await super().check_health()

    def __del__(self) -> None:
        """Serve stops the replica: stop accepting (what is in flight ends with the engine)."""
        if self._native is not None:
            self._native.should_exit = True

    async def engine_info(self) -> dict[str, Any]:
        """This replica's pid, its engine processes, any that exited (with exit code), its log, and
        where it serves HTTP."""
        me = psutil.Process()
        children = []
        for child in me.children(recursive=True):
            try:
                children.append({"pid": child.pid, "name": child.name(), "create_time": child.create_time()})
            except psutil.Error:
                continue
        engines = [c for c in children if c["name"].startswith(ENGINE_PREFIX)] or children
        log = own_log()
        return {"pid": me.pid, "create_time": me.create_time(), "processes": engines,
                "exited": _exited(self.engine), "log": log, "last_error": last_error_line(log),
                "endpoint": await self.endpoint()}

    async def metrics(self) -> str:
        """vLLM's Prometheus metrics of this replica's engine."""
        from prometheus_client import REGISTRY, generate_latest

        return generate_latest(REGISTRY).decode()


def _exited(engine) -> list[dict[str, Any]]:
    """Engine processes that have exited, with exit code and signal (vLLM internals, best effort)."""
    try:
        processes = engine._engine_client.engine_core.resources.engine_manager.processes
    except AttributeError:
        return []
    gone = []
    for proc in processes:
        code = proc.exitcode
        if code is not None:
            gone.append({"pid": proc.pid, "name": proc.name, "exit_code": code, "signal": signal_name(code)})
    return gone


def signal_name(exit_code: int | None) -> str | None:
    """SIGKILL for -9 (multiprocessing's way of saying "killed by a signal"), else None."""
    if exit_code is None or exit_code >= 0:
        return None
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"
