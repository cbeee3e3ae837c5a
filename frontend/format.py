"""Jinja filters that turn API numbers into what a person reads (sizes, rates, ages, times)."""

from __future__ import annotations

import time
from datetime import datetime

from flask import Flask

STATE_CLASSES = {"ready": "ok", "loading": "busy", "restarting": "warn", "unloading": "busy", "downloading": "busy", "running": "busy", "queued": "busy",
                 "failed": "bad", "not_downloaded": "warn", "unknown": "muted", "unloaded": "muted",
                 "completed": "ok", "cancelled": "muted", "fits": "ok", "tight": "warn", "does not fit": "bad",
                 "RUNNING": "ok", "HEALTHY": "ok", "DEPLOYING": "busy", "UNHEALTHY": "bad", "DEPLOY_FAILED": "bad"}


def size(n: float | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def gb(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} GB"


def rate(bps: float | None) -> str:
    return "—" if not bps else f"{size(bps)}/s"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def ago(timestamp: float | None) -> str:
    if not timestamp:
        return "never"
    return f"{duration(max(0.0, time.time() - timestamp))} ago"


def when(value: float | str | None) -> str:
    """A Unix time or ISO string as local 'YYYY-MM-DD HH:MM:SS'."""
    if value in (None, ""):
        return "—"
    try:
        moment = datetime.fromtimestamp(float(value))
    except (TypeError, ValueError):
        try:
            moment = datetime.fromisoformat(str(value)).astimezone()
        except ValueError:
            return str(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def count(n: int | None) -> str:
    if n is None:
        return "—"
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def state_class(state: str | None) -> str:
    return STATE_CLASSES.get(state or "", "muted")


def now_text() -> str:
    return datetime.now().strftime("%H:%M:%S")


def install(app: Flask) -> None:
    for fn in (size, gb, rate, duration, ago, when, count, state_class):
        app.add_template_filter(fn)
    app.add_template_global(now_text)
