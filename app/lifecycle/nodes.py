"""The manager's side of the cluster: nodes lost, nodes leaving, and the per-node picture.

Part of the model manager (``ModelManager`` mixes this in). The probe (app/cluster/memory.py)
reports the box's nodes as Ray sees them; a single-box probe (app/gpu/memory.py) has no
``nodes`` and nothing here applies. A model whose node is lost (Ray marked it dead, or it came
back under a new Ray id) goes UNLOADED at once with the reason: its engine went with the node, so
there is nothing to unload; the next request loads it wherever admission finds room. A node that
is leaving (``./start.sh leave`` on it) gets no new placements and its models are unloaded.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.lifecycle import admission
from app.lifecycle.runtime import Runtime
from app.lifecycle.states import State

log = logging.getLogger("llmbox.manager")
LEAVE_DRAIN_S = 60.0  # a leaving node's busy models get this long for their requests to end


class Nodes:
    def _read_nodes(self) -> list | None:
        """The box's nodes now, or None for a single-box probe."""
        read = getattr(self.memory, "nodes", None)
        return read() if read is not None else None

    async def check_nodes(self) -> None:
        """Every READY model on a node that is gone: UNLOADED with the reason (event ``node_lost``)."""
        found = await asyncio.to_thread(self._read_nodes)
        if found is None:
            return
        live = {n.name: n.node_id for n in found if n.alive}
        dead = {n.name: n.death for n in found if not n.alive}
        lost = {name: dead.get(name, "") for name, node_id in self._node_ids.items() if live.get(name) != node_id}
        self._node_ids = dict(live)
        self.leaving -= set(lost)  # a node that left and joins again is a new node
        for rt in list(self.models.values()):
            node = rt.placement.node if rt.placement is not None else ""
            if node and (node in lost or node not in live) and rt.state == State.READY and not rt.lock.locked():
                self._node_lost(rt, node, lost.get(node) or dead.get(node, ""))

    def _node_lost(self, rt: Runtime, node: str, why: str) -> None:
        reason = f"its node {node} was lost{f' ({why})' if why else ''}"
        log.warning("%s: %s", rt.entry.id, reason)
        rt.last_error = reason
        self._set(rt, State.UNLOADED)
        rt.tickets.clear()  # the requests in flight went with the node (the routers end their streams)
        rt.processes = []
        self.counters.count(self.counters.unloads, (rt.entry.id, "node_lost"))
        self._event("node_lost", rt, node=node, detail=why)
        self._spawn(self._forget_app(rt), "node_lost")
        if rt.entry.always_on and rt.entry.serve:
            self._start_load(rt)  # wherever there is room now (queued behind the app's deletion)

    async def _forget_app(self, rt: Runtime) -> None:
        """Close the routers' fast path and delete the app Serve still lists (a reload waits for it)."""
        async with rt.lock:
            await self._revoke(rt)
            await asyncio.to_thread(self.apps.delete, rt.entry.id)

    async def leave(self, node: str) -> dict[str, Any]:
        """``node`` is leaving the cluster: no new placements there; its models are unloaded (busy ones
        drained first). Returns what was unloaded; the caller stops the node's Ray afterwards."""
        await self._ready()
        self.leaving.add(node)
        self._event("node_leaving", None, node=node)
        moved = []
        for rt in list(self.models.values()):
            if rt.placement is not None and rt.placement.node == node and rt.state in admission.HELD + admission.COMING:
                until = self.clock() + LEAVE_DRAIN_S if rt.busy() else None
                await self._unload(rt, "node_leaving", drain_until=until)
                if rt.state == State.READY:  # drained past the deadline: cut off
                    await self._unload(rt, "manual")
                moved.append(rt.entry.id)
                if rt.entry.always_on and rt.entry.serve:
                    self._start_load(rt)
        await self._pushed()
        return {"node": node, "unloaded": moved}

    async def nodes(self) -> list[dict[str, Any]]:
        """Each node with its devices, what is booked there, and its models (for /api/cluster and the UI)."""
        await self._ready()
        found = await asyncio.to_thread(self._read_nodes) or []
        devices = await asyncio.to_thread(self.memory.devices)
        models = list(self.models.values())
        shown = []
        for node in found or [None]:
            name = node.name if node is not None else ""
            mine = [d for d in devices if d.node == name]
            shown.append({
                "name": name or "local", "address": node.address if node else "127.0.0.1",
                "head": node.head if node else True, "alive": node.alive if node else True,
                "leaving": name in self.leaving, "death": node.death if node else "",
                "devices": [self._ledger_row(d, models) for d in mine],
                "models": sorted(r.entry.id for r in models if r.placement is not None and r.placement.node == name
                                 and admission.booked(r)),
            })
        return shown

    @staticmethod
    def _ledger_row(d, models: list[Runtime]) -> dict[str, Any]:
        return {"node": d.node, "index": d.index, "name": d.name, "total_gb": round(d.total_gb, 2),
                "free_gb": round(d.free_gb, 2), "booked_gb": round(admission.booked_gb(models, d), 2),
                "room_gb": round(max(admission.room_gb(d, models), 0.0), 2),
                "models": [{"id": r.entry.id, "state": r.state.value, "budget_gb": round(r.placement.per_device_gb, 2)}
                           for r in models if admission.booked(r) and admission.on(r, d)]}
