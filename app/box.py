"""The single-box quickstart behind ./start.sh: ``python -m app.box start|stop|status``.

``start`` is idempotent: it makes what is missing (the tiny chat model, the registry, the Ray
head) and leaves running parts alone, so running it twice never starts a second copy.
"""

from __future__ import annotations

import argparse
import sys

from app.devtools.tiny_model import make_tiny_model
from app.gpu.nvml import detect_device
from app.registry.defaults import default_registry_text
from app.registry.store import RegistryError, RegistryStore
from app.serving import ray_head
from app.settings import Settings, get_settings


def say(message: str) -> None:
    print(f"[llmbox] {message}", flush=True)


def start(settings: Settings) -> None:
    settings.check_exposure()
    device = detect_device(settings.device)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    tiny = make_tiny_model(settings.models_dir / "tiny-chat")
    say(f"tiny chat model ready in {tiny}")
    store = RegistryStore(settings.registry_path, settings.registry_history_keep)
    existed = store.path.exists()
    registry = store.create(default_registry_text(device, settings.models_dir))
    say(f"{'registry' if existed else 'new ' + device + ' registry'} {store.path} at revision {registry.revision}")
    if ray_head.start(settings):
        say(f"started the Ray head on {ray_head.address(settings)} (temp dir {ray_head.temp_dir(settings)})")
    else:
        say(f"the Ray head already runs on {ray_head.address(settings)}")
    say(f"Ray dashboard: http://127.0.0.1:{settings.ray_dashboard_port}")
    _print_models(store)


def stop(settings: Settings) -> None:
    stopped = ray_head.stop(settings)
    say(f"stopped {len(stopped)} Ray processes" if stopped else "nothing was running")


def status(settings: Settings) -> int:
    running = ray_head.is_running(settings)
    say(f"Ray head: {'running on ' + ray_head.address(settings) if running else 'not running'}")
    _print_models(RegistryStore(settings.registry_path))
    return 0 if running else 3  # 3: "not running", as LSB status scripts say


def _print_models(store: RegistryStore) -> None:
    if not store.path.exists():
        say(f"no registry yet at {store.path} (./start.sh creates it)")
        return
    registry = store.read()
    for model in registry.models:
        role = "always on" if model.always_on else ("on demand" if model.serve else "not served")
        say(f"  model {model.id:28} {model.task:8} {role}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./start.sh", description="Run the llmbox single-box quickstart.")
    parser.add_argument("command", nargs="?", default="start", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        if args.command == "start":
            start(settings)
        elif args.command == "stop":
            stop(settings)
        else:
            return status(settings)
    except (RegistryError, RuntimeError, ValueError, OSError) as exc:
        say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
