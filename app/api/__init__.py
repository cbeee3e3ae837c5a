"""The management API (FastAPI on :8001): registry, serving control, GPU, hub, downloads, events."""
