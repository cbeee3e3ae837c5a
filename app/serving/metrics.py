"""Prometheus text for /metrics, rendered from the model manager's snapshot."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from app.lifecycle.states import State

GIB = 1024**3


class _Snapshot:
    """A one-shot collector over one manager snapshot."""

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self):
        models = self.snapshot["models"]
        state = GaugeMetricFamily("llmbox_model_state", "1 for the state each model is in", labels=["model", "state"])
        in_flight = GaugeMetricFamily("llmbox_requests_in_flight", "Requests in flight per model", labels=["model"])
        memory = GaugeMetricFamily("llmbox_model_memory_bytes", "Measured (else estimated) memory per model",
                                   labels=["model", "measured"])
        budget = GaugeMetricFamily("llmbox_model_budget_bytes", "Memory booked for a loaded model on each device",
                                   labels=["model", "device"])
        for m in models:
            for index in m.get("gpus") or []:
                budget.add_metric([m["id"], str(index)], (m.get("budget_gb") or 0.0) * GIB)
            for s in State:
                state.add_metric([m["id"], s.value], 1.0 if m["state"] == s.value else 0.0)
            in_flight.add_metric([m["id"]], m["in_flight"])
            if m["memory_gb"] is not None:
                memory.add_metric([m["id"], str(m["memory_measured"]).lower()], m["memory_gb"] * GIB)
        loads = CounterMetricFamily("llmbox_model_loads", "Model loads by result", labels=["model", "result"])
        for model, result, n in self.snapshot["loads"]:
            loads.add_metric([model, result], n)
        unloads = CounterMetricFamily("llmbox_model_unloads", "Model unloads by reason (idle, evicted, manual, "
                                      "failed, reconcile)", labels=["model", "reason"])
        for model, reason, n in self.snapshot["unloads"]:
            unloads.add_metric([model, reason], n)
        load_s = SummaryMetricFamily("llmbox_model_load_seconds", "Time from load start to ready", labels=["model"])
        for model, (total, count) in self.snapshot["load_seconds"].items():
            load_s.add_metric([model], count_value=count, sum_value=total)
        wait_s = SummaryMetricFamily("llmbox_queue_wait_seconds", "Time requests waited for their model to load",
                                     labels=["model"])
        for model, (total, count) in self.snapshot["queue_wait_seconds"].items():
            wait_s.add_metric([model], count_value=count, sum_value=total)
        crashes = CounterMetricFamily("llmbox_engine_crashes", "Engine (or replica) crashes of a ready model",
                                      labels=["model"])
        for model, n in self.snapshot["crashes"].items():
            crashes.add_metric([model], n)
        loop_errors = CounterMetricFamily("llmbox_background_errors", "Ticks of the manager's background loops "
                                          "(reaper, watchdog) and tasks that raised", labels=["loop"])
        for loop, n in self.snapshot["loop_errors"].items():
            loop_errors.add_metric([loop], n)
        yield from (state, in_flight, memory, budget, loads, unloads, load_s, wait_s, crashes, loop_errors)


def render(snapshot: dict[str, Any]) -> bytes:
    """Prometheus exposition text for a manager metrics snapshot."""
    registry = CollectorRegistry()
    registry.register(_Snapshot(snapshot))
    return generate_latest(registry)
