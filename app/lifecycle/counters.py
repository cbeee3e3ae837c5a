"""Counters the manager keeps for /metrics (rendered by app/serving/metrics.py)."""

from __future__ import annotations

from typing import Any


class Counters:
    """Prometheus counters and summaries, as plain numbers (snapshots cross Ray as data)."""

    def __init__(self) -> None:
        self.loads: dict[tuple[str, str], int] = {}  # (model, result) -> count
        self.unloads: dict[tuple[str, str], int] = {}  # (model, reason) -> count
        self.crashes: dict[str, int] = {}  # model -> engine crashes
        self.loop_errors: dict[str, int] = {}  # background loop -> ticks that raised
        self.load_seconds: dict[str, list[float]] = {}  # model -> [sum, count]
        self.queue_wait: dict[str, list[float]] = {}  # model -> [sum, count]

    @staticmethod
    def count(table: dict, key) -> None:
        table[key] = table.get(key, 0) + 1

    @staticmethod
    def observe(table: dict, model: str, value: float) -> None:
        total = table.setdefault(model, [0.0, 0])
        total[0] += value
        total[1] += 1

    def public(self) -> dict[str, Any]:
        return {
            "loads": [[m, r, n] for (m, r), n in self.loads.items()],
            "unloads": [[m, r, n] for (m, r), n in self.unloads.items()],
            "crashes": dict(self.crashes),
            "loop_errors": dict(self.loop_errors),
            "load_seconds": dict(self.load_seconds),
            "queue_wait_seconds": dict(self.queue_wait),
        }
