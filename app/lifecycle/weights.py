"""Are a model's weights here? Hugging Face models are served from finished downloads only.

While a repo's download has not finished the model is shown as ``downloading`` (with the
download's progress) or ``not_downloaded``, and no load starts (download time never counts
against a load deadline; a partial download is never loaded).
"""

from __future__ import annotations

from pathlib import Path

from app.engines.sources import NotDownloaded, is_hub, resolve
from app.hub.downloads import progress
from app.lifecycle.runtime import Runtime


def check(rt: Runtime, models_dir: Path, state_dir: Path | str) -> None:
    """Note whether the model's weights are servable now; while not, attach its download's progress."""
    rt.missing = rt.download = None
    if not is_hub(rt.entry):
        return  # local folders: a missing one is a load failure with the path in the reason
    try:
        resolve(rt.entry, models_dir)
    except NotDownloaded as exc:
        rt.missing = str(exc)
        rt.download = progress(Path(state_dir), rt.entry.source, rt.entry.revision)
