"""Admission: where a model goes, and which models make room for it (pure functions).

The ledger is per node and device (each GPU of each node; a CPU node's memory budget is one
device): a device is named by its node and its index there. A model's need
per device is, first found: its footprint measured after its last load, the registry's
``memory_gb`` (split over its ``tensor_parallel_size``), its ``gpu_memory_utilization`` x the
GPU's total, its budget estimated from its files (app/gpu/footprint.py), else DEFAULT_NEED_GB.
Admission books that need on the devices it chooses (``Runtime.placement``) and the engine is
told exactly that much (app/engines/llm_config.py).

A device's room is the lesser of what it has free now (NVML) less what admitted loads will
still take, and its total less everything booked on it: NVML sees only what an engine has
allocated so far, and a CPU budget sees nothing of a load in progress, so without the booking
two concurrent loads would both be admitted against the same free memory.

A model goes on the devices with room, on any node it may run on (its ``nodes`` pin, if any),
the fullest that still fit first (best fit: the emptier GPUs and nodes stay free for bigger
models); a model with ``tensor_parallel_size: N`` on N distinct devices of one node. Only when no
node has room, idle unpinned models on one node's devices that would then fit are evicted, least
valuable first (the node whose least valuable helpful victim is worth least); if that is not
enough, the least valuable busy one is drained (new requests wait for its reload, the ones in
flight finish, then it is evicted) and the load waits. It is refused at once only when it could
never fit (no node with N devices whose total less what pinned models book there holds its
need), else at its load deadline.
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


def on(rt: Runtime, device: Device) -> bool:
    """It is placed on this device (of this node)."""
    return rt.placement is not None and rt.placement.node == device.node and device.index in rt.placement.gpus


def booked(rt: Runtime) -> bool:
    """Its placement counts against its devices: it holds memory, or it is admitted and loading."""
    return rt.placement is not None and (rt.state in HELD or (rt.state in COMING and rt.admitted))


def booked_gb(models: Iterable[Runtime], device: Device, exclude: Runtime | None = None) -> float:
    return sum(r.placement.per_device_gb for r in models if r is not exclude and booked(r) and on(r, device))


def coming_gb(models: Iterable[Runtime], device: Device, exclude: Runtime | None = None) -> float:
    """What admitted loads on this device will still take (NVML does not see it yet)."""
    return sum(r.placement.per_device_gb for r in models
               if r is not exclude and r.state in COMING and r.admitted and on(r, device))


def room_gb(device: Device, models: Iterable[Runtime], exclude: Runtime | None = None) -> float:
    """What a new model may take on this device now (see the module docstring)."""
    models = list(models)
    return min(device.free_gb - coming_gb(models, device, exclude),
               device.total_gb - booked_gb(models, device, exclude))


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
                                 if r is not wanted and r.entry.always_on and booked(r) and on(r, device))


Key = tuple[str, int]  # a device: its node's name, its index there


def key(device: Device) -> Key:
    return device.node, device.index


def best_fit(rooms: dict[Key, float], needs: dict[Key, float], count: int) -> tuple[str, list[int]] | None:
    """``count`` devices of one node whose room holds the need, the fullest first (the node whose
    chosen devices are left with least room); None if no node has enough."""
    chosen: list[tuple[float, str, list[int]]] = []
    for node in sorted({n for n, _ in rooms}):
        fitting = sorted((k for k in rooms if k[0] == node and needs[k] <= rooms[k] + 1e-9),
                         key=lambda k: (rooms[k] - needs[k], k))[:count]
        if len(fitting) == count:
            chosen.append((sum(rooms[k] - needs[k] for k in fitting), node, sorted(i for _, i in fitting)))
    if not chosen:
        return None
    _, node, indices = min(chosen, key=lambda c: (c[0], c[1]))
    return node, indices


def allowed(wanted: Runtime, device: Device) -> bool:
    """The model may run on this device's node (its ``nodes`` pin; a single box's node is "")."""
    pins = wanted.entry.nodes
    return not pins or not device.node or device.node in pins


@dataclass(frozen=True)
class Plan:
    """Admission's answer for one model now."""

    gpus: list[int] | None = None  # it fits: place it on these devices ...
    node: str = ""  # ... of this node
    victim: Runtime | None = None  # else unload this model to make room (drain it when busy)
    never: str | None = None  # it could never fit here: why


def plan(models: Iterable[Runtime], wanted: Runtime, devices: list[Device], now: float,
         skipped: frozenset[str] = frozenset()) -> Plan:
    """Where ``wanted`` goes now, or what to unload first, or why it never can (module docstring)."""
    models = list(models)
    tp = wanted.entry.engine.tensor_parallel_size
    devices = [d for d in devices if allowed(wanted, d)]
    if not devices:
        return Plan(never=f"{wanted.entry.id!r} is pinned to nodes {', '.join(wanted.entry.nodes)}: none of them "
                          "is in the cluster now")
    per_node = {n: sum(1 for d in devices if d.node == n) for n in {d.node for d in devices}}
    if tp > max(per_node.values()):
        where = "this host has" if len(per_node) == 1 else "the largest node has"
        return Plan(never=f"{wanted.entry.id!r} needs {tp} GPUs (tensor_parallel_size {tp}) on one node; "
                          f"{where} {max(per_node.values())}")
    needs = {key(d): need_gb(wanted, d) for d in devices}
    rooms = {key(d): room_gb(d, models, wanted) for d in devices}
    fit = best_fit(rooms, needs, tp)
    if fit is not None:
        return Plan(gpus=fit[1], node=fit[0])
    ceilings = {key(d): ceiling_gb(d, models, wanted) for d in devices}
    if best_fit(ceilings, needs, tp) is None:
        return Plan(never=refusal(wanted, devices, models))
    for busy in (False, True):
        # Idle models first; busy ones (drained) only when evicting every idle one is not enough.
        candidates = [v for v in victims(models, wanted, now) if v.entry.id not in skipped]
        if busy:
            candidates += [v for v in victims(models, wanted, now, busy=True) if v.entry.id not in skipped]
        best: tuple | None = None
        for node in sorted(per_node):  # evict on one node only: the one where it costs least
            mine = [d for d in devices if d.node == node]
            freed = {key(d): rooms[key(d)] + sum(v.placement.per_device_gb for v in candidates if on(v, d))
                     for d in mine}
            target = best_fit(freed, needs, tp)
            if target is None:
                continue
            targets = [d for d in mine if d.index in target[1]]
            helpful = sorted((v for v in candidates if any(on(v, d) for d in targets)),
                             key=lambda v: (v.busy(), value(v, now)))
            if helpful and (best is None or (helpful[0].busy(), value(helpful[0], now)) < best[0]):
                best = ((helpful[0].busy(), value(helpful[0], now)), helpful[0])
        if best is not None:
            return Plan(victim=best[1])
    return Plan()  # the memory is held by loads in progress, drains, or other processes: wait


def refusal(wanted: Runtime, devices: list[Device], models: Iterable[Runtime]) -> str:
    """Why ``wanted`` cannot be loaded, naming what holds the memory."""
    models = list(models)
    holders = [r.entry.id for r in models if r is not wanted and booked(r)]
    tp = wanted.entry.engine.tensor_parallel_size
    nodes = len({d.node for d in devices}) > 1
    if all(d.name == "cpu" for d in devices) and not nodes:
        device = devices[0]
        where = (f"needs {need_gb(wanted, device):.1f} GB, {max(room_gb(device, models, wanted), 0):.1f} GB free "
                 f"of {device.total_gb:.1f} GB")
    elif all(d.name == "cpu" for d in devices):
        per = ", ".join(f"node {d.node}: {max(room_gb(d, models, wanted), 0):.1f} GB free of {d.total_gb:.1f} GB"
                        for d in devices)
        where = f"needs {need_gb(wanted, devices[0]):.1f} GB on one node; {per}"
    else:
        per = ", ".join(f"{'node ' + d.node + ' ' if nodes else ''}GPU {d.index}: "
                        f"{max(room_gb(d, models, wanted), 0):.1f} GB free of {d.total_gb:.1f} GB" for d in devices)
        span = "one GPU" if tp == 1 else f"each of {tp} GPUs"
        where = f"needs {need_gb(wanted, devices[0] if devices else None):.1f} GB on {span}; {per}"
    return f"not enough memory for {wanted.entry.id!r}: {where}; loaded and busy or pinned: {', '.join(holders) or 'none'}"
