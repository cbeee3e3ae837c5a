"""Login with a management API token, the server-side session store, and CSRF protection.

The browser's cookie (signed, HttpOnly, SameSite=Lax) holds only a random session id and the
CSRF token; the API token stays in this process's memory (``Logins``), so a copied cookie does
not reveal it and logging out really ends the session. A restart of the UI logs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import (Blueprint, abort, current_app, flash, g, redirect, render_template, request, session,
                   url_for)

from frontend.api_client import ApiClient, ApiError

bp = Blueprint("auth", __name__)
PUBLIC_ENDPOINTS = {"auth.login", "static", "health"}
IDLE_TIMEOUT_S = 8 * 3600


@dataclass
class Login:
    token: str
    name: str
    scope: str
    last_seen: float

    @property
    def can_write(self) -> bool:
        return self.scope == "admin"


class Logins:
    """Who is logged in: session id -> token, name and scope (expires after ``idle_s`` unused)."""

    def __init__(self, idle_s: float = IDLE_TIMEOUT_S) -> None:
        self.idle_s, self._by_id, self._lock = idle_s, {}, threading.Lock()

    def add(self, token: str, name: str, scope: str) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._by_id[sid] = Login(token, name, scope, time.monotonic())
        return sid

    def get(self, sid: str | None) -> Login | None:
        now = time.monotonic()
        with self._lock:
            for stale in [k for k, v in self._by_id.items() if now - v.last_seen > self.idle_s]:
                del self._by_id[stale]
            login = self._by_id.get(sid) if sid else None
            if login:
                login.last_seen = now
            return login

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid, None)


def logins() -> Logins:
    return current_app.extensions["llmbox_logins"]


def csrf_token() -> str:
    """The session's CSRF token (every form sends it back as ``csrf_token``)."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def is_fragment() -> bool:
    """A request from the page's own script (live refresh), answered with HTML pieces, not pages."""
    return request.headers.get("X-Requested-With") == "llmbox-ui"


def check_request() -> object:
    """Before every request: CSRF on every POST, then the login (``g.user``, ``g.api``)."""
    if request.method == "POST":
        sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
        expected = session.get("csrf") or ""
        if not expected or not hmac.compare_digest(sent, expected):
            abort(400, "This form has expired or did not come from this site: reload the page and try again.")
    g.user = logins().get(session.get("sid"))
    g.api = ApiClient(current_app.extensions["llmbox_api"], g.user.token if g.user else None)
    if g.user is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if is_fragment():
            return "Your session has ended: log in again.", 401
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return None


def safe_next(target: str | None, default: str | None = None) -> str:
    """Only paths on this site (no open redirects)."""
    if target and request.host_url and target.startswith(request.host_url):
        target = "/" + target[len(request.host_url):]
    # Browsers drop TAB, CR and LF inside a URL ("/\t/evil.com" becomes "//evil.com"): refuse any
    # control character, then ask urllib that nothing names another site.
    if target and target.startswith("/") and not any(ord(c) < 0x20 or ord(c) == 0x7f for c in target):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and not target.startswith("//") and "\\" not in target:
            return target
    return default or url_for("dashboard.index")


@bp.route("/login", methods=("GET", "POST"))
def login():
    """Paste an API token; the API says whose it is (GET /api/whoami)."""
    next_url = safe_next(request.values.get("next"))
    if request.method == "POST":
        token = request.form.get("token", "").strip()
        if not token:
            flash("Paste a management API token.", "error")
        else:
            try:
                who = ApiClient(current_app.extensions["llmbox_api"], token).get("/api/whoami")
            except ApiError as exc:
                message = "That token is not accepted" if exc.status == 401 else "Could not log in"
                flash(f"{message}: {exc.message}", "error")
            else:
                logins().drop(session.get("sid"))
                session.clear()  # a new session id and CSRF token: nothing carried over from before login
                session["sid"] = logins().add(token, who["name"], who["scope"])
                csrf_token()
                session.permanent = True
                return redirect(next_url)
    return render_template("auth/login.html", next=next_url), 200 if request.method == "GET" else 401


@bp.post("/logout")
def logout():
    logins().drop(session.get("sid"))
    session.clear()
    flash("Logged out.", "info")
    return redirect(url_for("auth.login"))
