"""llmbox admin UI (Flask): ``create_app(test_config=None)``; run it with ``python -m frontend``.

It talks to the management API only (``frontend.api_client``); one blueprint per screen.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Flask, current_app, flash, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from app.web import hosts
from frontend import auth, dashboard, downloads, events, format, history, hub, models
from frontend.api_client import ApiError, new_pool

log = logging.getLogger("llmbox.ui")
MAX_BODY_BYTES = 1024 * 1024  # the UI's forms are small; waitress alone would take 1 GiB, spooled to disk
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


def create_app(test_config: dict | None = None) -> Flask:
    """The UI for ``test_config`` (needs ``API_URL`` and ``SECRET_KEY``; ``API_TRANSPORT``, an httpx
    transport, replaces HTTP to the API), else for llmbox's settings."""
    app = Flask(__name__)
    app.config.from_mapping(
        SESSION_COOKIE_NAME="llmbox_ui", SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=auth.IDLE_TIMEOUT_S), REFRESH_MS=3000,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES, MAX_FORM_MEMORY_SIZE=MAX_BODY_BYTES,
    )
    if test_config is None:
        from app.settings import get_settings
        from frontend.config import from_settings

        app.config.from_mapping(from_settings(get_settings()))
    else:
        app.config.from_mapping(test_config)
    app.config.setdefault("ALLOWED_HOSTS", frozenset())
    app.extensions["llmbox_api"] = new_pool(app.config["API_URL"], app.config.get("API_TRANSPORT"))
    app.extensions["llmbox_logins"] = auth.Logins()

    app.before_request(_check_host)
    app.before_request(auth.check_request)
    app.after_request(_headers)
    app.jinja_env.globals.update(csrf_token=auth.csrf_token)
    format.install(app)
    for module in (auth, dashboard, models, history, hub, downloads, events):
        app.register_blueprint(module.bp)
    _errors(app)

    @app.get("/healthz")
    def health():
        """Liveness for start.sh (no login, no API call)."""
        return {"status": "ok"}

    return app


def _check_host():
    """Only Host names this box answers (app/web/hosts.py): a rebinding page gets 421, before login."""
    header = request.headers.get("Host")
    if header is None or not hosts.is_allowed(header, current_app.config["ALLOWED_HOSTS"]):
        status, payload = hosts.refusal(header)
        return payload["error"]["message"], status, {"Content-Type": "text/plain; charset=utf-8"}
    return None


def _headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"  # no stale admin pages from the back button
    return response


def _errors(app: Flask) -> None:
    """Every failure is a page with a message a person can act on; traces go to the log only."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        if exc.status == 401 and g.get("user"):
            auth.logins().drop(session.get("sid"))
            session.clear()
            flash(f"The management API no longer accepts your token ({exc.message}): log in again.", "error")
            return redirect(url_for("auth.login"))
        status = exc.status if 400 <= exc.status < 500 else 502
        return _page(status, "The management API refused this", exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        titles = {400: "Bad request", 404: "Not found", 405: "Not allowed"}
        return _page(exc.code or 500, titles.get(exc.code, exc.name), exc.description)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _page(500, "Something went wrong", f"The admin UI hit an internal error ({type(exc).__name__}); "
                     "the details are in its log.")


def _page(status: int, title: str, message: str):
    if auth.is_fragment():
        return render_template("_error_fragment.html", title=title, message=message), status
    return render_template("error.html", title=title, message=message, status=status), status
