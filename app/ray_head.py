"""This box's Ray node: the head (or a worker that joined one), started, found, stopped by PID (ours
only), and joined as a driver.

The one module every process uses to reach Ray (the box CLI, the management API, deploy, tests and
benchmarks), so none of them imports the serving plane just to connect.

A single box runs Ray single-node: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` puts Ray in its
single-node mode on Linux too, which makes it keep 127.0.0.1 as the node address and its ports on
loopback (with the default, ``ray start --node-ip-address=127.0.0.1`` is rewritten to the host's
routable address). With ``LLMBOX_CLUSTER_IP`` the head runs multi-node on that address and worker
nodes may join it (``./start.sh join``); Ray then listens on every interface (its gRPC servers
bind 0.0.0.0 in that mode), behind the cluster's token: firewall its ports to the cluster network.
Every node declares itself with ``llmbox_node_<name>`` (app/cluster/nodes.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil

from app.cluster.nodes import node_resources
from app.engines.llm_config import gpu_resource
from app.gpu import nvml
from app.gpu.footprint import GIB
from app.settings import Settings, without_secrets
from app.web import shared_secret

NAMESPACE = "llmbox"  # the Ray namespace of the box's own actors (the model manager)

_MARK = "LLMBOX_RAY_HEAD"
# A Unix socket path may be at most 107 bytes; Ray puts sockets ~62 bytes below its temp dir.
_MAX_TEMP_DIR_LEN = 40


def temp_dir(settings: Settings) -> Path:
    """Ray's temp dir: under the state dir, or a short /tmp path when that one is too long."""
    preferred = settings.state_dir / "ray"
    if len(str(preferred)) <= _MAX_TEMP_DIR_LEN:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:8]
    return Path(f"/tmp/llmbox-ray-{digest}")


def make_temp_dir(settings: Settings) -> Path:
    """Create Ray's temp dir 0700, or check the one that exists: ours, a real directory, 0700.

    Its /tmp name is predictable, so another user could create it first and then own Ray's
    sessions, sockets and logs: such a directory is refused, never used."""
    path = temp_dir(settings)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass  # checked below: a symlink or another user's directory is refused
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise RuntimeError(f"Ray's temp dir {path} is not a directory of this user (uid {os.getuid()}): someone "
                           "else may have created it; remove it, or set LLMBOX_STATE_DIR to a shorter path")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def multi_node(settings: Settings) -> bool:
    """This node is part of a cluster that may have more than one node (a head on the cluster
    network, or a worker that joined one)."""
    return settings.cluster_ip is not None


def node_ip(settings: Settings) -> str:
    return settings.cluster_ip or "127.0.0.1"


def head_file(settings: Settings) -> Path:
    """On a worker: the address of the head it joined (written by ``./start.sh join``)."""
    return settings.state_dir / "cluster-head"


def joined_head(settings: Settings) -> str | None:
    try:
        return head_file(settings).read_text().strip() or None
    except FileNotFoundError:
        return None


def address(settings: Settings) -> str:
    """The GCS address drivers connect to: the head's (on a worker, the one it joined)."""
    return joined_head(settings) or f"{node_ip(settings)}:{settings.ray_port}"


def auth_token_path(settings: Settings) -> Path:
    """This box's Ray token (0600): without it no process can talk to the head, even locally."""
    return settings.state_dir / "ray-auth-token"


def ray_variables(settings: Settings) -> dict[str, str]:
    """The variables every process of this box's Ray cluster, drivers included, must have."""
    token = auth_token_path(settings)
    shared_secret.ensure(token)
    variables = {
        # single-node mode unless clustered: the node address stays 127.0.0.1, Ray's ports on loopback
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1" if multi_node(settings) else "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ADDRESS": address(settings),
        # Token auth with our own token file, rather than whatever ~/.ray/auth_token holds.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        # Ray starts its workers (the router, the engines) at niceness 15 by default: on a host that
        # also runs OpenWebUI or a build, the serving path would lose every core to them.
        "RAY_worker_niceness": "0",
        # Every process of this head inherits this mark (workers and vLLM engines too), which is
        # how stop() finds exactly our processes: not all of them name the temp dir.
        _MARK: str(temp_dir(settings)),
    }
    if multi_node(settings):
        # The head's GCS marks a node dead after this many missed 1 s health checks (Ray's default:
        # 5 x 3 s), and the manager then unloads its models (app/lifecycle/nodes.py).
        variables.update({"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                          "RAY_health_check_failure_threshold": str(settings.node_timeout_s)})
    return variables


def environment(settings: Settings) -> dict[str, str]:
    """Environment for `ray start`: ours without the box's secrets (every Ray worker and engine,
    remote code included, inherits it; none of them needs a key or the HF token: engines run
    offline, the router gets key hashes), plus this box's Ray variables."""
    return {**without_secrets(os.environ), **ray_variables(settings)}


def _ours(settings: Settings) -> list[psutil.Process]:
    mark = str(temp_dir(settings))
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(_MARK) == mark:
                found.append(proc)
        except psutil.Error:  # gone, or not ours to read
            continue
    return found


def pids(settings: Settings) -> list[int]:
    """PIDs of this box's Ray processes (all that carry this head's environment mark)."""
    return sorted(p.pid for p in _ours(settings))


def is_running(settings: Settings) -> bool:
    """True when this box's Ray head (its GCS server) is alive."""
    return _running(settings, "gcs_server")


def is_joined(settings: Settings) -> bool:
    """True when this machine runs a worker node of this state dir (its raylet, and no head)."""
    return _running(settings, "raylet") and not is_running(settings)


def _running(settings: Settings, name: str) -> bool:
    for proc in _ours(settings):
        try:
            if proc.name() == name:
                return True
        except psutil.Error:
            continue
    return False


def gpu_resources(settings: Settings) -> dict[str, float]:
    """This node's GPUs as the Ray resources models book: ``llmbox_gpu_<index>`` = its memory in GB.

    The model manager decides which GPU a model goes on (app/lifecycle/admission.py) and the
    model's bundle asks exactly its budget of that GPU's resource (app/engines/llm_config.py), so
    Ray's books match the manager's; Ray's own GPU count is declared too, as NVML numbers them."""
    if nvml.detect_device(settings.device) != "gpu":
        return {}
    return {gpu_resource(index): math.floor(total / GIB * 100) / 100 for index, _, total, _ in nvml.devices()}


def command(settings: Settings, block: bool = False, join: str | None = None) -> list[str]:
    """The `ray start --head` command line of this box (``block``: stay in the foreground, for
    systemd), or with ``join`` (the head's address) that of a worker node joining it."""
    ray = Path(sys.executable).with_name("ray")
    cmd = [str(ray), "start"]
    if join is None:
        cmd += ["--head", f"--port={settings.ray_port}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={settings.ray_dashboard_port}"]
    else:
        cmd += [f"--address={join}"]
    cmd += [f"--node-ip-address={node_ip(settings)}", f"--temp-dir={temp_dir(settings)}", "--disable-usage-stats"]
    if settings.ray_num_cpus:
        cmd.append(f"--num-cpus={settings.ray_num_cpus}")
    gpus = gpu_resources(settings)
    budget = settings.cpu_memory_budget_gb if not gpus else None
    resources = {**gpus, **node_resources(settings.node_name, budget)}
    if gpus:
        cmd.append(f"--num-gpus={len(gpus)}")
    cmd.append(f"--resources={json.dumps(resources, sort_keys=True)}")
    if block:
        cmd.append("--block")
    return cmd


def start(settings: Settings) -> bool:
    """Start the head unless it runs; returns True if it was started now."""
    if is_running(settings):
        return False
    if is_joined(settings):
        raise RuntimeError(f"this machine runs a worker node of the cluster at {joined_head(settings)}: "
                           "run ./start.sh leave first")
    make_temp_dir(settings)
    _ray_start(settings, command(settings))
    return True


def join(settings: Settings, head: str) -> bool:
    """Start a worker node that joins the head at ``head`` (host:port) unless one runs; True if started now.

    The cluster's token must be in this node's token file already (./start.sh join writes it)."""
    if is_joined(settings):
        return False
    if is_running(settings):
        raise RuntimeError("this machine runs the head of a box with this state dir: a node is either one")
    if not multi_node(settings):
        raise RuntimeError("a worker needs LLMBOX_CLUSTER_IP: this node's address on the cluster network "
                           "(or ./start.sh join HEAD --ip ADDRESS)")
    make_temp_dir(settings)
    head_file(settings).write_text(head + "\n")
    _ray_start(settings, command(settings, join=head))
    return True


def _ray_start(settings: Settings, cmd: list[str]) -> None:
    result = subprocess.run(cmd, env=environment(settings), capture_output=True, text=True, timeout=180)
    if result.returncode != 0:
        raise RuntimeError(f"ray start failed ({result.returncode}):\n{result.stderr.strip() or result.stdout.strip()}")


def stop(settings: Settings, grace_s: float = 10.0) -> list[int]:
    """Stop this box's Ray processes by PID (never other Ray clusters); returns the PIDs."""
    targets = pids(settings)
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(psutil.pid_exists(p) and not _zombie(p) for p in targets):
        time.sleep(0.2)
    for pid in targets:
        _signal(pid, signal.SIGKILL)
    return targets


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def connect(settings: Settings) -> None:
    """Attach this process to the box's Ray head as a driver (idempotent)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.update(ray_variables(settings))  # address, single-node mode, auth token
    # Ray read these when it was imported, which may have been before this call. Make this
    # process follow them too: single-node mode (else 127.0.0.1 is rewritten to the host's
    # address) and the box's auth token (re-read as Ray's own test utilities do).
    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    ray_constants.ENABLE_RAY_CLUSTER = multi_node(settings)
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    ray.init(address=address(settings), namespace=NAMESPACE, log_to_driver=False, logging_level="WARNING")


def main(argv: list[str] | None = None) -> None:
    """``python -m app.ray_head [--join HEAD:PORT]``: run the head (or a worker node joining the
    head) in the foreground (a systemd service)."""
    import argparse

    from app.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m app.ray_head")
    parser.add_argument("--join", metavar="HEAD:PORT", help="run a worker node that joins this head")
    args = parser.parse_args(argv)
    settings = get_settings()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    make_temp_dir(settings)
    if args.join:
        if not multi_node(settings):
            parser.error("a worker node needs LLMBOX_CLUSTER_IP (this node's address on the cluster network)")
        if not auth_token_path(settings).exists():
            parser.error(f"{auth_token_path(settings)} is missing: copy the head's Ray token there (0600)")
        head_file(settings).write_text(args.join + "\n")
    cmd = command(settings, block=True, join=args.join)
    os.execve(cmd[0], cmd, environment(settings))


if __name__ == "__main__":
    main()
