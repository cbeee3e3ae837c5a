"""The model form: registry entry <-> form fields, and the change an edit makes (only what differs)."""

from __future__ import annotations

import json

ENGINE_FIELDS = ("dtype", "max_model_len", "tensor_parallel_size", "pipeline_parallel_size", "gpu_memory_utilization",
                 "kv_cache_memory_bytes", "concurrent_sequences", "enforce_eager")
# Engine settings written as JSON objects, with an example for the error message.
ENGINE_MAPS = {"extra_args": '{"max_num_seqs": 8}', "env": '{"NCCL_P2P_DISABLE": "1"}'}


def _number(form, name: str, kind, errors: list[str]):
    raw = (form.get(name) or "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        errors.append(f"{name.replace('engine_', 'engine.')}: {raw!r} is not a {'whole ' if kind is int else ''}number")


def entry_from_form(form) -> tuple[dict, list[str]]:
    """The registry entry a form describes, and what could not be read (the API checks the rest)."""
    errors: list[str] = []
    engine = {"dtype": form.get("engine_dtype") or "auto",
              "max_model_len": _number(form, "engine_max_model_len", int, errors),
              "tensor_parallel_size": _number(form, "engine_tensor_parallel_size", int, errors) or 1,
              "pipeline_parallel_size": _number(form, "engine_pipeline_parallel_size", int, errors) or 1,
              "gpu_memory_utilization": _number(form, "engine_gpu_memory_utilization", float, errors),
              "kv_cache_memory_bytes": _number(form, "engine_kv_cache_memory_bytes", int, errors),
              "concurrent_sequences": _number(form, "engine_concurrent_sequences", int, errors),
              "enforce_eager": bool(form.get("engine_enforce_eager"))}
    entry = {"id": (form.get("id") or "").strip(), "source": (form.get("source") or "").strip(),
             "revision": (form.get("revision_ref") or "").strip() or None, "task": form.get("task") or "generate",
             "serve": bool(form.get("serve")), "always_on": bool(form.get("always_on")),
             "idle_timeout_s": _number(form, "idle_timeout_s", int, errors),
             "memory_gb": _number(form, "memory_gb", float, errors), "engine": engine,
             "nodes": [n.strip() for n in (form.get("nodes") or "").split(",") if n.strip()]}
    for key, example in ENGINE_MAPS.items():
        try:
            engine[key] = json.loads(form.get(f"engine_{key}") or "{}")
            if not isinstance(engine[key], dict):
                raise ValueError
        except ValueError:
            errors.append(f"engine.{key}: write a JSON object, e.g. {example}")
            engine[key] = {}
    return entry, errors


def form_from_entry(entry: dict) -> dict:
    """Form values (strings) showing an entry."""
    values = {k: "" if entry.get(k) is None else entry[k] for k in ("id", "source", "task", "idle_timeout_s", "memory_gb")}
    values.update(revision_ref=entry.get("revision") or "", serve=entry.get("serve"), always_on=entry.get("always_on"),
                  nodes=", ".join(entry.get("nodes") or []))
    engine = entry.get("engine") or {}
    for key in ENGINE_FIELDS:
        values[f"engine_{key}"] = "" if engine.get(key) is None else engine[key]
    for key in ENGINE_MAPS:
        values[f"engine_{key}"] = json.dumps(engine.get(key) or {})
    return values


def changes(current: dict, wanted: dict) -> dict:
    """Only what differs (None resets a field to its default; the API merges engine settings)."""
    diff = {k: v for k, v in wanted.items() if k not in ("id", "engine") and current.get(k) != v}
    old_engine, engine = current.get("engine") or {}, {}
    for key in ENGINE_FIELDS:
        if old_engine.get(key) != wanted["engine"][key]:
            engine[key] = wanted["engine"][key]
    for key in ENGINE_MAPS:  # key by key; None removes one
        old, new = old_engine.get(key) or {}, wanted["engine"][key]
        diff_map = {k: v for k, v in new.items() if old.get(k) != v}
        diff_map.update({k: None for k in old if k not in new})
        if diff_map:
            engine[key] = diff_map
    if engine:
        diff["engine"] = engine
    return diff
