"""Background services of the single-box path (the management API, the admin UI): start, stop, status.

Each runs as its own process group with a PID file ``<state_dir>/<name>.pid`` and a log in
``<state_dir>/logs/<name>.log``. Stop signals the PID from the file (after checking that the
process is the one we started), never a name pattern.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import psutil

from app.settings import Settings

# Addresses that mean "every interface" (or this machine): reach them on 127.0.0.1.
WILDCARDS = {"", "0.0.0.0", "::", "[::]", "localhost"}


def local_url(settings: Settings, port: int) -> str:
    """Where this machine reaches a server of the box bound to ``settings.host`` on ``port``."""
    host = "127.0.0.1" if settings.host in WILDCARDS else settings.host
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a host name
    return f"http://{host}:{port}"


def _pid_file(settings: Settings, name: str) -> Path:
    return settings.state_dir / f"{name}.pid"


def pid(settings: Settings, name: str) -> int | None:
    """The PID of the running service, or None (a stale PID file is ignored)."""
    try:
        value = int(_pid_file(settings, name).read_text().strip())
        proc = psutil.Process(value)
        if proc.status() != psutil.STATUS_ZOMBIE and f"llmbox-{name}" in proc.environ().get("LLMBOX_SERVICE", ""):
            return value
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def start(settings: Settings, name: str, module: str, health_url: str, timeout_s: float = 60,
          env: Mapping[str, str] | None = None) -> bool:
    """Start ``python -m module`` unless it runs; wait until ``health_url`` answers. True if started now.

    ``env``: the service's environment (default: this process's).
    """
    if pid(settings, name):
        return False
    logs = settings.state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    variables = {**(os.environ if env is None else env), "LLMBOX_SERVICE": f"llmbox-{name}"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", module], cwd=settings.root_dir, env=variables, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    _pid_file(settings, name).write_text(f"{proc.pid}\n")
    wait_healthy(health_url, proc, timeout_s, log_path, name=name)
    return True


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float, log_path: Path | None = None,
                 name: str | None = None) -> None:
    """Poll ``url`` until it answers 200. RuntimeError if ``proc`` exits first or ``timeout_s`` passes, with
    the last lines of ``log_path`` (where its output goes, if anywhere); ``name`` names it (default: its command)."""
    name = name or " ".join(map(str, proc.args))
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}{_tail(log_path)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer on {url} within {timeout_s:.0f} s{_tail(log_path)}")
        time.sleep(0.2)


def _tail(log_path: Path | None, lines: int = 10) -> str:
    if log_path is None:
        return ""
    last = Path(log_path).read_text(errors="replace").strip().splitlines()[-lines:]
    return f" (the end of {log_path}):\n" + "\n".join(last)


def stop(settings: Settings, name: str, grace_s: float = 10) -> int | None:
    """Stop the service (SIGTERM, then SIGKILL after ``grace_s``); returns its PID if it ran."""
    target = pid(settings, name)
    if target is None:
        _pid_file(settings, name).unlink(missing_ok=True)
        return None
    os.killpg(target, signal.SIGTERM)  # its own group: the service and anything it started
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid(settings, name):
        time.sleep(0.2)
    if pid(settings, name):
        os.killpg(target, signal.SIGKILL)
    _pid_file(settings, name).unlink(missing_ok=True)
    return target
