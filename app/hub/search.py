"""Search the hub for models, each result with its fit estimate for this host.

One ``list_models`` call finds the models; then each result's metadata (model_info and
config.json) is read concurrently by a small thread pool, since those reads are network-bound.
A result whose metadata cannot be read gets verdict ``unknown`` with the reason; search never
fails because of one repo.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from huggingface_hub import HfApi

from app.hub import fit
from app.hub.errors import HubError, translate

# Our sort names -> what list_models accepts. The hub sorts descending (most downloaded first).
SORTS = {"downloads": "downloads", "likes": "likes", "last_modified": "last_modified",
         "lastModified": "last_modified", "trending": "trending_score", "created_at": "created_at"}
EXPAND = ["downloads", "likes", "pipeline_tag", "gated", "lastModified", "tags"]
MAX_LIMIT = 100
WORKERS = 8  # concurrent metadata reads: enough to hide latency, few enough to be polite to the hub


def search(api: HfApi, text: str | None = None, task: str | None = None, sort: str = "downloads", limit: int = 20,
           host: fit.HostMemory | None = None, fits_only: bool = False, measured: dict[str, float] | None = None,
           max_model_len: int | None = None) -> list[dict]:
    """Models matching ``text`` (substring of the id) and ``task`` (pipeline tag), best first by ``sort``.

    Each result: ``{id, downloads, likes, task, gated, last_modified, size_bytes, params, fit}``,
    ``fit`` being fit.estimate_repo's record (``measured`` maps repo ids to GB measured by the box).
    ``fits_only`` keeps verdicts ``fits`` and ``tight`` (up to ``limit`` of them among the first
    ``3 x limit`` matches). Raises ValueError for a bad sort/limit, HubError if the list fails.
    """
    if sort not in SORTS:
        raise ValueError(f"sort {sort!r} is not one of {sorted(SORTS)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit {limit} must be between 1 and {MAX_LIMIT}")
    host = host or fit.HostMemory.detect()
    measured = measured or {}
    wanted = min(3 * limit, MAX_LIMIT) if fits_only else limit
    try:
        models = list(api.list_models(search=text or None, pipeline_tag=task or None, sort=SORTS[sort],
                                      limit=wanted, expand=EXPAND))
    except Exception as exc:  # noqa: BLE001 - reported as a HubError with a readable reason
        raise translate(exc, "the model list") from exc

    def estimate(model) -> dict:
        try:
            return fit.estimate_repo(api, model.id, host=host, measured_gb=measured.get(model.id),
                                     max_model_len=max_model_len)
        except HubError as exc:
            return fit.unknown(model.id, "main", str(exc), host)
        except Exception as exc:  # noqa: BLE001 - a malformed repo must not break the whole search
            return fit.unknown(model.id, "main", f"{type(exc).__name__}: {exc}", host)

    with ThreadPoolExecutor(max_workers=max(1, min(WORKERS, len(models)))) as pool:
        estimates = list(pool.map(estimate, models))
    results = [_result(m, e) for m, e in zip(models, estimates)]
    if fits_only:
        results = [r for r in results if r["fit"]["verdict"] in ("fits", "tight")]
    return results[:limit]


def _result(model, estimate: dict) -> dict:
    return {
        "id": model.id,
        "downloads": model.downloads,
        "likes": model.likes,
        "task": model.pipeline_tag,
        "gated": bool(model.gated),
        "last_modified": model.last_modified.isoformat() if model.last_modified else None,
        "size_bytes": estimate["size_bytes"],
        "params": estimate["params"],
        "fit": estimate,
    }
