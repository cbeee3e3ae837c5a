"""/metrics renders the manager's snapshot as Prometheus text."""

from prometheus_client.parser import text_string_to_metric_families

from app.serving.metrics import render

SNAPSHOT = {
    "models": [
        {"id": "c", "state": "restarting", "in_flight": 1, "memory_gb": 2.0, "memory_measured": True},
        {"id": "a", "state": "ready", "in_flight": 2, "memory_gb": 2.0, "memory_measured": True},
        {"id": "b", "state": "unloaded", "in_flight": 0, "memory_gb": None, "memory_measured": False},
    ],
    "loads": [["a", "ok", 3], ["b", "failed", 1]],
    "unloads": [["a", "idle", 2], ["a", "evicted", 1]],
    "load_seconds": {"a": [90.0, 3]},
    "queue_wait_seconds": {"a": [12.5, 5]},
    "crashes": {"a": 2},
    "loop_errors": {"reaper": 1},
}


def samples():
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(render(SNAPSHOT).decode()) for s in family.samples}


def test_state_in_flight_memory_loads_unloads_and_durations():
    got = samples()
    assert got[("llmbox_model_state", (("model", "a"), ("state", "ready")))] == 1
    assert got[("llmbox_model_state", (("model", "b"), ("state", "ready")))] == 0
    assert got[("llmbox_requests_in_flight", (("model", "a"),))] == 2
    assert got[("llmbox_model_memory_bytes", (("measured", "true"), ("model", "a")))] == 2 * 1024**3
    assert not [k for k in got if k[0] == "llmbox_model_memory_bytes" and ("model", "b") in k[1]]
    assert got[("llmbox_model_loads_total", (("model", "b"), ("result", "failed")))] == 1
    assert got[("llmbox_model_unloads_total", (("model", "a"), ("reason", "evicted")))] == 1
    assert got[("llmbox_model_load_seconds_sum", (("model", "a"),))] == 90.0
    assert got[("llmbox_queue_wait_seconds_count", (("model", "a"),))] == 5
    assert got[("llmbox_model_state", (("model", "c"), ("state", "restarting")))] == 1
    assert got[("llmbox_engine_crashes_total", (("model", "a"),))] == 2
    assert got[("llmbox_background_errors_total", (("loop", "reaper"),))] == 1
