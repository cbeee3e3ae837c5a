"""What loading each model really took: the one owner of ``<state_dir>/measurements.json``.

The manager writes a model's measured footprint and load time after every load; it sizes
admission after a restart of the box, and the management API's fit estimates read it (by repo)
to replace their estimate with the measurement.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("llmbox.manager")


class Measurements:
    """``{model_id: {source, memory_gb, load_s, time}}`` in one JSON file, replaced atomically."""

    def __init__(self, state_dir: Path | str) -> None:
        self.path = Path(state_dir) / "measurements.json"

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, model_id: str, source: str) -> dict[str, Any] | None:
        """The model's last measurement, if it was taken with the same weights."""
        known = self.read().get(model_id)
        return known if known and known.get("source") == source else None

    def remember(self, model_id: str, source: str, memory_gb: float | None, load_s: float | None) -> None:
        data = self.read()
        data[model_id] = {"source": source, "memory_gb": memory_gb, "load_s": load_s, "time": round(time.time(), 1)}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(self.path)
        except OSError as exc:  # a record, not a reason to fail a load
            log.warning("could not save measurements: %s", exc)

    def by_source(self) -> dict[str, float]:
        """Measured memory per weights source (a Hugging Face repo id, a path)."""
        return {row["source"]: row["memory_gb"] for row in self.read().values()
                if isinstance(row, dict) and row.get("memory_gb") and row.get("source")}
