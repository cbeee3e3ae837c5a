"""Hub: search Hugging Face (through the API), each result with its size and whether it fits this
host (fits / tight / does not fit, with a suggested tensor-parallel size); download a result."""

from __future__ import annotations

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from frontend.api_client import ApiError

bp = Blueprint("hub", __name__, url_prefix="/hub")
TASKS = ("text-generation", "feature-extraction", "sentence-similarity", "image-text-to-text")
SORTS = ("downloads", "likes", "trending", "lastModified")


@bp.get("")
def index():
    args = request.args
    query = {"q": args.get("q", "").strip()[:200], "task": args.get("task", "") if args.get("task") in TASKS else "",
             "sort": args.get("sort") if args.get("sort") in SORTS else "downloads",
             "fits": "true" if args.get("fits") else "false", "limit": 20}
    result, error = None, None
    try:
        result = g.api.get("/api/hub/search", **query)
    except ApiError as exc:
        if exc.status == 401:
            raise
        error = exc.message
    return render_template("hub/index.html", query=query, result=result, error=error, tasks=TASKS, sorts=SORTS)


@bp.post("/download")
def download():
    """Start downloading a repo; the downloads page shows its progress."""
    repo_id = request.form.get("repo_id", "").strip()
    try:
        record = g.api.post("/api/downloads", json={"repo_id": repo_id, "revision": request.form.get("revision") or "main"})
    except ApiError as exc:
        if exc.status == 401:
            raise
        flash(f"Could not download {repo_id}: {exc.message}", "error")
        return redirect(request.referrer or url_for("hub.index"))
    flash(f"Download of {repo_id} {'started' if record.get('state') != 'completed' else 'is already complete'}.", "info")
    return redirect(url_for("downloads.index"))
