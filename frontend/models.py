"""Models: the registry's models with add / edit / delete, serve and always-on toggles, and the
registry revision every change is based on. A change made on a stale revision is refused by the
API (409); the page says so, keeps what the person typed, and offers a reload."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from frontend.api_client import ApiError, seg
from frontend.model_form import changes, entry_from_form, form_from_entry

bp = Blueprint("models", __name__, url_prefix="/models")


def conflict_message(exc: ApiError) -> str:
    return (f"Someone else changed the registry (now revision {exc.current_revision}). "
            "Reload to see their change; your edit was not applied.")


def flash_write_error(exc: ApiError, failed: str) -> None:
    """Show why a registry write failed: the conflict message, or ``failed`` + the API's message.
    A 401 (the token was revoked) is re-raised so the login handler logs the user out."""
    if exc.status == 401:
        raise exc
    if exc.conflict:
        flash(conflict_message(exc), "conflict")
    else:
        flash(f"{failed}: {exc.message}", "error")


def saved_message(result: dict, what: str) -> str:
    applied = result.get("applied") or {}
    text = f"{what}: saved as registry revision {result['revision']}"
    text += " and applied." if applied.get("ok") else f"; not applied yet ({applied.get('reason')})."
    for d in result.get("downloads") or []:
        text += f" Download of {d.get('repo_id')}: {d.get('state')}."
    return text


@bp.get("")
def index():
    return render_template("models/index.html", data=g.api.get("/api/models"))


@bp.route("/new", methods=("GET", "POST"))
def new():
    if request.method == "GET":
        return _form(None, {"task": "generate", "serve": True, "engine_dtype": "auto", "engine_extra_args": "{}", "engine_env": "{}"},
                     g.api.get("/api/registry")["revision"])
    entry, errors = entry_from_form(request.form)
    return _save(None, errors, lambda base: g.api.post("/api/models", json=entry, revision=base), entry["id"])


@bp.route("/<model_id>/edit", methods=("GET", "POST"))
def edit(model_id: str):
    current, revision = g.api.get_versioned(f"/api/models/{seg(model_id)}")
    if request.method == "GET":
        return _form(model_id, form_from_entry(current), revision)
    wanted, errors = entry_from_form(request.form)
    diff = changes(current, wanted)
    if not errors and not diff:
        flash(f"{model_id}: nothing changed.", "info")
        return redirect(url_for("models.index"))
    return _save(model_id, errors, lambda base: g.api.patch(f"/api/models/{seg(model_id)}", json=diff, revision=base),
                 model_id)


def _form(model_id: str | None, values: dict, base: int, conflict: str | None = None, status: int = 200):
    return render_template("models/form.html", model_id=model_id, values=values, base=base,
                           conflict=conflict), status


def _save(model_id: str | None, errors: list[str], write, name: str):
    """Write at the form's base revision; on any refusal show the form again with the person's input."""
    base = int(request.form.get("base_revision", "0"))
    values = request.form.to_dict()
    for message in errors:
        flash(message, "error")
    if errors:
        return _form(model_id, values, base, status=400)
    try:
        result = write(base)
    except ApiError as exc:
        if exc.status == 401:
            raise
        if exc.conflict:
            return _form(model_id, values, base, conflict=conflict_message(exc), status=409)
        flash(f"Not saved: {exc.message}", "error")
        return _form(model_id, values, base, status=exc.status if 400 <= exc.status < 500 else 502)
    flash(saved_message(result, name), "info")
    return redirect(url_for("models.index"))


@bp.post("/<model_id>/toggle")
def toggle(model_id: str):
    """Turn serve or always_on on or off (one field, at the revision the list showed)."""
    field, value = request.form.get("field"), request.form.get("value") == "on"
    if field not in ("serve", "always_on"):
        flash(f"Cannot toggle {field!r}.", "error")
        return redirect(url_for("models.index"))
    what = f"{model_id}: {field.replace('_', '-')} {'on' if value else 'off'}"
    return _write(what, lambda base: g.api.patch(f"/api/models/{seg(model_id)}", json={field: value}, revision=base))


@bp.post("/<model_id>/delete")
def delete(model_id: str):
    return _write(f"{model_id}: removed", lambda base: g.api.delete(f"/api/models/{seg(model_id)}", revision=base))


def _write(what: str, write):
    try:
        result = write(int(request.form.get("base_revision", "0")))
    except ApiError as exc:
        if exc.status == 401:
            raise
        flash(f"{conflict_message(exc)} (Your change — {what} — is shown here so you can make it again.)"
              if exc.conflict else f"Not changed ({what}): {exc.message}", "conflict" if exc.conflict else "error")
    else:
        flash(saved_message(result, what), "info")
    return redirect(url_for("models.index"))
