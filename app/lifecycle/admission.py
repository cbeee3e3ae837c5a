"""Admission: where a model goes, and which models make room for it (pure functions).

The ledger is per device (each GPU; a CPU host's memory budget is one device). A model's need
per device is, first found: its footprint measured after its last load, the registry's
``memory_gb`` (split over its ``tensor_parallel_size``), its ``gpu_memory_utilization`` x the
GPU's total, its budget estimated from its files (app/gpu/footprint.py), else DEFAULT_NEED_GB.
Admission books that need on the devices it chooses (``Runtime.placement``) and the engine is
told exactly that much (app/engines/llm_config.py).

A device's room is the lesser of what it has free now (NVML) less what admitted loads will
still take, and its total less everything booked on it: NVML sees only what an engine has
allocated so far, and a CPU budget sees nothing of a load in progress, so without the booking
two concurrent loads would both be admitted against the same free memory.

A model goes on the devices with room, the fullest that still fit first (best fit: the emptier
GPUs stay free for bigger models); a model with ``tensor_parallel_size: N`` on N distinct
devices. If none have room, idle unpinned models on the devices that would then fit are evicted,
least valuable first; if that is not enough, the least valuable busy one is drained (new
requests wait for its reload, the ones in flight finish, then it is evicted) and the load
waits. It is refused at once only when it could never fit (no N devices whose total less what
pinned models book there holds its need), else at its load deadline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.gpu.footprint import GIB
from app.gpu.memory import Device
from app.lifecycle.runtime import DEFAULT_NEED_GB, Runtime
from app.lifecycle.states import State

HELD = (State.READY, State.UNLOADING)  # memory an engine holds now
COMING = (State.LOADING, State.RESTARTING)  # memory an engine is about to take
DEFAULT_RELOAD_S = 30.0  # reload cost assumed for a model never loaded here


def need_gb(rt: Runtime, device: Device | None = None) -> float:
    """What ``rt`` needs on each device it is placed on (see the module docstring)."""
    tp = rt.entry.engine.tensor_parallel_size
    if rt.memory_gb:
        return rt.memory_gb / tp
    if rt.entry.memory_gb:
        return rt.entry.memory_gb / tp
    utilisation = rt.entry.engine.gpu_memory_utilization
    if utilisation and device is not None and device.name != "cpu":
        return utilisation * device.total_gb
    if rt.budget is not None:
        return rt.budget.per_device / GIB
    return DEFAULT_NEED_GB


def on(rt: Runtime, index: int) -> bool:
    return rt.placement is not None and index in rt.placement.gpus


def booked(rt: Runtime) -> bool:
    """Its placement counts against its devices: it holds memory, or it is admitted and loading."""
    return rt.placement is not None and (rt.state in HELD or (rt.state in COMING and rt.admitted))


def booked_gb(models: Iterable[Runtime], index: int, exclude: Runtime | None = None) -> float:
    return sum(r.placement.per_device_gb for r in models if r is not exclude and booked(r) and on(r, index))


def coming_gb(models: Iterable[Runtime], index: int, exclude: Runtime | None = None) -> float:
    """What admitted loads on this device will still take (NVML does not see it yet)."""
    return sum(r.placement.per_device_gb for r in models
               if r is not exclude and r.state in COMING and r.admitted and on(r, index))


def room_gb(device: Device, models: Iterable[Runtime], exclude: Runtime | None = None) -> float:
    """What a new model may take on this device now (see the module docstring)."""
    models = list(models)
    return min(device.free_gb - coming_gb(models, device.index, exclude),
               device.total_gb - booked_gb(models, device.index, exclude))


def value(rt: Runtime, now: float) -> float:
    """How much keeping a model is worth: what reloading costs, per second it sat idle."""
    idle = max(rt.idle_for(now), 1.0)
    return (rt.last_load_s or DEFAULT_RELOAD_S) / idle


def victims(models: Iterable[Runtime], wanted: Runtime, now: float, busy: bool = False) -> list[Runtime]:
    """Models that may be evicted for ``wanted``, least valuable first: ready, not pinned, and
    idle (``busy``: in use, to be drained)."""
    candidates = [r for r in models if r is not wanted and r.state == State.READY and not r.entry.always_on
                  and r.placement is not None and r.busy() == busy]
    return sorted(candidates, key=lambda r: value(r, now))


def ceiling_gb(device: Device, models: Iterable[Runtime], wanted: Runtime) -> float:
    """The most ``wanted`` could ever get on this device: its total less what pinned models book there."""
    return device.total_gb - sum(r.placement.per_device_gb for r in models
                                 if r is not wanted and r.entry.always_on and booked(r) and on(r, device.index))


def best_fit(rooms: dict[int, float], needs: dict[int, float], count: int) -> list[int] | None:
    """``count`` devices whose room holds the need, the fullest first; None if there are not enough."""
    fitting = sorted((i for i in rooms if needs[i] <= rooms[i] + 1e-9), key=lambda i: (rooms[i] - needs[i], i))
    return sorted(fitting[:count]) if len(fitting) >= count else None


@dataclass(frozen=True)
class Plan:
    """Admission's answer for one model now."""

    gpus: list[int] | None = None  # it fits: place it on these devices
    victim: Runtime | None = None  # else unload this model to make room (drain it when busy)
    never: str | None = None  # it could never fit here: why


def plan(models: Iterable[Runtime], wanted: Runtime, devices: list[Device], now: float,
         skipped: frozenset[str] = frozenset()) -> Plan:
    """Where ``wanted`` goes now, or what to unload first, or why it never can (module docstring)."""
    models = list(models)
    tp = wanted.entry.engine.tensor_parallel_size
    if tp > len(devices):
        return Plan(never=f"{wanted.entry.id!r} needs {tp} GPUs (tensor_parallel_size {tp}); "
                          f"this host has {len(devices)}")
    needs = {d.index: need_gb(wanted, d) for d in devices}
    rooms = {d.index: room_gb(d, models, wanted) for d in devices}
    fit = best_fit(rooms, needs, tp)
    if fit is not None:
        return Plan(gpus=fit)
    ceilings = {d.index: ceiling_gb(d, models, wanted) for d in devices}
    if best_fit(ceilings, needs, tp) is None:
        return Plan(never=refusal(wanted, devices, models))
    for busy in (False, True):
        # Idle models first; busy ones (drained) only when evicting every idle one is not enough.
        candidates = [v for v in victims(models, wanted, now) if v.entry.id not in skipped]
        if busy:
            candidates += [v for v in victims(models, wanted, now, busy=True) if v.entry.id not in skipped]
        freed = {i: rooms[i] + sum(v.placement.per_device_gb for v in candidates if on(v, i)) for i in rooms}
        target = best_fit(freed, needs, tp)
        if target is None:
            continue
        helpful = sorted((v for v in candidates if any(on(v, i) for i in target)), key=lambda v: (v.busy(), value(v, now)))
        if helpful:
            return Plan(victim=helpful[0])
    return Plan()  # the memory is held by loads in progress, drains, or other processes: wait


def refusal(wanted: Runtime, devices: list[Device], models: Iterable[Runtime]) -> str:
    """Why ``wanted`` cannot be loaded, naming what holds the memory."""
    models = list(models)
    holders = [r.entry.id for r in models if r is not wanted and booked(r)]
    tp = wanted.entry.engine.tensor_parallel_size
    if len(devices) == 1 and devices[0].name == "cpu":
        device = devices[0]
        where = (f"needs {need_gb(wanted, device):.1f} GB, {max(room_gb(device, models, wanted), 0):.1f} GB free "
                 f"of {device.total_gb:.1f} GB")
    else:
        per = ", ".join(f"GPU {d.index}: {max(room_gb(d, models, wanted), 0):.1f} GB free of {d.total_gb:.1f} GB"
                        for d in devices)
        span = "one GPU" if tp == 1 else f"each of {tp} GPUs"
        where = f"needs {need_gb(wanted, devices[0] if devices else None):.1f} GB on {span}; {per}"
    return f"not enough memory for {wanted.entry.id!r}: {where}; loaded and busy or pinned: {', '.join(holders) or 'none'}"
