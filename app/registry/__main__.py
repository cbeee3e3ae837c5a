"""Command line for the registry: ``python -m app.registry init|show|history``."""

from __future__ import annotations

import argparse
import sys

from app.gpu.nvml import detect_device
from app.registry.defaults import default_registry_text
from app.registry.store import RegistryError, RegistryStore
from app.settings import get_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.registry", description=__doc__)
    parser.add_argument("command", choices=["init", "show", "history"])
    args = parser.parse_args(argv)
    settings = get_settings()
    store = RegistryStore(settings.registry_path, settings.registry_history_keep)
    try:
        if args.command == "init":
            existed = store.path.exists()
            device = detect_device(settings.device)
            registry = store.create(default_registry_text(device, settings.models_dir))
            state = "kept the existing" if existed else f"created the {device} default"
            print(f"{state} registry {store.path} (revision {registry.revision})")
        elif args.command == "show":
            registry = store.read()
            print(f"{store.path}  revision {registry.revision}")
            for m in registry.models:
                flags = ",".join(f for f in ("serve", "always_on") if getattr(m, f)) or "-"
                print(f"  {m.id:28} {m.task:8} {flags:16} {m.source}")
        else:
            print("\n".join(str(r) for r in store.history()))
    except (RegistryError, OSError) as exc:
        print(f"registry error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
