"""Admission: does a model fit, and which idle models would make room (pure functions).

A load that does not fit first evicts idle unpinned models, least valuable first; if that is not
enough it drains the least valuable busy one (new requests wait for its reload, the ones in flight
finish, then it is evicted) and waits; it is refused at once only when it could never fit (its
need is more than the total less what pinned models take), else at its load deadline.

A model's need is its footprint measured after its last load, else the registry's ``memory_gb``,
else DEFAULT_NEED_GB. Free memory counts what models that are still loading will take: NVML sees
only what an engine has allocated so far, and a CPU budget sees nothing of a load in progress, so
without this two concurrent loads would both be admitted against the same free memory.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.lifecycle.runtime import DEFAULT_NEED_GB, Runtime
from app.lifecycle.states import State

HELD = (State.READY, State.UNLOADING)  # memory an engine holds now
COMING = (State.LOADING, State.RESTARTING)  # memory an engine is about to take
DEFAULT_RELOAD_S = 30.0  # reload cost assumed for a model never loaded here


def need_gb(rt: Runtime) -> float:
    return rt.memory_gb or rt.entry.memory_gb or DEFAULT_NEED_GB


def held_gb(models: Iterable[Runtime], exclude: Runtime | None = None) -> float:
    """What loaded models hold (by their need: measured, else estimated)."""
    return sum(need_gb(r) for r in models if r is not exclude and r.state in HELD)


def coming_gb(models: Iterable[Runtime], exclude: Runtime | None = None) -> float:
    """What models still loading (or reloading after a crash), and admitted, will take."""
    return sum(need_gb(r) for r in models if r is not exclude and r.state in COMING and r.admitted)


def value(rt: Runtime, now: float) -> float:
    """How much keeping a model is worth: what reloading costs, per second it sat idle."""
    idle = max(rt.idle_for(now), 1.0)
    return (rt.last_load_s or DEFAULT_RELOAD_S) / idle


def victims(models: Iterable[Runtime], wanted: Runtime, now: float) -> list[Runtime]:
    """Models that may be evicted for ``wanted``, least valuable first: ready, not pinned, idle."""
    candidates = [r for r in models
                  if r is not wanted and r.state == State.READY and not r.entry.always_on and not r.busy()]
    return sorted(candidates, key=lambda r: value(r, now))


def drainable(models: Iterable[Runtime], wanted: Runtime, now: float) -> list[Runtime]:
    """Busy models that could make room once their requests end, least valuable first."""
    candidates = [r for r in models
                  if r is not wanted and r.state == State.READY and not r.entry.always_on and r.busy()]
    return sorted(candidates, key=lambda r: value(r, now))


def ceiling_gb(models: Iterable[Runtime], wanted: Runtime, total: float) -> float:
    """The most ``wanted`` could ever get: the total less what pinned models hold or will take."""
    return total - sum(need_gb(r) for r in models
                       if r is not wanted and r.entry.always_on and (r.state in HELD or r.admitted))


def refusal(wanted: Runtime, need: float, free: float, total: float, models: Iterable[Runtime]) -> str:
    """Why ``wanted`` cannot be loaded, naming what holds the memory."""
    holders = [r.entry.id for r in models if r is not wanted and (r.state in HELD or r.admitted)]
    return (f"not enough memory for {wanted.entry.id!r}: needs {need:.1f} GB, {max(free, 0):.1f} GB free "
            f"of {total:.1f} GB; loaded and busy or pinned: {', '.join(holders) or 'none'}")
