"""The model form: registry entry <-> form fields, and the change an edit makes (only what differs)."""

from __future__ import annotations

import json

ENGINE_FIELDS = ("dtype", "max_model_len", "tensor_parallel_size", "gpu_memory_utilization", "kv_cache_memory_bytes",
                 "concurrent_sequences", "enforce_eager", "extra_args")


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
              "gpu_memory_utilization": _number(form, "engine_gpu_memory_utilization", float, errors),
              "kv_cache_memory_bytes": _number(form, "engine_kv_cache_memory_bytes", int, errors),
              "concurrent_sequences": _number(form, "engine_concurrent_sequences", int, errors),
              "enforce_eager": bool(form.get("engine_enforce_eager")), "extra_args": {}}
    entry = {"id": (form.get("id") or "").strip(), "source": (form.get("source") or "").strip(),
             "revision": (form.get("revision_ref") or "").strip() or None, "task": form.get("task") or "generate",
             "serve": bool(form.get("serve")), "always_on": bool(form.get("always_on")),
             "idle_timeout_s": _number(form, "idle_timeout_s", int, errors),
             "memory_gb": _number(form, "memory_gb", float, errors), "engine": engine}
    try:
        engine["extra_args"] = json.loads(form.get("engine_extra_args") or "{}")
        if not isinstance(engine["extra_args"], dict):
            raise ValueError
    except ValueError:
        errors.append('engine.extra_args: write a JSON object, e.g. {"trust_remote_code": true}')
        engine["extra_args"] = {}
    return entry, errors


def form_from_entry(entry: dict) -> dict:
    """Form values (strings) showing an entry."""
    values = {k: "" if entry.get(k) is None else entry[k] for k in ("id", "source", "task", "idle_timeout_s", "memory_gb")}
    values.update(revision_ref=entry.get("revision") or "", serve=entry.get("serve"), always_on=entry.get("always_on"))
    engine = entry.get("engine") or {}
    for key in ENGINE_FIELDS:
        values[f"engine_{key}"] = "" if engine.get(key) is None else engine[key]
    values["engine_extra_args"] = json.dumps(engine.get("extra_args") or {})
    return values


def changes(current: dict, wanted: dict) -> dict:
    """Only what differs (None resets a field to its default; the API merges engine settings)."""
    diff = {k: v for k, v in wanted.items() if k not in ("id", "engine") and current.get(k) != v}
    old_engine, engine = current.get("engine") or {}, {}
    for key in ENGINE_FIELDS[:-1]:
        if old_engine.get(key) != wanted["engine"][key]:
            engine[key] = wanted["engine"][key]
    old_extra, new_extra = old_engine.get("extra_args") or {}, wanted["engine"]["extra_args"]
    extra = {k: v for k, v in new_extra.items() if old_extra.get(k) != v}
    extra.update({k: None for k in old_extra if k not in new_extra})
    if extra:
        engine["extra_args"] = extra
    if engine:
        diff["engine"] = engine
    return diff
