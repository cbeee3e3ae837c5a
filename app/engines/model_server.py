"""The model replica: ray.serve.llm's LLMServer plus what the model manager asks of it.

``engine_info`` tells the manager which engine processes to watch (so it notices a crash within
a second, instead of Serve restarting the replica on its own ~35 s later), and, after an engine
died, its exit code and the last error line of the replica's log. ``metrics`` is vLLM's own
Prometheus text of this replica (running and waiting requests, for tests and operators).
"""

from __future__ import annotations

import signal
from typing import Any

import psutil
from ray.serve.llm.deployment import LLMServer

from app.engines.engine_logs import last_error_line, own_log

ENGINE_PREFIX = "VLLM"  # vLLM titles its processes VLLM::EngineCore, VLLM::Worker_TP0, ...


class ModelServer(LLMServer):
    async def engine_info(self) -> dict[str, Any]:
        """This replica's pid, its engine processes, any that exited (with exit code), its log."""
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
                "exited": _exited(self.engine), "log": log, "last_error": last_error_line(log)}

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
